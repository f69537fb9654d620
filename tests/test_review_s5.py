"""Review of the changes between 5d8d383 and fa31ae4: each defect found, as a test through the public API."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from servers import S3Target

from backends import (
    FileSystemJsonBackend,
    JsonCache,
    LockError,
    LockTimeoutError,
    MemoryCache,
    S3RawBackend,
    SqliteJsonBackend,
    StoreError,
    TieredBackend,
    VolatileBackend,
)
from backends.events import HUB, MemorySink, subscribe
from backends.filesystem.tally import BOUND_FILE, GENERATIONS, HEADER, MAGIC, RING, RING_AT

# -- AsyncLock (backends/aiolock.py) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["memory", "folder"])
def test_async_with_lock_keeps_the_bodys_error_when_the_lease_was_lost(name: str, tmp_path: Path) -> None:
    """As ``with lock:`` does (Lock.__exit__): the body's own error is the one raised, the lost
    lease a note on it; ``async with`` raised the release's LockError instead, the body's error
    only its ``__context__``."""
    clock = FrozenClock()
    store = VolatileBackend() if name == "memory" else FileSystemJsonBackend(tmp_path / "f")
    store.clock = clock
    other = store.lock("k", ttl=5, timeout=0)

    def lose_the_lease() -> None:
        clock.advance(10)
        other.acquire()  # another holder takes the lock once our lease ran out
        raise ValueError("the body's own error")

    with pytest.raises(ValueError, match="body's own") as sync:
        with store.lock("k", ttl=5):
            lose_the_lease()
    other.release()

    async def run() -> None:
        twin = store.aio()
        try:
            async with twin.lock("k", ttl=5):
                lose_the_lease()
        finally:
            await twin.aclose()

    with pytest.raises(ValueError, match="body's own") as awaited:
        asyncio.run(run())
    assert getattr(awaited.value, "__notes__", None) == getattr(sync.value, "__notes__", None)


def test_async_with_lock_still_raises_a_lost_lease_when_the_body_succeeded(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = FileSystemJsonBackend(tmp_path / "f")
    store.clock = clock
    other = store.lock("k", ttl=5, timeout=0)

    async def run() -> None:
        twin = store.aio()
        try:
            async with twin.lock("k", ttl=5):
                clock.advance(10)
                other.acquire()
        finally:
            await twin.aclose()

    with pytest.raises(LockError, match="another holder took the lock before release"):
        asyncio.run(run())


# -- a folder cache forked while another thread holds one of its locks ------------------------------


@contextmanager
def _held_by_another_thread(lock: Any) -> Iterator[None]:
    """``lock`` held by another thread (a reentrant lock of the forking thread would be its own)."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(30)
        yield
    finally:
        done.set()
        holder.join(30)


def _in_a_child(work: Callable[[], None]) -> int:
    """``work`` in a forked child (killed after 10 s: a hang fails, never hangs the run); its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        faulthandler.dump_traceback_later(10, exit=True)
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("held", ["hits memo", "eviction pool", "root guards", "hit counters"])
def test_a_folder_cache_forked_while_a_thread_holds_one_of_its_locks_works_in_the_child(
    tmp_path: Path, held: str
) -> None:
    """White-box, as tests/test_folder_speed_attacks.py's fork test: each lock held here is one a
    thread of the parent holds for an instant outside the fork gate (a read remembering its bytes
    or counting its hit, a write past the bound ranking or taking its candidates, a root reopened
    or a close); a fork in
    that instant left it held in the child for ever, and the child's first read or write hung."""
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock, maxsize=4)
    cache.dump_many({f"k{i}": i for i in range(4)})
    cache["k4"] = 4  # past the bound: the pool is filled, one evicted
    assert len(cache) == 4
    lock = {
        "hits memo": cache._memo_lock,
        "eviction pool": cache._pool._lock,  # type: ignore[union-attr]
        "root guards": cache._guards._lock,
        "hit counters": cache.counters._lock,
    }[held]

    def child() -> None:
        assert cache.load("k4") == 4
        cache.dump_many({f"n{i}": i for i in range(6)})  # each write past the bound evicts
        assert len(cache) == 4
        assert sorted(cache) == [f"n{i}" for i in range(2, 6)]

    with _held_by_another_thread(lock):
        code = _in_a_child(child)
    assert code == 0, f"the child hung (or failed) on the {held}'s lock it inherited held"
    cache["parent"] = 1  # and the parent's own locks were left as they were
    assert len(cache) == 4 and cache.load("parent") == 1


