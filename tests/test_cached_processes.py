"""``@cached`` (#26) across processes: 8 processes x 4 threads call one function on one missing key.

Over a folder, SQLite, Redis and a tier over S3 (each process its own cache
folder, as on its own machine; the origin SeaweedFS, whose create-only PUT
is atomic: the tier's lock is its origin's). The body runs exactly once
(each run appends a line to a file, O_APPEND, shared by every process) and
every caller gets its result. Then the value expires (every process
advances its frozen clock at the same barrier) with stale-while-revalidate
on: every caller gets the stale value at once (the refreshing body waits
until all 32 have answered), and the body runs once more. Then every caller
gets the new value (through a tier, a process whose own cache still held the
old one serves it once more and refreshes it from the origin, without
running the body).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from servers import S3Target, s3_client

from backends import (
    BaseBackend,
    FileSystemJsonBackend,
    JsonCache,
    RedisJsonBackend,
    S3JsonBackend,
    SqliteJsonBackend,
    TieredBackend,
    cached,
)

pytestmark = pytest.mark.slow

PROCESSES, THREADS = 8, 4
CALLERS = PROCESSES * THREADS
START = 1_800_000_000.0

Make = Callable[[int, FrozenClock], BaseBackend[Any, Any]]


def _caller(make: Make, index: int, runs: Path, shared: tuple[Any, Any, Any, Any]) -> None:
    """One process: 4 threads call f() together, then again once the value is stale."""
    barrier, answered, all_answered, results = shared
    clock = FrozenClock(START)
    store = make(index, clock)
    phase = {"n": 1}

    @cached(store, timeout=60, stale_while_revalidate=600, clock=clock)
    def f() -> dict[str, int]:
        fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {phase['n']}\n".encode())
        finally:
            os.close(fd)
        if phase["n"] == 2:  # the refresh answers only after every caller got the stale value
            assert all_answered.wait(60)
        return {"phase": phase["n"]}

    def thread() -> None:
        barrier.wait()
        results.put(("first", f()))
        barrier.wait()
        if threading.current_thread().name == "t0":
            clock.advance(61)
            phase["n"] = 2
        barrier.wait()
        results.put(("stale", f()))
        with answered.get_lock():
            answered.value += 1
            if answered.value == CALLERS:
                all_answered.set()
        for name in ("third", "fourth"):
            assert all_answered.wait(60)
            barrier.wait()  # every call of the round before has returned
            if threading.current_thread().name == "t0":
                assert f.join(60)  # this process's refresh, if it started one, has stored its value
            barrier.wait()
            results.put((name, f()))

    threads = [threading.Thread(target=thread, name=f"t{i}") for i in range(THREADS)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert f.join(60)
    store.close()


def _run(make: Make, tmp_path: Path) -> list[tuple[str, Any]]:
    context = multiprocessing.get_context("fork")
    runs = tmp_path / "runs"
    barrier = context.Barrier(CALLERS)
    answered = context.Value("i", 0)
    all_answered = context.Event()
    results = context.Queue()
    procs = [
        context.Process(target=_caller, args=(make, i, runs, (barrier, answered, all_answered, results)))
        for i in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in range(4 * CALLERS)]
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    lines = runs.read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["1", "2"]  # the body ran once, then once again
    return got


def _check(got: list[tuple[str, Any]], *, tier: bool = False) -> None:
    answers = {name: sorted(str(value) for named, value in got if named == name) for name, _ in got}
    assert answers["first"] == [str({"phase": 1})] * CALLERS
    assert answers["stale"] == [str({"phase": 1})] * CALLERS
    if tier:
        # A process whose own cache still held the old value served it once more, and
        # refreshed it from the origin (where the new value was), without running the body.
        assert set(answers["third"]) <= {str({"phase": 1}), str({"phase": 2})}
    else:
        assert answers["third"] == [str({"phase": 2})] * CALLERS
    assert answers["fourth"] == [str({"phase": 2})] * CALLERS


def test_a_folder(tmp_path: Path) -> None:
    _check(_run(lambda index, clock: FileSystemJsonBackend(tmp_path / "store"), tmp_path))


def test_sqlite(tmp_path: Path) -> None:
    _check(_run(lambda index, clock: SqliteJsonBackend(tmp_path / "kv.db"), tmp_path))


def test_redis(tmp_path: Path, redis: str) -> None:
    prefix = f"cached-processes/{tmp_path.name}"
    try:
        _check(_run(lambda index, clock: RedisJsonBackend(redis, prefix=prefix), tmp_path))
    finally:
        with RedisJsonBackend(redis, prefix=prefix) as store:
            store.clear()


def test_a_tier_over_s3_each_process_with_its_own_cache(tmp_path: Path, seaweedfs: S3Target) -> None:
    endpoint, bucket = seaweedfs.endpoint_url, seaweedfs.bucket
    prefix = f"cached-processes/{tmp_path.name}"

    def make(index: int, clock: FrozenClock) -> BaseBackend[Any, Any]:
        origin = S3JsonBackend(bucket, prefix=prefix, client=s3_client(endpoint))
        origin.clock = clock
        return TieredBackend(JsonCache(tmp_path / f"cache-{index}", clock=clock), origin)

    try:
        _check(_run(make, tmp_path), tier=True)
    finally:
        S3JsonBackend(bucket, prefix=prefix, client=seaweedfs.client).clear()
