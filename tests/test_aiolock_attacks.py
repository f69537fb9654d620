"""AsyncLock and the twin's closing, attacked (ATTACKS.md classes 3 and 9): a cancelled try whose
lock is given back while aclose() runs, close mid-flight, fork and two event loops, on memory,
folder, SQLite and Redis locks, through the public API."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LONG

from backends import (
    BaseBackend,
    FileSystemJsonBackend,
    LockError,
    LockTimeoutError,
    RedisJsonBackend,
    SqliteJsonBackend,
    StoreError,
    VolatileBackend,
)
from backends.locks import Lock

LOCKS = ["memory", "folder", "sqlite", "redis"]
WAIT = 10  # bound of every wait on an event: a hang fails the test, never the run


def make(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> BaseBackend[Any, Any]:
    if name == "memory":
        return VolatileBackend()
    if name == "folder":
        return FileSystemJsonBackend(tmp_path / "folder")
    if name == "sqlite":
        return SqliteJsonBackend(tmp_path / "kv.db")
    url = request.getfixturevalue("redis")
    return RedisJsonBackend(url, prefix=f"{tmp_path.name}:")


def again(name: str, store: BaseBackend[Any, Any], tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A second, fresh backend on the same store (memory: the same backend, its hooks taken off)."""
    vars(store).pop("lock", None)
    return store if name == "memory" else make(name, tmp_path, request)


def hooked(store: BaseBackend[Any, Any], **hooks: Callable[[Lock], None]) -> None:
    """Make ``store.lock`` give locks whose public ``try_acquire``/``release`` first call a hook."""
    plain = store.lock

    def lock(key: str, **options: Any) -> Lock:
        made = plain(key, **options)
        for name, hook in hooks.items():
            call = getattr(made, name)

            def run(*args: Any, _call: Any = call, _hook: Any = hook) -> Any:
                _hook(made)
                return _call(*args)

            setattr(made, name, run)
        return made

    store.lock = lock  # type: ignore[method-assign]


# -- a cancelled try's lock, given back while aclose() runs ------------------------------------


