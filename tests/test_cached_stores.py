"""``@cached`` (#26) on every store case, its async twin, its request budget over S3, lost Redis replies.

The parity case runs one scenario on every case of conftest.CASES: a JSON
(or object) store keeps the decorator's contract, a text or raw store is
refused at decoration.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from redis_proxy import LosingProxy
from servers import S3Target, counting

from backends import (
    FileSystemJsonBackend,
    JsonCache,
    MemoryCache,
    RedisJsonBackend,
    S3JsonBackend,
    StoreError,
    TieredBackend,
    VolatileBackend,
    cached,
)
from backends.memo import CachedStats
from backends.redis.locks import _ACQUIRE, _RELEASE
from backends.redis.scripts import SCRIPTS
from backends.testing import StoreCase


class Counted:
    """A body that counts its runs and returns them."""

    def __init__(self) -> None:
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self, x: Any) -> Any:
        with self._lock:
            self.runs += 1
            return {"x": x, "run": self.runs}


def test_the_decorator_keeps_its_contract_on_every_store(case: StoreCase, tmp_path: Path) -> None:
    with case.opened(tmp_path / "store") as store:
        if case.family.name not in ("json", "object"):
            with pytest.raises(TypeError, match="JSON values"):
                cached(store)
            return
        clock = FrozenClock()
        body = Counted()
        f = cached(store, timeout=60, stale_while_revalidate=30, clock=clock)(body)
        assert f(1) == {"x": 1, "run": 1}
        assert f(1) == {"x": 1, "run": 1}
        assert f(x=2) == {"x": 2, "run": 2}
        assert f.stats == CachedStats(hits=1, misses=2, computed=2)
        assert f.invalidate(1) is True and f.invalidate(1) is False
        assert f(1)["run"] == 3
        assert f.refresh(1)["run"] == 4 and f(1)["run"] == 4
        clock.advance(61)  # stale: served at once, refreshed once in the background
        assert f(1)["run"] == 4
        assert f.join(30)
        assert f(1)["run"] == 5 and body.runs == 5
        clock.advance(100)  # past the grace: the caller computes
        assert f(1)["run"] == 6
        store.dump(f.cache_key(1), ["foreign"])  # another program's value under the key
        assert f(1)["run"] == 7 and f(1)["run"] == 7
        assert f.counters.get("cached", "foreign").count == 1
        kinds = cached(store, cache_none=True, cache_errors=KeyError, prefix="neg/", clock=clock)

        @kinds
        def none() -> None:
            return None

        @kinds
        def missing() -> None:
            raise KeyError("k")

        assert none() is None and none() is None and none.stats.computed == 1
        for _ in range(2):
            with pytest.raises(KeyError):
                missing()
        assert missing.stats.computed == 1


def test_an_async_function_through_the_twin(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = JsonCache(tmp_path, timeout=None, clock=clock)
    runs: list[int] = []
    go = asyncio.Event()

    @cached(store, timeout=60, stale_while_revalidate=30)
    async def f(x: int) -> dict[str, int]:
        runs.append(x)
        await go.wait()
        return {"x": x, "run": len(runs)}

    async def main() -> None:
        callers = [asyncio.create_task(f(1)) for _ in range(20)]
        await asyncio.sleep(0.01)
        go.set()
        assert await asyncio.gather(*callers) == [{"x": 1, "run": 1}] * 20
        assert runs == [1]
        clock.advance(61)
        go.clear()
        assert await asyncio.gather(*(f(1) for _ in range(5))) == [{"x": 1, "run": 1}] * 5
        go.set()
        assert await f.join(10)
        assert await f(1) == {"x": 1, "run": 2}
        assert await f.invalidate(1) is True
        assert await f.refresh(1) == {"x": 1, "run": 3}

    asyncio.run(main())
    assert f.stats == CachedStats(hits=20, misses=1, stale=5, computed=3)


def test_one_async_function_from_two_event_loops_in_two_threads(tmp_path: Path) -> None:
    store = JsonCache(tmp_path)
    runs: list[int] = []
    start = threading.Barrier(2)

    @cached(store)
    async def f(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.05)  # the other loop's callers wait on the key's lock meanwhile
        return x * 10

    results: list[list[int]] = []

    def loop() -> None:
        async def main() -> list[int]:
            return list(await asyncio.gather(*(f(7) for _ in range(5))))

        start.wait()
        results.append(asyncio.run(main()))

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [[70] * 5, [70] * 5]
    assert runs == [7]


def test_an_async_function_after_the_store_closed_gives_its_typed_error(tmp_path: Path) -> None:
    store = JsonCache(tmp_path)

    @cached(store)
    async def f() -> int:
        return 1

    async def main() -> None:
        assert await f() == 1
        store.close()
        with pytest.raises(StoreError, match="closed"):
            await f()

    asyncio.run(main())


# -- the request budget over S3 through a tier -------------------------------------------------


@pytest.fixture
def s3_tier(tmp_path: Path, moto: S3Target) -> Iterator[TieredBackend]:
    origin = S3JsonBackend(moto.bucket, prefix="budget", client=moto.client)
    tier = TieredBackend(MemoryCache(timeout=600, clock=FrozenClock()), origin)
    yield tier
    tier.close()


def test_a_hit_over_s3_through_a_tier_sends_nothing_and_a_miss_its_budget(
    s3_tier: TieredBackend, moto: S3Target
) -> None:
    f = cached(s3_tier, timeout=60)(Counted())
    with counting(moto.client) as requests:
        assert f(1)["run"] == 1
    # The look (GET), the lock (create-only PUT), the look again under it (GET), the
    # value (PUT) and the release (DELETE): 1 GET + 1 PUT plus the lock's three.
    assert requests.count() == {"GetObject": 2, "PutObject": 2, "DeleteObject": 1}
    with counting(moto.client) as requests:
        assert f(1)["run"] == 1
    assert requests.count() == {}


# -- 1. lost replies ---------------------------------------------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def test_lost_redis_replies_still_run_the_body_once_and_answer_every_caller(
    redis: str, request: pytest.FixtureRequest
) -> None:
    with LosingProxy(_port(redis)) as proxy:
        store = RedisJsonBackend(proxy.url, prefix=f"cached/{request.node.name}")
        try:
            body = Counted()
            f = cached(store, timeout=300)(body)
            proxy.lose_script(_ACQUIRE)  # the lock taken, its answer lost
            proxy.lose_script(SCRIPTS["put"])  # the value stored (a plain dump: "put"), its answer lost
            proxy.lose_script(_RELEASE)  # the lock released, its answer lost
            proxy.lose_script(SCRIPTS["read"])  # the first look's answer lost (every read is a script)
            results = []
            threads = [threading.Thread(target=lambda: results.append(f(1))) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert results == [{"x": 1, "run": 1}] * 8
            assert body.runs == 1
            assert proxy.lost == 4
            lock = store.lock(f.cache_key(1), timeout=0)
            assert lock.try_acquire()  # released: free again at once
            lock.release()
        finally:
            store.clear()
            store.close()


# -- per-entry timeouts through a tier ---------------------------------------------------------------


def test_through_a_tier_the_cache_entry_lives_for_the_timeout_and_the_grace(tmp_path: Path) -> None:
    clock = FrozenClock()
    tier = TieredBackend(MemoryCache(timeout=3600, clock=clock), FileSystemJsonBackend(tmp_path))
    f = cached(tier, timeout=60, stale_while_revalidate=30, stale_if_error=10, clock=clock)(Counted())
    assert f(1)["run"] == 1
    deadline = tier.cache.expires(f.cache_key(1))
    assert deadline is not None and deadline.timestamp() == pytest.approx(clock() + 90)
    forever = cached(tier, timeout=None, prefix="forever/", clock=clock)(Counted())
    forever(1)
    assert tier.cache.expires(forever.cache_key(1)) is None
    plain = TieredBackend(VolatileBackend(), FileSystemJsonBackend(tmp_path / "plain"))
    g = cached(plain, timeout=60)(Counted())  # a cache without expiry: no per-entry timeout given
    assert g(1) == g(1) == {"x": 1, "run": 1}
