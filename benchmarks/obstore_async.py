"""Why the native async twin's GETs cost more client CPU than the sync obstore engine's.

    python -m benchmarks.obstore_async [--keys 5000] [--rounds 3]

GETs of 1 KiB from SeaweedFS (its own process, no added latency), 64 at a
time: obstore's blocking ``get`` from 64 threads (what the sync engine
does), obstore's async API from one event loop (what the native twin does,
and raw obstore async as the issue's limit), and the twin and the sync
``load_many`` themselves. The client's CPU per key is split into the event
loop's thread and every other thread (obstore's tokio workers; the 64
Python threads of the blocking contenders).

An awaited GET is two awaits (``get_async`` for the answer's head,
``bytes_async`` for its body). Each await's result is handed to the event
loop by a tokio thread, which must take the GIL from the loop's thread to
do it. The CPU that costs is the GIL's hand-over, and it moves with
``sys.setswitchinterval`` (how long a thread waiting for the GIL waits
before it asks the holder to drop it): the rows at 0.05 and 50 ms show
it. One await per GET (``get_range_async``, which returns the body alone:
no Content-Type, no Content-Encoding, so not what a load can use) costs
about what the blocking ``get`` costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from servers import s3_client, seaweedfs  # noqa: E402

from backends import S3JsonBackend  # noqa: E402

from .remote import BUCKET, raw_obstore_store  # noqa: E402

IN_FLIGHT = 64
BODY = b'{"v": "' + b"x" * 1000 + b'"}'


def _ticks(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


@contextmanager
def split_cpu(into: dict[str, float]) -> Iterator[None]:
    """The CPU seconds of this process while the block runs: the calling thread's and the rest's."""
    main = threading.get_native_id()
    tick = os.sysconf("SC_CLK_TCK")
    before_main, before_all = _ticks(main), time.process_time()
    yield
    into["main"] = (_ticks(main) - before_main) / tick
    into["all"] = time.process_time() - before_all


def contenders(endpoint: str, keys: list[str]) -> dict[str, Callable[[], object]]:
    import obstore

    store = raw_obstore_store(endpoint)
    client = s3_client(endpoint, max_pool_connections=IN_FLIGHT)
    backend = S3JsonBackend(BUCKET, client=client, engine="obstore")
    twin = backend.aio()

    def threads() -> object:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            return list(pool.map(lambda k: bytes(obstore.get(store, k).bytes()), keys))

    async def two_awaits() -> object:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def get(key: str) -> bytes:
            async with slots:
                result = await obstore.get_async(store, key)
                return bytes(await result.bytes_async())

        return await asyncio.gather(*(get(key) for key in keys))

    async def one_await() -> object:
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def get(key: str) -> bytes:
            async with slots:
                return bytes(await obstore.get_range_async(store, key, start=0, length=len(BODY)))

        return await asyncio.gather(*(get(key) for key in keys))

    def at_interval(seconds: float, action: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            default = sys.getswitchinterval()
            sys.setswitchinterval(seconds)
            try:
                return action()
            finally:
                sys.setswitchinterval(default)

        return run

    return {
        "raw obstore get, 64 threads": threads,
        "raw obstore async, two awaits a GET": lambda: asyncio.run(two_awaits()),
        "  the same, switch interval 0.05 ms": at_interval(0.00005, lambda: asyncio.run(two_awaits())),
        "  the same, switch interval 50 ms": at_interval(0.05, lambda: asyncio.run(two_awaits())),
        "raw obstore async, one await a GET (body only)": lambda: asyncio.run(one_await()),
        "backends load_many, sync obstore engine": lambda: backend.load_many(keys),
        "backends load_many, native async twin": lambda: asyncio.run(twin.load_many(keys)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with seaweedfs() as endpoint:
        client = s3_client(endpoint, max_pool_connections=IN_FLIGHT)
        client.create_bucket(Bucket=BUCKET)
        keys = [f"k{i:05d}" for i in range(args.keys)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=BODY), keys))
        runs = contenders(endpoint, keys)
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
        for action in runs.values():
            action()  # untimed: connections opened, the twin's loop state made
        for _ in range(args.rounds):  # interleaved: each round runs every contender once
            for name, action in runs.items():
                spent: dict[str, float] = {}
                start = time.perf_counter()
                with split_cpu(spent):
                    action()
                elapsed = time.perf_counter() - start
                figures[name].append((args.keys / elapsed, spent["main"], spent["all"] - spent["main"]))
    print(f"{args.keys:,} GETs of 1 KiB from SeaweedFS, {IN_FLIGHT} at once, medians of {args.rounds} rounds")
    print(f"{'':50s} {'keys/s':>8s} {'CPU/key':>8s} {'loop thread':>12s} {'other threads':>14s}")
    for name, rows in figures.items():
        rate = statistics.median(r[0] for r in rows)
        main_us = statistics.median(r[1] for r in rows) / args.keys * 1e6
        rest_us = statistics.median(r[2] for r in rows) / args.keys * 1e6
        print(f"{name:50s} {rate:8.0f} {main_us + rest_us:6.0f}us {main_us:10.0f}us {rest_us:12.0f}us")


if __name__ == "__main__":
    main()
