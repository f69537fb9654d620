"""``@cached`` against its peers: the cost of a hit, and how often a stampede runs the body.

A hit in memory against ``functools.lru_cache``, ``cachetools.cached`` and
dogpile.cache's ``cache_on_arguments`` (memory backend); a hit on disk
against diskcache's ``memoize``; the stampede (32 callers, one missing
key, a body of 50 ms) against dogpile.cache and aiocache (``cached``
and ``cached_stampede``): how many times the body ran, and, for ours, over
a folder shared by 4 processes of 8 threads each.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends import JsonCache, MemoryCache, SqliteJsonBackend, VolatileBackend, cached

from .harness import OURS, PEER, Bench

__all__ = ["cached_section"]

SECTION = "@cached: a hit, and a stampede"
#: the value every function returns: 1 KiB of JSON
VALUE: dict[str, Any] = {"id": 42, "name": "Ada Lovelace", "bio": "x" * 980}
CALLERS = 32
BODY_SECONDS = 0.05


def _body(x: int) -> dict[str, Any]:
    return {**VALUE, "id": x}


def _hits(function: Callable[[int], Any], keys: int, calls: int) -> Callable[[int], float]:
    """Microseconds per call of ``function`` over ``keys`` arguments already cached."""
    for x in range(keys):
        function(x)

    def measure(turn: int) -> float:
        start = time.perf_counter()
        for i in range(calls):
            function(i % keys)
        return (time.perf_counter() - start) / calls * 1e6

    return measure


def _memory_contenders(bench: Bench) -> dict[str, tuple[str, Callable[[int], Any]]]:
    found: dict[str, tuple[str, Callable[[int], Any]]] = {
        "backends @cached(MemoryCache)": (OURS, cached(MemoryCache(timeout=3600), 3600)(_body)),
        "backends @cached(VolatileBackend)": (OURS, cached(VolatileBackend(), 3600)(_body)),
        "functools.lru_cache": (PEER, functools.lru_cache(maxsize=1024)(_body)),
    }
    try:
        import cachetools

        found["cachetools.cached(TTLCache)"] = (
            PEER,
            cachetools.cached(cachetools.TTLCache(maxsize=1024, ttl=3600))(_body),
        )
    except ImportError:
        bench.lacking("cachetools", "not installed: pip install -e '.[bench]'")
    try:
        from dogpile.cache import make_region

        region = make_region().configure("dogpile.cache.memory", expiration_time=3600)
        found["dogpile.cache cache_on_arguments (memory)"] = (PEER, region.cache_on_arguments()(_body))
    except ImportError:
        bench.lacking("dogpile.cache", "not installed: pip install -e '.[bench]'")
    return found


def _disk_contenders(bench: Bench, base: Path) -> dict[str, tuple[str, Callable[[int], Any]]]:
    found: dict[str, tuple[str, Callable[[int], Any]]] = {
        "backends @cached(JsonCache)": (
            OURS,
            cached(JsonCache(base / "jsoncache", timeout=3600), 3600)(_body),
        ),
        "backends @cached(SqliteJsonBackend)": (
            OURS,
            cached(SqliteJsonBackend(base / "sqlite" / "kv.db"), 3600)(_body),
        ),
    }
    try:
        import diskcache

        memo = diskcache.Cache(str(base / "diskcache")).memoize(expire=3600)
        found["diskcache Cache.memoize"] = (PEER, memo(_body))
    except ImportError:
        bench.lacking("diskcache", "not installed: pip install -e '.[bench]'")
    return found


# -- the stampede ---------------------------------------------------------------------------------


class Runs:
    """How many times a body ran (thread-safe)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def body(self, x: int) -> dict[str, Any]:
        with self._lock:
            self.count += 1
        time.sleep(BODY_SECONDS)  # the work every caller would do at once
        return _body(x)


def _function_of(method: Callable[[int], Any]) -> Callable[[int], Any]:
    """A plain function calling ``method`` (dogpile decorates functions, not bound methods)."""

    def body(x: int) -> Any:
        return method(x)

    return body


def _threads(function: Callable[[int], Any]) -> None:
    start = threading.Barrier(CALLERS)

    def call() -> None:
        start.wait()
        function(1)

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _stampede_threads(make: Callable[[Runs, int], Callable[[int], Any]]) -> Callable[[int], float]:
    def measure(turn: int) -> float:
        runs = Runs()
        _threads(make(runs, turn))
        return runs.count

    return measure


