"""Attacks on ``@cached`` (#26): what its own tests left out.

Frozen clocks and events only; nothing sleeps to hide a race. Each test
here failed on the code as it was found, or pins a behaviour the README
states and no other test checked.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock

from backends import CacheKeyError, JsonCache, LockTimeoutError, cached


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(tmp_path: Path, clock: FrozenClock) -> Iterator[JsonCache]:
    cache = JsonCache(tmp_path / "cache", timeout=None, clock=clock)
    yield cache
    cache.close()


def _free(store: JsonCache, key: str) -> bool:
    """Whether nobody holds the key's lock (taken and given back at once)."""
    lock = store.lock(key, timeout=0)
    try:
        lock.acquire()
    except LockTimeoutError:
        return False
    lock.release()
    return True


# -- async refreshes ------------------------------------------------------------------------------


def test_an_async_refresh_cancelled_mid_compute_gives_its_lock_back(
    store: JsonCache, clock: FrozenClock
) -> None:
    entered = asyncio.Event()
    runs: list[int] = []

    @cached(store, timeout=60, stale_while_revalidate=30)
    async def f() -> int:
        runs.append(1)
        if len(runs) > 1:
            entered.set()
            await asyncio.Event().wait()  # the refresh hangs until cancelled
        return len(runs)

    async def main() -> None:
        assert await f() == 1
        clock.advance(61)
        assert await f() == 1  # stale: a refresh task starts
        await entered.wait()
        # main ends: asyncio.run cancels the refresh in its body

    asyncio.run(main())
    assert _free(store, f.cache_key())  # the cancelled refresh released the key's lock


def test_an_async_refresh_cancelled_before_it_started_does_not_block_later_refreshes(
    store: JsonCache, clock: FrozenClock
) -> None:
    runs: list[int] = []

    @cached(store, timeout=60, stale_while_revalidate=30)
    async def f() -> int:
        runs.append(1)
        return len(runs)

    async def first() -> None:
        assert await f() == 1
        clock.advance(61)
        assert await f() == 1  # a refresh task is made; the loop ends before it runs

    asyncio.run(first())
    assert runs == [1]

    async def second() -> None:
        assert await f() == 1  # still stale: this loop refreshes it
        assert await f.join(10)
        assert await f() == 2

    asyncio.run(second())
    assert len(runs) == 2


def test_an_async_caller_cancelled_mid_compute_gives_its_lock_back(store: JsonCache) -> None:
    entered = asyncio.Event()

    @cached(store, timeout=60)
    async def f() -> int:
        entered.set()
        await asyncio.Event().wait()
        return 1

    async def main() -> None:
        task = asyncio.create_task(f())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _free(store, f.cache_key())
    assert f.cache_key() not in store


def test_an_async_caller_cancelled_while_it_waits_leaves_no_lock(store: JsonCache) -> None:
    entered, go = asyncio.Event(), asyncio.Event()
    runs: list[int] = []

    @cached(store, timeout=60)
    async def f() -> int:
        runs.append(1)
        entered.set()
        await go.wait()
        return len(runs)

    async def main() -> None:
        holder = asyncio.create_task(f())
        await entered.wait()
        waiters = [asyncio.create_task(f()) for _ in range(4)]
        await asyncio.sleep(0)  # each waiter is in its lock's first try or pause
        waiters[0].cancel()
        waiters[1].cancel()
        go.set()
        assert await holder == 1
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert [type(r) for r in results[:2]] == [asyncio.CancelledError] * 2
        assert results[2:] == [1, 1]

    asyncio.run(main())
    assert runs == [1]
    assert _free(store, f.cache_key())


# -- sync holders ---------------------------------------------------------------------------------


def test_a_keyboard_interrupt_in_the_holder_releases_the_lock(store: JsonCache) -> None:
    @cached(store)
    def f() -> int:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        f()
    assert _free(store, f.cache_key())


