"""Redis backends against raw redis-py on the same server, in one run, on a loopback redis-server.

    python benchmarks/redis_store.py [--ops 3000] [--keys 1000]

Client time per operation (the server is another process; on loopback the
round trip dominates): ``load``/``dump`` against a raw GET/SET on a client
with the same pool, and ``load_many`` of ``--keys`` keys against a raw MGET.
Medians of five rounds, interleaved. Needs Debian's ``redis-server``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback servers live with the tests

import redis  # noqa: E402
from servers import redis_server  # noqa: E402

from backends import RedisJsonBackend, RedisRawBackend  # noqa: E402


def per_call(action: Callable[[], object], number: int) -> float:
    """Microseconds per call: the best of three runs of ``number`` calls."""
    return min(timeit.repeat(action, number=number, repeat=3)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    with redis_server() as url:
        raw = redis.Redis.from_url(url)
        store = RedisRawBackend(url, prefix="bench")
        documents = RedisJsonBackend(url, prefix="bench-json")
        value = b"x" * 1024
        raw.set("raw", value)
        store["k"] = value
        documents["k"] = {"text": "x" * 1000}
        keys = [f"m{i}" for i in range(args.keys)]
        store.dump_many({key: b"v" * 100 for key in keys})
        raw.mset({f"raw/{key}": b"v" * 100 for key in keys})
        bulk = max(1, args.ops // 30)
        pairs = {
            "load 1 KiB": (lambda: store.load("k"), lambda: raw.get("raw"), args.ops),
            "load JSON 1 KiB": (lambda: documents.load("k"), lambda: raw.get("raw"), args.ops),
            "dump 1 KiB": (lambda: store.dump("k", value), lambda: raw.set("raw", value), args.ops),
            f"load_many {args.keys}": (
                lambda: store.load_many(keys),
                lambda: raw.mget([f"raw/{key}" for key in keys]),
                bulk,
            ),
        }
        print(f"{'operation':20s} {'backends':>10s} {'redis-py':>10s} {'ratio':>6s}")
        for name, (ours, theirs, number) in pairs.items():
            rounds = [(per_call(ours, number), per_call(theirs, number)) for _ in range(5)]
            a = statistics.median(r[0] for r in rounds)
            b = statistics.median(r[1] for r in rounds)
            print(f"{name:20s} {a:8.1f}us {b:8.1f}us {a / b:6.2f}")
        store.clear()
        documents.clear()
        raw.close()
        store.close()
        documents.close()


if __name__ == "__main__":
    main()