def _stampede_tasks(make: Callable[[Runs, int], Callable[[int], Any]]) -> Callable[[int], float]:
    def measure(turn: int) -> float:
        runs = Runs()

        async def body(x: int) -> dict[str, Any]:
            runs.count += 1
            await asyncio.sleep(BODY_SECONDS)
            return _body(x)

        function = make(body, turn)  # type: ignore[arg-type]

        async def main() -> None:
            await asyncio.gather(*(function(1) for _ in range(CALLERS)))

        asyncio.run(main())
        return runs.count

    return measure


def _in_process(root: str, runs: str, barrier: Any) -> None:
    def body(x: int) -> dict[str, Any]:
        fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"1\n")
        os.close(fd)
        time.sleep(BODY_SECONDS)
        return _body(x)

    function = cached(JsonCache(root, timeout=3600))(body)
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        function(1)

    barrier.wait()
    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _stampede_processes(base: Path) -> Callable[[int], float]:
    def measure(turn: int) -> float:
        context = multiprocessing.get_context("fork")
        root, runs = base / f"procs-{turn}", base / f"procs-{turn}.runs"
        barrier = context.Barrier(4)
        procs = [context.Process(target=_in_process, args=(str(root), str(runs), barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        return len(runs.read_text().splitlines())

    return measure


def _stampede_contenders(bench: Bench, base: Path) -> dict[str, tuple[str, Callable[[int], float]]]:
    found: dict[str, tuple[str, Callable[[int], float]]] = {
        "backends @cached(JsonCache), 32 threads": (
            OURS,
            _stampede_threads(lambda runs, turn: cached(JsonCache(base / f"t{turn}"))(runs.body)),
        ),
        "backends @cached(MemoryCache), 32 tasks": (
            OURS,
            _stampede_tasks(lambda body, turn: cached(MemoryCache())(body)),  # type: ignore[arg-type]
        ),
        "backends @cached(JsonCache), 4 processes x 8 threads": (OURS, _stampede_processes(base)),
    }
    try:
        from dogpile.cache import make_region

        found["dogpile.cache cache_on_arguments (memory), 32 threads"] = (
            PEER,
            _stampede_threads(
                lambda runs, turn: (
                    make_region()
                    .configure("dogpile.cache.memory", expiration_time=3600)
                    .cache_on_arguments()(_function_of(runs.body))
                )
            ),
        )
    except ImportError:
        bench.lacking("dogpile.cache", "not installed: pip install -e '.[bench]'")
    try:
        from aiocache import Cache
        from aiocache import cached as aio_cached
        from aiocache.decorators import cached_stampede

        found["aiocache cached (memory), 32 tasks"] = (
            PEER,
            _stampede_tasks(lambda body, turn: aio_cached(cache=Cache.MEMORY, ttl=3600)(body)),  # type: ignore[arg-type]
        )
        found["aiocache cached_stampede (memory), 32 tasks"] = (
            PEER,
            _stampede_tasks(
                lambda body, turn: cached_stampede(cache=Cache.MEMORY, ttl=3600, lease=2)(body)  # type: ignore[arg-type]
            ),
        )
    except ImportError:
        bench.lacking("aiocache", "not installed: pip install -e '.[bench]'")
    return found


def cached_section(bench: Bench, base: Path, calls: int) -> None:
    """A hit (µs per call) in memory and on disk, and the body runs of a stampede."""
    base.mkdir(parents=True, exist_ok=True)
    keys = 100
    memory = _memory_contenders(bench)
    bench.compare(
        SECTION,
        f"a hit in memory ({keys} keys, {calls:,} calls)",
        "us",
        {who: (kind, _hits(function, keys, calls)) for who, (kind, function) in memory.items()},
    )
    disk = _disk_contenders(bench, base)
    bench.compare(
        SECTION,
        f"a hit on disk ({keys} keys, {calls:,} calls)",
        "us",
        {who: (kind, _hits(function, keys, calls)) for who, (kind, function) in disk.items()},
    )
    bench.compare(
        SECTION,
        f"a stampede: body runs for {CALLERS} callers of one missing key",
        "runs",
        _stampede_contenders(bench, base),
    )
