"""Cache hits against a raw file read, diskcache and an S3 GET, in one run.

    python benchmarks/cache.py [--keys 10000] [--rounds 5] [--gets 300]

For 1 KiB JSON values: ops/s of ``JsonCache.load`` and of a hit through a
``TieredBackend`` (JsonCache in front of S3), next to a raw
``open``/``read``/``json.loads`` of the very same files and diskcache's
``Cache.get`` (and ``JsonCache.load`` without its in-process memo: a
process's first read of a key); then ``S3JsonBackend.load`` from a moto server in its own
process (the HTTP path a miss takes). Each local figure is the best of
``--rounds`` passes over every key, the passes of all contenders taking
turns. Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from s3 import DOC, moto_server  # noqa: E402
from servers import CREDENTIALS  # noqa: E402

from backends import JsonCache, S3JsonBackend, TieredBackend  # noqa: E402


class FirstReads(JsonCache):
    """A JsonCache that never remembers: every load is a process's first read of the key."""

    def _remember(self, key: str, status: Any, data: bytes) -> None:
        pass


def bench_bucket(endpoint: str) -> S3JsonBackend:
    """JSON in the bucket "bench" of the S3 server at ``endpoint`` (made if missing)."""
    return S3JsonBackend(
        "bench",
        endpoint_url=endpoint,
        create_bucket=True,
        access_key=CREDENTIALS["aws_access_key_id"],
        secret_key=CREDENTIALS["aws_secret_access_key"],
    )


def ops_per_second(keys: list[str], op: Callable[[str], object]) -> float:
    start = time.perf_counter()
    for key in keys:
        op(key)
    return len(keys) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gets", type=int, default=300)
    args = parser.parse_args()
    keys = [f"users/{i}" for i in range(args.keys)]

    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        cache = JsonCache(Path(tmp) / "cache", timeout=3600)
        cache.dump_many(dict.fromkeys(keys, DOC))
        paths = {key: cache.path(key) for key in keys}

        def raw(key: str) -> object:
            with open(paths[key], "rb") as f:
                return json.loads(f.read())

        origin = bench_bucket(endpoint)
        origin.dump_many(dict.fromkeys(keys[: args.gets], DOC))
        tier = TieredBackend(JsonCache(Path(tmp) / "cache", timeout=3600), origin)
        contenders: dict[str, Callable[[str], object]] = {
            "raw open/read/json.loads": raw,
            "JsonCache.load": cache.load,
            "JsonCache.load, first read": FirstReads(Path(tmp) / "cache", timeout=3600).load,
            "TieredBackend hit": tier.load,
        }
        try:
            import diskcache

            disk = diskcache.Cache(str(Path(tmp) / "diskcache"))
            for key in keys:
                disk.set(key, DOC)
            contenders["diskcache Cache.get"] = disk.get
        except ImportError:
            print("(diskcache not installed: pip install -e '.[bench]')")

        best = dict.fromkeys(contenders, 0.0)
        for _ in range(args.rounds):
            for name, op in contenders.items():
                best[name] = max(best[name], ops_per_second(keys, op))
        assert tier.stats.origin_requests == 0, tier.stats  # every tier load was a hit
        gets = ops_per_second(keys[: args.gets], origin.load)

        print(f"{args.keys:,} keys of {len(json.dumps(DOC))} bytes, best of {args.rounds}")
        raw_rate = best["raw open/read/json.loads"]
        for name, rate in best.items():
            print(f"  {name:28} {rate:>10,.0f} ops/s   {raw_rate / rate:5.2f}x the time of a raw read")
        print(f"  {'S3 GET (moto server, HTTP)':28} {gets:>10,.0f} ops/s")
        print(f"a tier hit is {best['TieredBackend hit'] / gets:,.0f}x faster than an S3 GET")
        origin.clear()


if __name__ == "__main__":
    main()
