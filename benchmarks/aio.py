"""The async twin against the sync calls it wraps, in one run.

    python benchmarks/aio.py [--calls 20000] [--keys 1000] [--latency-ms 20]

1. One awaited ``load`` on a memory backend against the sync call (the cost
   of the hop to the wrapper's thread and back), medians of rounds.
2. ``--keys`` concurrent ``await b.load(k)`` (``asyncio.gather``) on S3
   against one sync ``load_many`` of the same keys: a moto server in its own
   process, then through a loopback proxy adding ``--latency-ms`` to every
   request. Both use 16 threads (the S3 backend's ``max_workers``).
3. ``--redis-loads`` concurrent ``await b.load(k)`` on Redis (a
   ``redis-server`` of its own): the native twin (``redis.asyncio``), the
   thread-pool twin, against the sync ``load_many`` (MGET) and a raw
   redis-py pipeline of GETs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from s3 import DOC, latency_proxy, moto_server  # noqa: E402
from servers import redis_server, s3_client  # noqa: E402

from backends import RedisJsonBackend, S3JsonBackend, VolatileBackend  # noqa: E402
from backends.aio import AsyncBackend  # noqa: E402


def per_call_us(run: Callable[[int], float], calls: int, rounds: int = 7) -> float:
    """Median over rounds of the microseconds per call; ``run(n)`` times n calls."""
    return statistics.median(run(calls) / calls * 1e6 for _ in range(rounds))


def section_overhead(calls: int) -> None:
    store = VolatileBackend()
    store["k"] = {"v": 1}
    twin = store.aio(max_workers=1)
    hopping = store.aio(max_workers=1)
    hopping._blocks = True  # as for a store that does I/O: through the wrapper's thread

    def sync(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            store.load("k")
        return time.perf_counter() - start

    def awaited(which: AsyncBackend[Any]) -> Callable[[int], float]:
        def run(n: int) -> float:
            async def main() -> float:
                start = time.perf_counter()
                for _ in range(n):
                    await which.load("k")
                return time.perf_counter() - start

            return asyncio.run(main())

        return run

    base = per_call_us(sync, calls)
    inline = per_call_us(awaited(twin), calls)
    hop = per_call_us(awaited(hopping), calls // 10)
    print("1. one call on VolatileBackend, medians of 7 rounds")
    print(f"   sync load                            {base:8.2f} us")
    print(f"   await load (inline: a memory store)  {inline:8.2f} us   +{inline - base:.1f} us a call")
    print(f"   await load through a thread hop      {hop:8.2f} us   +{hop - base:.1f} us a call")


def concurrent_loads(backend: S3JsonBackend, keys: list[str]) -> float:
    twin: AsyncBackend[Any] = backend.aio()

    async def main() -> float:
        start = time.perf_counter()
        loaded = await asyncio.gather(*(twin.load(key) for key in keys))
        seconds = time.perf_counter() - start
        assert all(value == DOC for value in loaded)
        return seconds

    try:
        return asyncio.run(main())
    finally:
        twin._pool.shutdown()


def section_s3(endpoint: str, count: int, latency_ms: float) -> None:
    s3_client(endpoint).create_bucket(Bucket="aio")
    S3JsonBackend("aio", client=s3_client(endpoint)).dump_many({f"k{i}": DOC for i in range(count)})
    keys = [f"k{i}" for i in range(count)]
    print(f"\n2. {count} loads on S3, 16 threads each way, best of 3")
    for label, far in (("moto server", None), (f"+{latency_ms:.0f} ms a request", latency_ms)):
        if far is None:
            target = endpoint
            backend = S3JsonBackend("aio", client=s3_client(target), max_workers=16)
            _compare(label, backend, keys)
            backend.close()
        else:
            with latency_proxy(endpoint, far / 1000) as target:
                backend = S3JsonBackend("aio", client=s3_client(target), max_workers=16)
                _compare(label, backend, keys)
                backend.close()


def _compare(label: str, backend: S3JsonBackend, keys: list[str]) -> None:
    def sync_many() -> float:
        start = time.perf_counter()
        assert len(backend.load_many(keys)) == len(keys)
        return time.perf_counter() - start

    many = min(sync_many() for _ in range(3))
    gathered = min(concurrent_loads(backend, keys) for _ in range(3))
    ratio = gathered / many
    print(f"   {label:22s} load_many {many:6.2f} s   gather of await load {gathered:6.2f} s   ({ratio:.2f}x)")


def section_redis(count: int) -> None:
    import redis as redis_py

    with redis_server() as url:
        store = RedisJsonBackend(url, prefix="bench")
        keys = [f"k{i}" for i in range(count)]
        store.dump_many(dict.fromkeys(keys, DOC))
        raw = redis_py.Redis.from_url(url)

        def pipeline() -> None:
            with raw.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.get("bench:" + key)
                pipe.execute()

        def gathered(twin: AsyncBackend[Any]) -> Callable[[], None]:
            async def main() -> None:
                await asyncio.gather(*(twin.load(key) for key in keys))

            return lambda: asyncio.run(main())

        native, threaded = store.aio(), AsyncBackend(store)
        timings = {
            "sync load_many (MGET per 1000)": lambda: store.load_many(keys),
            "raw redis-py pipeline of GETs": pipeline,
            "native twin, gather of await load": gathered(native),
            "thread-pool twin, gather of await load": gathered(threaded),
        }
        print(f"\n3. {count:,} loads on Redis (974-byte JSON), best of 3")
        for name, run in timings.items():
            best = min(_seconds(run) for _ in range(3))
            print(f"   {name:40s} {best:6.3f} s  {count / best:9,.0f} loads/s")
        store.clear()
        raw.close()


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--redis-loads", type=int, default=10_000)
    args = parser.parse_args()
    section_overhead(args.calls)
    with moto_server() as endpoint:
        section_s3(endpoint, args.keys, args.latency_ms)
    section_redis(args.redis_loads)


if __name__ == "__main__":
    main()
