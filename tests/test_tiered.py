"""TieredBackend: request counts, single flight across threads and processes, revalidation."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from servers import Faults, Proxy, S3Target, counting
from workers import run_together

import backends
from backends import JsonCache, MemoryCache, S3JsonBackend, TieredBackend, TierStats, VolatileBackend


@dataclass
class Gets:
    """Every GetObject attempt a client makes: its If-None-Match, status and body size."""

    seen: list[tuple[str | None, int, int]] = field(default_factory=list)
    _condition: str | None = None

    def before_send(self, request: Any, **kwargs: Any) -> None:
        value = request.headers.get("If-None-Match")
        self._condition = value.decode() if isinstance(value, bytes) else value

    def after(self, response: Any, **kwargs: Any) -> None:
        if response is not None:
            http = response[0]
            # The header, not the body: reading the stream here would take it from botocore.
            self.seen.append((self._condition, http.status_code, int(http.headers.get("content-length", 0))))


@pytest.fixture
def gets(moto: S3Target) -> Iterator[Gets]:
    log = Gets()
    events = moto.client.meta.events
    events.register_first("before-send.s3.GetObject", log.before_send)
    events.register_first("needs-retry.s3.GetObject", log.after)
    yield log
    events.unregister("before-send.s3.GetObject", log.before_send)
    events.unregister("needs-retry.s3.GetObject", log.after)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(params=["disk", "memory"])
def tier(request: pytest.FixtureRequest, tmp_path: Path, moto: S3Target, clock: FrozenClock) -> TieredBackend:
    """S3 behind a cache on disk, and behind the in-process cache: the tier treats both alike."""
    origin = S3JsonBackend(moto.bucket, prefix="tier", client=moto.client)
    if request.param == "disk":
        return TieredBackend(JsonCache(tmp_path / "cache", timeout=60, clock=clock), origin)
    return TieredBackend(MemoryCache(timeout=60, clock=clock), origin)


def test_a_hit_sends_nothing_and_a_miss_one_get(tier: TieredBackend, moto: S3Target, gets: Gets) -> None:
    tier.origin["users/42"] = {"name": "Ada"}
    with counting(moto.client) as requests:
        assert tier["users/42"] == {"name": "Ada"}
        assert requests.count() == {"GetObject": 1}
        requests.clear()
        for _ in range(100):
            assert tier["users/42"] == {"name": "Ada"}
        assert tier.load("nope", "d") == "d"
        assert requests.count() == {"GetObject": 1}  # only the absent key went to S3
    assert tier.stats == TierStats(hits=100, misses=2, origin_requests=2)
    assert gets.seen == [(None, 200, len(b'{"name":"Ada"}')), (None, 404, gets.seen[1][2])]


def test_an_expired_entry_is_revalidated_with_one_conditional_get(
    tier: TieredBackend, moto: S3Target, gets: Gets, clock: FrozenClock
) -> None:
    tier.origin["k"] = [1, 2, 3]
    etag = tier.origin.stat("k").etag  # type: ignore[attr-defined]
    assert tier["k"] == [1, 2, 3]
    clock.advance(61)
    gets.seen.clear()
    assert tier["k"] == [1, 2, 3]
    assert gets.seen == [(etag, 304, 0)]  # If-None-Match, 304 Not Modified, no body
    assert tier.stats == TierStats(hits=0, misses=1, revalidations=1, origin_requests=2)
    assert tier.cache.expires("k").timestamp() == pytest.approx(clock.now + 60)  # type: ignore[attr-defined]
    assert tier["k"] == [1, 2, 3]
    assert tier.stats.hits == 1 and len(gets.seen) == 1


def test_a_changed_or_deleted_origin_value_replaces_the_expired_entry(
    tier: TieredBackend, gets: Gets, clock: FrozenClock
) -> None:
    tier.origin["k"] = "v1"
    assert tier["k"] == "v1"
    tier.origin["k"] = "v2"  # written by someone else, around the tier
    assert tier["k"] == "v1"  # still fresh in the cache
    clock.advance(61)
    assert tier["k"] == "v2"
    assert gets.seen[-1][1:] == (200, len(b'"v2"'))
    tier.origin.delete("k")
    clock.advance(61)
    assert tier.load("k") is None
    assert "k" not in tier.cache and tier.cache.peek("k") is None  # type: ignore[attr-defined]


def test_writes_go_to_the_origin_then_the_cache(tier: TieredBackend, moto: S3Target) -> None:
    tier["k"] = {"v": 1}
    assert tier.origin["k"] == {"v": 1} and tier.cache["k"] == {"v": 1}
    with counting(moto.client) as requests:
        assert tier["k"] == {"v": 1}
        assert requests.count() == {}
    assert tier.dump("k", 2, if_absent=True) is False
    assert tier["k"] == {"v": 1}
    assert tier.delete("k") is True
    assert "k" not in tier.origin and "k" not in tier.cache
    assert tier.delete("k") is False


def test_len_keys_items_and_list_come_from_the_origin(tier: TieredBackend) -> None:
    tier.origin.update({"a": 1, "b/c": 2})
    tier.cache["stale-only"] = 3  # the cache is not the truth
    assert len(tier) == 2 and sorted(tier) == ["a", "b/c"]
    assert dict(tier.items()) == {"a": 1, "b/c": 2}
    assert sorted(tier.list()) == ["a", "b/"]


def test_load_many_takes_hits_from_the_cache_and_the_rest_from_the_origin(
    tier: TieredBackend, moto: S3Target
) -> None:
    tier.origin.update({f"k{i}": i for i in range(10)})
    tier.load_many(["k0", "k1"])
    with counting(moto.client) as requests:
        assert tier.load_many([f"k{i}" for i in range(12)]) == {f"k{i}": i for i in range(10)}
        assert requests.count() == {"GetObject": 10}  # k2..k9 and the absent k10, k11
    assert tier.stats.hits == 2
    assert sorted(tier.cache) == [f"k{i}" for i in range(10)]


def test_a_failed_origin_write_drops_the_cache_entry(tmp_path: Path, moto_server: S3Target) -> None:
    # Every response lost: S3 applies the write, the client raises after its
    # retries. The cache must not go on serving the old value.
    cache = JsonCache(tmp_path / "cache")
    direct = S3JsonBackend(moto_server.bucket, prefix="fail", client=moto_server.client)
    direct["k"] = "old"
    direct["gone"] = "old"
    faults = Faults()
    with Proxy(moto_server.endpoint_url or "", faults) as proxy:
        options = {**moto_server.options(), "endpoint_url": proxy.endpoint, "retries": 1}
        tier = TieredBackend(cache, S3JsonBackend(moto_server.bucket, prefix="fail", **options))
        assert tier["k"] == "old" and tier["gone"] == "old"
        assert sorted(cache) == ["gone", "k"]
        faults.lose = 1.0
        with pytest.raises(backends.StoreUnavailableError):
            tier["k"] = "new"
        with pytest.raises(backends.StoreUnavailableError):
            tier.delete("gone")
        assert proxy.injected["lose"] >= 2
        assert direct["k"] == "new"  # applied although unanswered
        assert list(cache) == []  # so the cache serves neither old value
        faults.lose = 0.0
        assert tier["k"] == "new"
        assert tier.load("gone") == direct.load("gone")
    direct.clear()


def test_a_failed_cache_write_after_the_origin_write_leaves_no_stale_entry(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "cache")
    tier = TieredBackend(cache, backends.FileSystemJsonBackend(tmp_path / "origin"))
    tier["a/b"] = "old"
    (tmp_path / "elsewhere").mkdir()
    os.rename(cache.root / "a+", tmp_path / "elsewhere" / "a+")
    os.symlink(tmp_path / "elsewhere" / "a+", cache.root / "a+")  # the cache refuses to write through it
    with pytest.raises(backends.StoreError, match="symlink"):
        tier["a/b"] = "new"
    assert tier.origin["a/b"] == "new"
    assert "a/b" not in cache
    with pytest.raises(backends.StoreError, match="symlink"):
        tier["a/b"]  # a cache that cannot be filled is an error too, never silently bypassed


# -- single flight ----------------------------------------------------------------------


@pytest.fixture
def slow_origin(moto_server: S3Target) -> Iterator[tuple[Proxy, dict[str, Any]]]:
    """S3 behind a proxy that adds 300 ms to every request: concurrent misses overlap."""
    S3JsonBackend(moto_server.bucket, prefix="flight", client=moto_server.client)["hot"] = {"n": 1}
    with Proxy(moto_server.endpoint_url or "", Faults(latency=0.3)) as proxy:
        yield proxy, {**moto_server.options(), "endpoint_url": proxy.endpoint}
    S3JsonBackend(moto_server.bucket, prefix="flight", client=moto_server.client).clear()


def test_sixteen_threads_missing_one_key_cause_one_origin_load(
    tmp_path: Path, moto_server: S3Target, slow_origin: tuple[Proxy, dict[str, Any]]
) -> None:
    proxy, options = slow_origin
    tier = TieredBackend(JsonCache(tmp_path), S3JsonBackend(moto_server.bucket, prefix="flight", **options))
    start = threading.Barrier(16)
    values: list[Any] = []

    def load() -> None:
        start.wait()
        values.append(tier.load("hot"))

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert values == [{"n": 1}] * 16
    assert proxy.requests == {"GET": 1}
    assert tier.stats == TierStats(hits=15, misses=1, origin_requests=1)


@pytest.mark.slow
def test_four_processes_missing_one_key_cause_one_origin_load(
    tmp_path: Path, moto_server: S3Target, slow_origin: tuple[Proxy, dict[str, Any]]
) -> None:
    proxy, _ = slow_origin
    where = f"s3:{proxy.endpoint} {moto_server.bucket} flight"
    reports = [report for report, _ in run_together([["tier", str(tmp_path), where, "4"]] * 4)]
    assert [r["values"] for r in reports] == [[{"n": 1}] * 4] * 4
    assert sum(r["origin_requests"] for r in reports) == 1
    assert sum(r["hits"] for r in reports) == 15
    assert proxy.requests == {"GET": 1}


def test_three_levels_a_hit_at_each_level_costs_nothing_below_it(
    tmp_path: Path, moto: S3Target, clock: FrozenClock
) -> None:
    s3 = S3JsonBackend(moto.bucket, prefix="three", client=moto.client)
    disk = TieredBackend(JsonCache(tmp_path / "disk", timeout=600, clock=clock), s3)
    tier = TieredBackend(MemoryCache(timeout=60, clock=clock), disk)
    s3["k"] = {"v": 1}
    with counting(moto.client) as requests:
        assert tier["k"] == {"v": 1}  # a miss at both levels: one GET
        assert requests.count() == {"GetObject": 1}
        assert tier.stats == disk.stats == TierStats(misses=1, origin_requests=1)
        requests.clear()
        for _ in range(10):  # memory hits: the disk level is not asked
            assert tier["k"] == {"v": 1}
        assert tier.stats.hits == 10 and disk.stats == TierStats(misses=1, origin_requests=1)
        clock.advance(61)  # memory expired, disk fresh: a disk hit, no request
        assert tier["k"] == {"v": 1}
        assert requests.count() == {}
        assert tier.stats.origin_requests == 2 and disk.stats.hits == 1
        clock.advance(600)  # both expired: the disk level revalidates with a 304
        assert tier["k"] == {"v": 1}
        assert requests.count() == {"GetObject": 1}
        assert disk.stats.revalidations == 1 and disk.stats.origin_requests == 2
    tier["k"] = {"v": 2}  # a write goes through every level
    assert tier.cache["k"] == disk.cache["k"] == s3["k"] == {"v": 2}
    assert tier.delete("k") and "k" not in tier.cache and "k" not in disk.cache and "k" not in s3


def test_any_cache_with_the_capability_expires_in_a_tier(tmp_path: Path, clock: FrozenClock) -> None:
    """The tier asks for the ExpiringCache methods, not a class: a third party's cache takes part."""

    class Recording(MemoryCache):
        def __init__(self) -> None:
            super().__init__(timeout=10, clock=clock)
            self.calls: list[str] = []

        def peek(self, key: str) -> backends.Entry[Any] | None:
            self.calls.append("peek")
            return super().peek(key)

        def fill(self, key: str, value: Any, *, etag: str | None = None) -> None:
            self.calls.append("fill")
            super().fill(key, value, etag=etag)

    cache = Recording()
    assert isinstance(cache, backends.ExpiringCache)
    assert not isinstance(VolatileBackend(), backends.ExpiringCache)
    tier = TieredBackend(cache, backends.FileSystemJsonBackend(tmp_path))
    tier.origin["k"] = 1
    assert tier["k"] == 1 and tier["k"] == 1
    assert cache.calls == ["peek", "peek", "fill", "peek"]
    clock.advance(11)
    assert "k" not in cache and tier["k"] == 1  # expired: loaded again from the origin
    assert tier.stats.origin_requests == 2