# -- an S3 backend forked while another thread holds one of its locks --------------------------------


@pytest.mark.parametrize("held", ["pool", "bucket"])
def test_an_s3_backend_forked_while_a_thread_holds_one_of_its_locks_works_in_the_child(
    moto_server: S3Target, held: str
) -> None:
    """White-box, as above: the pool's lock is held while a bulk call submits a batch, the
    bucket's for the whole request that makes a missing bucket (``create_bucket``); a fork
    then left it held in the child, whose next bulk call, or streamed write, hung."""
    options = moto_server.options()
    store = S3RawBackend(moto_server.bucket, prefix="review-fork/", create_bucket=True, **options)
    store.dump_many({"a": b"1", "b": b"2"})
    lock = store._lock if held == "pool" else store._bucket_lock

    def child() -> None:
        assert store.load_many(["a", "b"]) == {"a": b"1", "b": b"2"}
        readable, writable = os.pipe()
        os.write(writable, b"3")
        os.close(writable)
        with open(readable, "rb") as pipe:  # a stream read once: the bucket is made before it
            store.dump_file("c", pipe)
        assert store.load("c") == b"3"

    try:
        with _held_by_another_thread(lock):
            code = _in_a_child(child)
        assert code == 0, f"the child hung (or failed) on the {held}'s lock it inherited held"
        assert store.load_many(["a", "b", "c"]) == {"a": b"1", "b": b"2", "c": b"3"}
    finally:
        store.clear()
        store.close()


# -- a memory store's lock table, forked while another thread holds it ---------------------------


@pytest.mark.parametrize("name", ["volatile", "memory cache"])
def test_a_memory_store_forked_while_a_thread_holds_its_lock_table_locks_in_the_child(name: str) -> None:
    """White-box, as above: the leases' condition is held for an instant by every try, renewal and
    release of a memory store's lock; a fork then left it held in the child (a forked child's
    memory stores are its own copies, with new locks for their data but not for their leases),
    and the child's first lock of the store hung."""
    store = VolatileBackend() if name == "volatile" else MemoryCache(timeout=60)
    with store.lock("parent's", ttl=30):
        pass  # ok: taken and released once: the leases condition in use before the fork

    def child() -> None:
        with store.lock("k", ttl=5, timeout=5):
            store["k"] = 1
        assert store["k"] == 1

    with _held_by_another_thread(store._leases.changed):  # an RLock's: not the forking thread's
        code = _in_a_child(child)
    assert code == 0, "the child hung (or failed) on the leases' condition it inherited held"
    with store.lock("k", ttl=5, timeout=0):
        pass  # ok: the parent still takes the lock at once: nothing left held by the fork


def test_an_sqlite_store_forked_while_a_thread_counts_a_hit_loads_in_the_child(tmp_path: Path) -> None:
    """White-box, as above: every load of a store that counts its hits and misses holds its
    counters' lock an instant, in any thread; a fork then left it held in the child for ever."""
    store = SqliteJsonBackend(tmp_path / "kv.db", timeout=60)
    store["a"] = 1

    def child() -> None:
        assert store.load("a") == 1 and store.load("b") is None

    with _held_by_another_thread(store.counters._lock):
        code = _in_a_child(child)
    assert code == 0, "the child hung (or failed) on the counters' lock it inherited held"
    assert store.load("a") == 1 and store.stats.hits >= 1
    store.close()