def test_waiters_of_a_holder_that_raises_compute_each_in_turn_never_hang(store: JsonCache) -> None:
    entered, go = threading.Event(), threading.Event()
    runs: list[int] = []
    guard = threading.Lock()

    @cached(store, lock_timeout=30)
    def f() -> int:
        with guard:
            runs.append(1)
            first = len(runs) == 1
        if first:
            entered.set()
            assert go.wait(30)
            raise ConnectionError("down")
        return 7

    results: list[Any] = []

    def call() -> None:
        try:
            results.append(f())
        except ConnectionError as exc:
            results.append(exc)

    holder = threading.Thread(target=call)
    holder.start()
    assert entered.wait(10)
    waiters = [threading.Thread(target=call) for _ in range(3)]
    for thread in waiters:
        thread.start()
    go.set()
    for thread in [holder, *waiters]:
        thread.join(30)
    assert sorted(map(repr, results)) == sorted([repr(ConnectionError("down"))] + ["7"] * 3)
    # the first waiter to get the lock computes; the others find its value
    assert len(runs) == 2


# -- keys ------------------------------------------------------------------------------------------


def test_an_int_too_long_for_str_is_a_cache_key_error(store: JsonCache) -> None:
    f = cached(store)(lambda n: n)
    with pytest.raises(CacheKeyError, match="argument n"):
        f(10**5000)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": 1, "y": 2}, {"y": 2, "x": 1}),
        ((1, 2), [1, 2]),
    ],
)
def test_equal_arguments_give_one_key(store: JsonCache, a: Any, b: Any) -> None:
    f = cached(store)(lambda v: 1)
    assert f.cache_key(a) == f.cache_key(b)


@pytest.mark.parametrize(("a", "b"), [(1, 1.0), (1, True), (0.0, -0.0), (1, "1"), ("a", b"a".decode())])
def test_distinct_arguments_give_distinct_keys(store: JsonCache, a: Any, b: Any) -> None:
    f = cached(store)(lambda v: 1)
    if a == b and type(a) is type(b) and str(a) == str(b):
        assert f.cache_key(a) == f.cache_key(b)
    else:
        assert f.cache_key(a) != f.cache_key(b)


# -- cached errors ---------------------------------------------------------------------------------


def test_a_cached_key_error_is_raised_again_with_its_own_message(store: JsonCache) -> None:
    @cached(store, cache_errors=KeyError)
    def f() -> int:
        raise KeyError("user 42")

    with pytest.raises(KeyError) as first:
        f()
    with pytest.raises(KeyError) as again:
        f()
    assert again.value.args == first.value.args
    assert str(again.value) == str(first.value)


# -- counters ---------------------------------------------------------------------------------------


def test_a_stale_value_served_on_error_is_one_outcome_of_its_call(
    store: JsonCache, clock: FrozenClock
) -> None:
    fail = [False]

    @cached(store, timeout=60, stale_if_error=100)
    def f() -> str:
        if fail[0]:
            raise ConnectionError("down")
        return "old"

    f()
    fail[0] = True
    clock.advance(61)
    assert f() == "old"
    stats = f.stats
    assert (stats.hits, stats.misses, stats.stale, stats.computed) == (0, 1, 1, 2)
    assert stats.hits + stats.misses + stats.stale == 2  # two calls, one outcome each


def test_an_async_stale_value_served_on_error_is_one_outcome_of_its_call(
    store: JsonCache, clock: FrozenClock
) -> None:
    fail = [False]

    @cached(store, timeout=60, stale_if_error=100)
    async def f() -> str:
        if fail[0]:
            raise ConnectionError("down")
        return "old"

    async def main() -> None:
        assert await f() == "old"
        fail[0] = True
        clock.advance(61)
        assert await f() == "old"
        clock.advance(100)  # out of the grace: a miss that raises
        with pytest.raises(ConnectionError):
            await f()

    asyncio.run(main())
    stats = f.stats
    assert (stats.hits, stats.misses, stats.stale, stats.computed) == (0, 2, 1, 3)


def test_an_async_holder_past_its_lease_does_not_write_over_the_newer_value(
    store: JsonCache, clock: FrozenClock
) -> None:
    runs: list[int] = []
    entered, go = asyncio.Event(), asyncio.Event()

    @cached(store, lease=10, lock_timeout=30)
    async def f() -> str:
        runs.append(1)
        run = len(runs)
        if run == 1:  # the first holder hangs until told
            entered.set()
            await go.wait()
        return f"run {run}"

    async def main() -> None:
        late = asyncio.ensure_future(f())
        await entered.wait()
        clock.advance(11)  # its lease ran out
        assert await f() == "run 2"  # a waiter took the lock over, computed and stored
        go.set()
        assert await late == "run 1"  # the late holder answers its own caller
        assert await f() == "run 2"  # and did not write its older result over the newer one

    asyncio.run(main())
    assert f.counters.get("cached", "lost").count == 1