def test_a_memory_cache_also_loads_once_for_many_threads(tmp_path: Path) -> None:
    origin = backends.FileSystemJsonBackend(tmp_path)
    origin["k"] = 1
    tier = TieredBackend(VolatileBackend(), origin)
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        assert tier["k"] == 1

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tier.stats.origin_requests == 1 and tier.stats.hits == 7
    assert tier.cache["k"] == 1


# -- stale while revalidate -----------------------------------------------------------------


def test_stale_while_revalidate_serves_the_old_value_while_one_caller_refreshes(
    tmp_path: Path, moto: S3Target, gets: Gets, clock: FrozenClock
) -> None:
    origin = S3JsonBackend(moto.bucket, prefix="swr", client=moto.client)
    cache = JsonCache(tmp_path, timeout=10, clock=clock)
    tier = TieredBackend(cache, origin, stale_while_revalidate=30)
    origin["k"] = "v1"
    assert tier["k"] == "v1"
    origin["k"] = "v2"
    clock.advance(11)
    gets.seen.clear()
    with cache.lock("k"):  # another caller is refreshing "k"
        assert tier["k"] == "v1"  # served stale at once, no request
        assert gets.seen == []
    assert tier.stats.stale == 1
    assert tier["k"] == "v2"  # this caller refreshes
    assert len(gets.seen) == 1
    clock.advance(11 + 30)  # past the grace period: no stale value is served
    origin["k"] = "v3"
    impatient = TieredBackend(cache, origin, stale_while_revalidate=30, lease=0.05)
    with cache.lock("k"):  # a refresh that outlives the lease: the caller waits it out, then loads
        assert impatient["k"] == "v3"
    assert impatient.stats == TierStats(misses=1, origin_requests=1)