def test_events_subscribed_in_a_child_forked_while_a_thread_held_the_hub(tmp_path: Path) -> None:
    """White-box, as above: the hub's lock is held an instant by every subscribe and close, by
    the first event of each backend (its name kept) and by a subscriber's error; a fork then
    left it held in the child (its holder a thread the child does not have), whose first
    subscribe, or event, hung."""
    store = VolatileBackend()

    def child() -> None:
        seen = MemorySink()
        with subscribe(seen):
            store["a"] = 1
        assert [(e.operation, e.key, e.outcome) for e in seen.events][-1] == ("dump", "a", "finished")

    with _held_by_another_thread(HUB._lock):
        code = _in_a_child(child)
    assert code == 0, "the child hung (or failed) on the hub's lock it inherited held"


def test_an_async_lock_tells_the_events_of_the_sync_lock(tmp_path: Path) -> None:
    """docs/howto/events.rst: a lock tells ``attempted``, ``acquired`` (the wait as duration, the
    tries as attempts) and ``timed out``; the twin's lock told only ``acquired``, with one try
    whatever it had waited, and nothing for a wait that timed out."""
    store = FileSystemJsonBackend(tmp_path / "f")
    other = store.lock("k", ttl=30, timeout=0)
    other.acquire()

    def told(take: Callable[[], None]) -> list[tuple[str, bool, bool]]:
        seen = MemorySink()
        with store.subscribe(seen):
            take()
        return [
            (e.outcome, e.duration is not None, (e.attempts or 0) > 1)
            for e in seen.events
            if e.operation == "lock" and e.outcome != "released"
        ]

    def sync_timeout() -> None:
        with pytest.raises(LockTimeoutError) as raised:
            store.lock("k", ttl=5, timeout=0.05).acquire()
        messages.append(str(raised.value))

    async def async_timeout() -> None:
        with pytest.raises(LockTimeoutError) as raised:
            await twin.lock("k", ttl=5, timeout=0.05).acquire()
        messages.append(str(raised.value))

    async def async_after_waiting() -> None:
        waiting = asyncio.create_task(twin.lock("k", ttl=5, timeout=10).acquire())
        assert await asyncio.to_thread(refused.wait, 10)  # a try found the lock taken
        other.release()
        await (await waiting).release()

    refused = threading.Event()
    plain = store.lock

    def lock(key: str, **options: Any) -> Any:  # white-box: a failed try sets ``refused``
        made = plain(key, **options)
        real = made._try_acquire

        def counted() -> bool:
            taken = real()
            if not taken and key == "k":
                refused.set()
            return bool(taken)

        made._try_acquire = counted  # type: ignore[method-assign]
        return made

    messages: list[str] = []
    twin = store.aio()
    assert told(sync_timeout) == [("attempted", False, False), ("timed out", True, True)]
    assert told(lambda: asyncio.run(async_timeout())) == told(sync_timeout)
    assert messages[0] == messages[1] == messages[2]
    store.lock = lock  # type: ignore[method-assign]
    assert told(lambda: asyncio.run(async_after_waiting())) == [
        ("attempted", False, False),
        ("acquired", True, True),
    ]


# -- closing a tier ----------------------------------------------------------------------------------


class _CloseFails(JsonCache):
    """A cache whose close fails after closing (another library's store, a disk error at close)."""

    def close(self) -> None:
        super().close()
        raise StoreError("the cache's close failed", backend=repr(self), operation="close")


def test_a_tier_whose_cache_fails_to_close_still_closes_its_origin(tmp_path: Path) -> None:
    """TieredBackend.close() closes the cache and the origin; a cache's close that raised left
    the origin open (its SQLite connections, an S3 pool), and so did `backends` for a tier URL,
    whose every store is closed whatever one raised (cli/command.py's _close_opened)."""
    origin = SqliteJsonBackend(tmp_path / "kv.db")
    tier = TieredBackend(_CloseFails(tmp_path / "c", timeout=60), origin)
    tier["a"] = 1
    with pytest.raises(StoreError, match="the cache's close failed"):
        tier.close()
    assert origin.closed and tier.closed


# -- aclose() cancelled before its thread started ----------------------------------------------------


