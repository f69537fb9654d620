"""A hit of the shared Redis tier against an S3 GET and a JsonCache hit, in one run.

    python benchmarks/redis_tier.py [--keys 1000] [--rounds 5]

For 1 KiB JSON values, ops/s of a hit through ``TieredBackend(RedisJsonBackend(timeout=...), S3)``
(one EVALSHA: the entry with its deadline), of a plain ``RedisJsonBackend.load``
(one GET), of a hit through ``TieredBackend(JsonCache, S3)`` (a file on this
machine) and of the three levels ``TieredBackend(JsonCache, TieredBackend(Redis,
S3))``, next to ``S3JsonBackend.load`` from a moto server in its own process
(the HTTP path a miss takes). Redis and moto run on loopback. Best of
``--rounds`` passes over every key, the contenders taking turns. Needs
Debian's ``redis-server`` and ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from cache import bench_bucket, ops_per_second  # noqa: E402
from s3 import DOC, moto_server  # noqa: E402
from servers import redis_server  # noqa: E402

from backends import JsonCache, RedisJsonBackend, TieredBackend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    keys = [f"users/{i}" for i in range(args.keys)]

    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint, redis_server() as url:
        origin = bench_bucket(endpoint)
        origin.dump_many(dict.fromkeys(keys, DOC))
        shared = TieredBackend(RedisJsonBackend(url, prefix="bench-tier", timeout=3600), origin)
        local = TieredBackend(JsonCache(Path(tmp) / "local", timeout=3600), origin)
        three = TieredBackend(JsonCache(Path(tmp) / "three", timeout=3600), shared)
        plain = RedisJsonBackend(url, prefix="bench-plain")
        plain.dump_many(dict.fromkeys(keys, DOC))
        for tier in (shared, local, three):
            tier.load_many(keys)  # every cache filled
        filled = shared.stats.origin_requests
        contenders: dict[str, Callable[[str], object]] = {
            "Redis tier hit": shared.load,
            "RedisJsonBackend.load (GET)": plain.load,
            "JsonCache tier hit": local.load,
            "three levels, disk hit": three.load,
        }
        best = dict.fromkeys(contenders, 0.0)
        for _ in range(args.rounds):
            for name, op in contenders.items():
                best[name] = max(best[name], ops_per_second(keys, op))
        gets = ops_per_second(keys, origin.load)
        assert shared.stats.origin_requests == filled  # every tier load was a hit

        print(f"{args.keys:,} keys of {len(json.dumps(DOC))} bytes, best of {args.rounds}")
        for name, rate in best.items():
            print(f"  {name:28} {rate:>10,.0f} ops/s  {1e6 / rate:8.1f} us  {rate / gets:6.1f}x an S3 GET")
        print(f"  {'S3 GET (moto server, HTTP)':28} {gets:>10,.0f} ops/s  {1e6 / gets:8.1f} us")
        shared.cache.clear()
        plain.clear()
        origin.clear()


if __name__ == "__main__":
    main()