@pytest.mark.parametrize("name", LOCKS)
def test_lock_of_a_cancelled_try_is_released_before_aclose_closes_the_backend(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The flake of test_cancelled_calls_at_close_leak_no_lock_and_no_half_write[folder], made
    deterministic: a try took the lock, its await was cancelled after the try was done, so the
    give-back ran at once in the loop's thread; aclose() (in its own thread) had found nothing
    left to release and closed the backend under it: the release failed (logged) and the lock
    stayed taken for its whole lease."""
    store = make(name, tmp_path, request)
    loop_thread = threading.get_ident()
    blocker_started, gate = threading.Event(), threading.Event()

    def on_try(lock: Lock) -> None:
        if lock.key == "blocker":  # a call queued behind the try: aclose() waits for it
            blocker_started.set()
            assert gate.wait(WAIT)

    def on_release(lock: Lock) -> None:
        if threading.get_ident() == loop_thread:  # hold the loop until the backend is closed
            gate.set()
            for _ in range(WAIT * 1000):
                if store.closed:
                    return
                threading.Event().wait(0.001)

    hooked(store, try_acquire=on_try, release=on_release)

    async def main() -> None:
        twin = store.aio(max_workers=1)
        trying = asyncio.ensure_future(twin.lock("k", timeout=5).acquire())
        blocking = asyncio.ensure_future(twin.lock("blocker", timeout=0).acquire())
        await asyncio.sleep(0)  # both tries submitted, in this order, to the one thread
        assert blocker_started.wait(WAIT)  # so the try of "k" is done: it took the lock
        closing = asyncio.ensure_future(twin.aclose())
        trying.cancel()
        (cancelled,) = await asyncio.gather(trying, return_exceptions=True)
        assert isinstance(cancelled, asyncio.CancelledError)
        gate.set()  # the give-back was handed on: the blocker may end, and aclose() go on
        await asyncio.gather(blocking, return_exceptions=True)
        await closing

    asyncio.run(main())
    fresh = again(name, store, tmp_path, request)
    try:
        with fresh.lock("k", timeout=0):
            pass  # taken at once: the cancelled try's lock was given back
    finally:
        fresh.close()


@pytest.mark.parametrize("name", ["folder", "sqlite"])
def test_cancelled_tries_at_close_under_load_leak_no_lock(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The original flake, many rounds, tiny switch interval and a busy thread: no lock leaks."""
    rounds = 200 if LONG else 25
    busy = threading.Event()

    def spin() -> None:
        while not busy.is_set():
            pass  # ok: a busy thread, the CPU load the race needs

    spinner = threading.Thread(target=spin, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    spinner.start()
    try:
        for round_ in range(rounds):
            folder = tmp_path / str(round_)
            folder.mkdir()
            store = make(name, folder, request)

            async def main(store: BaseBackend[Any, Any] = store, pauses: int = round_ % 4) -> None:
                twin = store.aio(max_workers=2)

                async def locked(i: int) -> None:
                    async with twin.lock(f"lock{i % 3}", timeout=5):
                        await twin.dump(f"w{i}", i)

                tasks = [asyncio.ensure_future(locked(i)) for i in range(6)]
                for _ in range(pauses):
                    await asyncio.sleep(0)
                closing = asyncio.ensure_future(twin.aclose())
                for task in tasks:
                    task.cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    assert result is None or isinstance(
                        result, (asyncio.CancelledError, StoreError, LockError)
                    )
                await closing

            asyncio.run(main())
            fresh = make(name, folder, request)
            try:
                for i in range(3):
                    with fresh.lock(f"lock{i}", timeout=0):
                        pass  # ok: taking the lock with timeout=0 is the assertion (free, not leaked)
            except LockTimeoutError as leaked:
                raise AssertionError(f"round {round_}: a lock leaked at aclose()") from leaked
            finally:
                fresh.close()
    finally:
        busy.set()
        spinner.join()
        sys.setswitchinterval(interval)


@pytest.mark.parametrize("name", ["memory", "folder"])
def test_the_same_lock_acquired_again_right_after_a_cancelled_acquire(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``asyncio.wait_for(lock.acquire(), ...)`` in a loop cancels an acquire whose try took the
    lock; the next acquire of the same AsyncLock must wait for that give-back, not race it (it
    found the lock "already held by this Lock", or was undone by the give-back)."""
    store = make(name, tmp_path, request)
    loop_thread = threading.get_ident()
    retried, tries = threading.Event(), [0]

    def on_try(lock: Lock) -> None:
        tries[0] += 1
        if tries[0] == 2:
            retried.set()

    def on_release(lock: Lock) -> None:
        if threading.get_ident() != loop_thread:  # the give-back: the retry, if it races, runs now
            retried.wait(1)  # bounded: in the fixed code the retry waits for this give-back

    hooked(store, try_acquire=on_try, release=on_release)

    async def main() -> None:
        twin = store.aio(max_workers=2)
        alock = twin.lock("k", timeout=5)
        first = asyncio.ensure_future(alock.acquire())
        for _ in range(1000):  # the try took the lock (its result is on its way to the loop)
            if alock.held:
                break
            await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await alock.acquire()
        assert alock.held
        other = twin.lock("k", timeout=0)
        with pytest.raises(LockTimeoutError):
            await other.acquire()  # the lease is really ours: no give-back undid it
        await alock.release()
        await twin.aclose()

    asyncio.run(main())


# -- closing (class 3): every lock call after aclose(), a waiting acquire, a body cut short --------


@pytest.mark.parametrize("name", LOCKS)
def test_lock_calls_at_and_after_aclose_give_typed_errors(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A waiting acquire ends with StoreError (not a timeout); a body's exit after aclose() says
    its lock was released; acquire, release and renew after it raise StoreError; nothing leaks."""
    store = make(name, tmp_path, request)
    rival = again(name, store, tmp_path, request) if name != "memory" else store
    taken = rival.lock("busy", timeout=0).acquire()  # another holder: the twin's try waits

    async def main() -> None:
        twin = store.aio(max_workers=2)
        held = twin.lock("held", timeout=0)
        await held.acquire()
        waiting = asyncio.ensure_future(twin.lock("busy", timeout=None).acquire())
        await asyncio.sleep(0.01)  # it tried once and sleeps between tries (not a hidden race: either way)
        body = twin.lock("body", timeout=0)
        with pytest.raises(LockError, match="released by aclose"):
            async with body:
                await twin.aclose()
        with pytest.raises(StoreError):
            await waiting
        assert not held.held and not body.held
        for call in (held.acquire, held.release, held.renew):
            with pytest.raises(StoreError):
                await call()
        await twin.aclose()  # again: nothing

    asyncio.run(main())
    taken.release()
    fresh = again(name, store, tmp_path, request)
    try:
        for key in ("held", "body", "busy"):
            with fresh.lock(key, timeout=0):
                pass  # ok: taking the lock with timeout=0 is the assertion (free, not leaked)
    finally:
        fresh.close()
        rival.close()


@pytest.mark.parametrize("name", LOCKS)
def test_a_second_aclose_returns_only_once_the_locks_are_released(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """aclose() from two tasks (a program's own, and ``async with twin``'s): the second must not
    return while the first is still releasing the locks, or a lock looks leaked right after it."""
    store = make(name, tmp_path, request)
    second_started, loop_thread = threading.Event(), threading.get_ident()

    def on_release(lock: Lock) -> None:
        if threading.get_ident() != loop_thread:  # aclose()'s thread: wait for the second call
            assert second_started.wait(WAIT)

    hooked(store, release=on_release)

    async def main() -> None:
        twin = store.aio(max_workers=2)
        await twin.lock("k", timeout=0).acquire()
        first = asyncio.ensure_future(twin.aclose())
        await asyncio.sleep(0)
        second = asyncio.ensure_future(twin.aclose())
        await asyncio.sleep(0)
        done_early = second.done()
        second_started.set()
        await second
        assert not done_early, "the second aclose() returned while the first was releasing"
        fresh = again(name, store, tmp_path, request)
        try:
            with fresh.lock("k", timeout=0):
                pass  # free once any aclose() returned
        finally:
            if fresh is not store:
                fresh.close()
        await first

    asyncio.run(main())


# -- processes and loops (class 9) --------------------------------------------------------------


@pytest.mark.parametrize("name", LOCKS)
def test_one_twins_locks_exclude_across_two_event_loops(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two loops in two threads contend for one key through one twin: never both inside."""
    store = make(name, tmp_path, request)
    twin = store.aio(max_workers=3)
    rounds = 150 if LONG else 20
    inside, errors = [0], []

    async def worker() -> None:
        for _ in range(rounds):
            async with twin.lock("shared", timeout=30):
                inside[0] += 1
                assert inside[0] == 1
                await asyncio.sleep(0)
                await twin.contains("x")  # a hop to a thread while holding it
                inside[0] -= 1

    def thread() -> None:
        try:
            asyncio.run(worker())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and errors == []
    asyncio.run(twin.aclose())
    fresh = again(name, store, tmp_path, request)
    try:
        with fresh.lock("shared", timeout=0):
            pass  # ok: taking the lock with timeout=0 is the assertion (free, not leaked)
    finally:
        fresh.close()


@pytest.mark.parametrize("name", LOCKS)
def test_a_child_forked_while_a_twin_lock_is_held_neither_takes_nor_frees_it(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The child cannot take the parent's lock, and its aclose() does not release it (the
    parent's lock is not the child's to give back); the child's own locks work."""
    store = make(name, tmp_path, request)
    twin = store.aio(max_workers=2)
    held = twin.lock("k", timeout=0, ttl=60)
    asyncio.run(held.acquire())

    async def child() -> None:
        if name != "memory":  # the memory store's table is the child's own copy
            with pytest.raises(LockTimeoutError):
                await twin.lock("k", timeout=0).acquire()
        async with twin.lock("own", timeout=0):
            pass  # ok: taking the lock with timeout=0 is the assertion (free, not leaked)
        await twin.aclose()

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(20)
        try:
            asyncio.run(child())
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    if name != "memory":
        fresh = again(name, store, tmp_path, request)
        try:
            with pytest.raises(LockTimeoutError):
                fresh.lock("k", timeout=0).acquire()  # still the parent's
        finally:
            fresh.close()
    assert held.held
    asyncio.run(held.release())
    asyncio.run(twin.aclose())


def test_the_redis_twin_refuses_calls_at_once_when_aclose_begins(redis: str, tmp_path: Path) -> None:
    """``aclose()`` refuses new calls at once (docs/howto/async.rst): the Redis twin, awaiting
    its client's close, took them, on a new client nobody closed, and wrote after aclose()."""
    store = RedisJsonBackend(redis, prefix=f"{tmp_path.name}:")

    async def main() -> None:
        twin = store.aio()
        await twin.dump("before", 1)  # this loop's client exists: aclose() awaits its close
        closing = asyncio.ensure_future(twin.aclose())
        await asyncio.sleep(0)  # aclose() began
        with pytest.raises(StoreError):
            await twin.dump("late", 1)
        with pytest.raises(StoreError):
            await twin.lock("late", timeout=0).acquire()
        await closing

    asyncio.run(main())
    fresh = RedisJsonBackend(redis, prefix=f"{tmp_path.name}:")
    try:
        assert "late" not in fresh and fresh.load("before") == 1
        with fresh.lock("late", timeout=0):
            pass  # ok: taking the lock with timeout=0 is the assertion (free, not leaked)
    finally:
        fresh.close()
