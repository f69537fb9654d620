"""Redis backends against raw redis-py on the same server, in one run, on a loopback redis-server.

    python benchmarks/redis_store.py [--ops 3000] [--keys 1000] [--listing 1000000]

Per operation, the client's CPU time (``time.process_time``: what the
library adds) and the wall time (with the round trip and the server's
work): ``load``/``dump`` against a raw GET/SET on a client with the same
pool, the same for a store with a timeout (its reads check deadlines in a
script), and ``load_many`` of ``--keys`` keys against a raw MGET. Medians
of five rounds, interleaved. ``--listing N`` then writes N keys and lists
them, reporting time, the client's peak memory (tracemalloc) and the
server's memory per key. Needs Debian's ``redis-server``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback servers live with the tests

import redis  # noqa: E402
from servers import redis_server  # noqa: E402

from backends import RedisJsonBackend, RedisRawBackend  # noqa: E402


def per_call(action: Callable[[], object], number: int, timer: Callable[[], float]) -> float:
    """Microseconds per call by ``timer``: the best of three runs of ``number`` calls."""
    return min(timeit.repeat(action, number=number, repeat=3, timer=timer)) / number * 1e6


def listing(url: str, count: int) -> None:
    """Write ``count`` keys in 100 folders, then list them all and by folder."""
    store = RedisRawBackend(url, prefix="bench-listing")
    server = redis.Redis.from_url(url)
    before = int(server.info("memory")["used_memory"])
    started = time.perf_counter()
    batch = 10_000
    for start in range(0, count, batch):
        store.dump_many({f"f{i % 100:02d}/{i:08d}": b"v" for i in range(start, min(count, start + batch))})
    written = time.perf_counter() - started
    per_key = (int(server.info("memory")["used_memory"]) - before) / count
    tracemalloc.start()
    started = time.perf_counter()
    seen = sum(1 for _ in store)
    listed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    folders = list(store.list("", "/"))
    by_folder = time.perf_counter() - started
    tracemalloc.stop()
    assert seen == count == len(store) and len(folders) == 100
    print(
        f"{count:,} keys: written in {written:.1f} s, listed in {listed:.1f} s "
        f"({count / listed:,.0f} keys/s), client peak {peak / 2**20:.1f} MiB; "
        f"100 folders listed in {by_folder * 1000:.1f} ms; server {per_key:.0f} bytes per key"
    )
    store.clear()
    store.close()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--listing", type=int, default=0)
    args = parser.parse_args()
    with redis_server() as url:
        raw = redis.Redis.from_url(url)
        store = RedisRawBackend(url, prefix="bench")
        documents = RedisJsonBackend(url, prefix="bench-json")
        expiring = RedisRawBackend(url, prefix="bench-expiring", timeout=300)
        value = b"x" * 1024
        raw.set("raw", value)
        store["k"] = expiring["k"] = value
        documents["k"] = {"text": "x" * 1000}
        keys = [f"m{i}" for i in range(args.keys)]
        store.dump_many({key: b"v" * 100 for key in keys})
        raw.mset({f"raw/{key}": b"v" * 100 for key in keys})
        bulk = max(1, args.ops // 30)
        pairs = {
            "load 1 KiB": (lambda: store.load("k"), lambda: raw.get("raw"), args.ops),
            "load JSON 1 KiB": (lambda: documents.load("k"), lambda: raw.get("raw"), args.ops),
            "dump 1 KiB": (lambda: store.dump("k", value), lambda: raw.set("raw", value), args.ops),
            "timeout: load": (lambda: expiring.load("k"), lambda: raw.get("raw"), args.ops),
            "timeout: dump": (lambda: expiring.dump("k", value), lambda: raw.set("raw", value), args.ops),
            f"load_many {args.keys}": (
                lambda: store.load_many(keys),
                lambda: raw.mget([f"raw/{key}" for key in keys]),
                bulk,
            ),
        }
        print(f"{'':20s} {'client CPU per call':>33s} {'wall time per call':>33s}")
        print(f"{'operation':20s}" + f" {'backends':>10s} {'redis-py':>10s} {'ratio':>10s}" * 2)
        for name, (ours, theirs, number) in pairs.items():
            row = f"{name:20s}"
            for timer in (time.process_time, time.perf_counter):
                rounds = [(per_call(ours, number, timer), per_call(theirs, number, timer)) for _ in range(5)]
                a = statistics.median(r[0] for r in rounds)
                b = statistics.median(r[1] for r in rounds)
                row += f" {a:8.1f}us {b:8.1f}us {a / b:10.2f}"
            print(row)
        if args.listing:
            listing(url, args.listing)
        store.clear()
        documents.clear()
        expiring.clear()
        expiring.close()
        raw.close()
        store.close()
        documents.close()


if __name__ == "__main__":
    main()
