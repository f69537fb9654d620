"""Every expiring cache used on its own tells and counts its hits and misses (#24).

The folder and memory caches are in ``test_local_attacks.py``; here the
stores that are caches when given a ``timeout``: SQLite and Redis, sync and
through the Redis twin's native loads. A store without a timeout counts
nothing, and a tier over such a cache tells each lookup once (its own).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock

from backends import MemoryCache, RedisJsonBackend, SqliteJsonBackend, TieredBackend, VolatileBackend
from backends.events import MemorySink


def story(sink: MemorySink) -> list[tuple[str | None, str]]:
    return [(event.key, event.outcome) for event in sink if event.operation == "cache"]


Make = Callable[..., Any]


@pytest.fixture(params=["sqlite", "redis"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    made: list[Any] = []

    def build(**options: Any) -> Any:
        if request.param == "sqlite":
            store: Any = SqliteJsonBackend(tmp_path / f"{uuid.uuid4().hex}.db", **options)
        else:
            url = request.getfixturevalue("redis")
            store = RedisJsonBackend(url, prefix=f"counts-{uuid.uuid4().hex}", **options)
        made.append(store)
        return store

    yield build
    for store in made:
        store.clear()
        store.close()


def test_a_store_with_a_timeout_tells_and_counts_its_hits_and_misses(make: Make, sink: MemorySink) -> None:
    clock = FrozenClock()
    cache = make(timeout=10, clock=clock)
    cache["k"] = 1
    sink.clear()
    assert cache["k"] == 1
    assert cache.get("absent") is None
    clock.advance(10)
    assert cache.load("k") is None  # expired: a miss
    cache["k2"] = 2
    assert cache.load_many(["k2", "absent"]) == {"k2": 2}
    assert "k2" in cache  # `in` is no load: not counted
    assert story(sink) == [("k", "hit"), ("absent", "miss"), ("k", "miss"), ("k2", "hit"), ("absent", "miss")]
    assert all(e.backend == repr(cache) for e in sink if e.operation == "cache")
    assert (cache.stats.hits, cache.stats.misses) == (2, 3)


def test_a_store_without_a_timeout_counts_nothing(make: Make, sink: MemorySink) -> None:
    store = make()
    store["k"] = 1
    assert (store["k"], store.get("absent"), store.load_many(["k", "x"])) == (1, None, {"k": 1})
    assert story(sink) == []
    assert (store.stats.hits, store.stats.misses) == (0, 0)


def test_a_tier_over_such_a_cache_tells_each_lookup_once(make: Make, sink: MemorySink) -> None:
    cache = make(timeout=60)
    tier = TieredBackend(cache, VolatileBackend())
    tier["k"] = 1
    sink.clear()
    assert tier.load_many(["k", "absent"]) == {"k": 1}
    told = story(sink)
    assert sorted(told) == sorted(set(told)), told  # no lookup told twice
    assert (cache.stats.hits, cache.stats.misses) == (0, 0)  # the tier's, not the cache's


def test_the_redis_twins_native_loads_count_too(redis: str, sink: MemorySink) -> None:
    cache = RedisJsonBackend(redis, prefix=f"counts-{uuid.uuid4().hex}", timeout=60)
    cache["k"] = 1

    async def loads() -> list[Any]:
        twin = cache.aio()
        try:
            together = await asyncio.gather(twin.load("k"), twin.load("absent"))
            return [*together, await twin.load_many(["k", "absent"])]
        finally:
            await twin.clear()
            await twin.aclose()  # closes the backend too

    try:
        sink.clear()
        assert asyncio.run(loads()) == [1, None, {"k": 1}]
        assert sorted(story(sink)) == sorted(
            [("k", "hit"), ("absent", "miss"), ("k", "hit"), ("absent", "miss")]
        )
        assert (cache.stats.hits, cache.stats.misses) == (2, 2)
    finally:
        cache.close()


def test_a_memory_cache_and_a_sqlite_cache_count_alike(tmp_path: Path) -> None:
    caches = [MemoryCache(timeout=60), SqliteJsonBackend(tmp_path / "kv.db", timeout=60)]
    for cache in caches:
        cache["k"] = 1
        cache.load_many(["k", "x", "y"])
        cache.get("k")
    assert {(c.stats.hits, c.stats.misses) for c in caches} == {(2, 2)}