def test_tier_arguments_are_checked(tmp_path: Path) -> None:
    cache, origin = VolatileBackend(), VolatileBackend()
    with pytest.raises(ValueError, match="lease"):
        TieredBackend(cache, origin, lease=0)
    with pytest.raises(ValueError, match="stale_while_revalidate"):
        TieredBackend(cache, origin, stale_while_revalidate=-1)
    assert TieredBackend(cache, origin).purge() == 0


# -- per-entry timeouts (#26) ----------------------------------------------------


def test_dump_with_a_timeout_sets_the_cache_entrys_and_the_origin_keeps_the_value(
    tier: TieredBackend, moto: S3Target, clock: FrozenClock
) -> None:
    assert tier.dump("users/42", {"name": "Ada"}, timeout=30) is True
    assert tier.cache.expires("users/42").timestamp() == pytest.approx(clock.now + 30)  # type: ignore[attr-defined]
    tier.dump("users/43", {"name": "Bob"})  # the cache's default: 60 s
    clock.advance(31)
    assert "users/42" not in tier.cache and "users/43" in tier.cache
    with counting(moto.client) as requests:
        assert tier["users/42"] == {"name": "Ada"}  # the origin still has it: loaded again, refilled
        assert tier["users/43"] == {"name": "Bob"}
        assert requests.count() == {"GetObject": 1}
    assert tier.dump("never", 1, timeout=None) and tier.cache.expires("never") is None  # type: ignore[attr-defined]
    assert tier.dump("gone", 2, timeout=0) and "gone" not in tier.cache and tier.origin["gone"] == 2