def test_an_aclose_cancelled_while_queued_for_a_thread_still_closes(tmp_path: Path) -> None:
    """aio.py: "Cancelling the await leaves the close to finish in its thread". The close ran on
    the loop's default executor: an aclose() cancelled while queued there (every thread busy,
    with other to_thread() calls) was never run: the backend stayed open, its locks held, and
    every later aclose() waited for ever for the close begun."""
    store = FileSystemJsonBackend(tmp_path / "f")

    async def main() -> None:
        twin = store.aio()
        lock = await twin.lock("k", ttl=30).acquire()
        loop = asyncio.get_running_loop()
        busy, started = threading.Event(), threading.Semaphore(0)

        def occupy() -> None:
            started.release()
            busy.wait(10)

        loop.set_default_executor(ThreadPoolExecutor(2))
        blockers = [loop.run_in_executor(None, occupy) for _ in range(2)]
        for _ in blockers:
            assert started.acquire(timeout=10)  # every thread of the default executor busy
        closing = asyncio.ensure_future(twin.aclose())
        await asyncio.sleep(0)  # aclose() began: its close queued behind the blockers
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)
        busy.set()
        await asyncio.gather(*blockers)
        await asyncio.wait_for(twin.aclose(), 10)  # a second aclose() returns once the close is done
        assert store.closed and not lock.held

    asyncio.run(main())
    with FileSystemJsonBackend(tmp_path / "f").lock("k", timeout=0):
        pass  # the lock the twin held was released by its close


def test_a_child_forked_while_a_cancelled_try_is_given_back_acquires_the_lock(tmp_path: Path) -> None:
    """aiolock.py: a try waits for the give-back of a cancelled try of the same lock, which runs in
    the twin's pool. Forked meanwhile, the child has no such thread: the wait never ended, and the
    child's first acquire of that lock hung (white-box: the state while a give-back runs)."""
    store = FileSystemJsonBackend(tmp_path / "f")
    twin = store.aio()
    lock = twin.lock("k", ttl=30, timeout=5)
    lock._settling = Future()  # a give-back under way in the parent's pool

    def child() -> None:
        async def take() -> None:
            async with lock:
                assert lock.held

        asyncio.run(take())

    assert _in_a_child(child) == 0, "the child waited for its parent's give-back"
    lock._settling.set_result(None)
    asyncio.run(twin.aclose())


# -- the bound's tally file, written over by another tool ---------------------------------------------


def test_a_tally_whose_scan_generation_is_near_the_limit_is_taken_for_foreign(tmp_path: Path) -> None:
    """filesystem/tally.py: a ring another tool wrote (or a file this module never wrote there),
    valid but with a scan generation near 2**63, was taken as is; the next scan's generation did
    not fit its 8 bytes: a raw struct.error from every write past the bound, for ever (the busy
    mark left set, each recount read the same ring again)."""
    root = tmp_path / "c"
    cache = JsonCache(root, timeout=60, maxsize=2)
    cache["a"] = 1
    with open(root / BOUND_FILE, "r+b") as tally:
        tally.seek(RING_AT)
        tally.write(RING.pack(2**63 - 1, *([0] * (2 * GENERATIONS))))
    other = JsonCache(root, timeout=60, maxsize=2)
    for key in "bcd":
        other[key] = 1
    assert len(other) == 2 and sorted(other) == ["c", "d"]


@pytest.mark.parametrize("field", ["entries", "bytes", "writes"])
def test_a_tally_whose_counts_are_near_the_limit_is_recounted(tmp_path: Path, field: str) -> None:
    """As above for the header's counts: one near 2**63 made the next counted write's raw
    struct.error (the count did not fit its 8 bytes)."""
    root = tmp_path / "c"
    cache = JsonCache(root, timeout=60, maxsize=2)
    cache["a"] = 1
    counts = {"entries": 1, "bytes": 1, "writes": 1, field: 2**63 - 1}
    with open(root / BOUND_FILE, "r+b") as tally:
        tally.write(HEADER.pack(MAGIC, counts["entries"], counts["bytes"], counts["writes"], 0))
    other = JsonCache(root, timeout=60, maxsize=2)
    for key in "bcd":
        other[key] = 1
    assert len(other) == 2 and sorted(other) == ["c", "d"]