def test_dump_with_a_timeout_through_the_async_twin(tier: TieredBackend, clock: FrozenClock) -> None:
    import asyncio

    async def main() -> None:
        twin = tier.aio()
        assert await twin.dump("k", [1], timeout=5) is True
        assert await twin.load("k") == [1]

    asyncio.run(main())
    assert tier.cache.expires("k").timestamp() == pytest.approx(clock.now + 5)  # type: ignore[attr-defined]


def test_dump_if_absent_with_a_timeout_writes_nothing_when_present(tier: TieredBackend) -> None:
    tier["k"] = "first"
    assert tier.dump("k", "second", if_absent=True, timeout=5) is False
    assert tier["k"] == "first" and tier.origin["k"] == "first"


@pytest.mark.parametrize("timeout", [-1, float("nan"), "30", True, 10**12])
def test_a_bad_timeout_is_refused_before_anything_is_written(tier: TieredBackend, timeout: object) -> None:
    tier["k"] = "old"
    with pytest.raises(ValueError, match="timeout"):
        tier.dump("k", "new", timeout=timeout)  # type: ignore[arg-type]
    assert tier["k"] == "old" and tier.origin["k"] == "old"


def test_a_timeout_for_a_cache_without_expiry_is_a_type_error_before_any_write() -> None:
    tier = TieredBackend(VolatileBackend(), VolatileBackend())
    with pytest.raises(TypeError, match="keeps no per-entry timeouts"):
        tier.dump("k", 1, timeout=30)
    assert "k" not in tier.origin and "k" not in tier.cache
    tier.dump("k", 1)  # without a timeout, as always
    assert tier.cache["k"] == 1
