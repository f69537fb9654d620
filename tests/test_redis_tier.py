"""Redis as the cache every machine shares: the ExpiringCache capability, and tiers over S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from clock import FrozenClock
from monitor import RedisCommands
from servers import Faults, Proxy, S3Target, counting
from workers import run_together

import backends
from backends import (
    ExpiringCache,
    JsonCache,
    RedisJsonBackend,
    S3JsonBackend,
    TieredBackend,
    TierStats,
)
from backends.info import utc


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def cache(redis: str, clock: FrozenClock, request: pytest.FixtureRequest) -> Iterator[RedisJsonBackend]:
    store = RedisJsonBackend(redis, prefix=f"tier/{request.node.name}", timeout=60, clock=clock)
    yield store
    store.clear()
    store.close()


@pytest.fixture
def origin(moto: S3Target) -> S3JsonBackend:
    return S3JsonBackend(moto.bucket, prefix="origin", client=moto.client)


def test_a_redis_backend_keeps_entries_with_their_origin_etag(
    cache: RedisJsonBackend, clock: FrozenClock, redis: str
) -> None:
    assert isinstance(cache, ExpiringCache) and cache.keep_expired == 60
    cache.fill("k", {"v": 1}, etag='"abc"')
    entry = cache.peek("k")
    assert entry == backends.Entry({"v": 1}, clock.now + 60, True, '"abc"')
    clock.advance(61)  # expired: absent for every call but peek, which still has the ETag
    assert cache.load("k") is None and "k" not in cache and list(cache) == [] and len(cache) == 0
    assert cache.peek("k") == backends.Entry({"v": 1}, clock.now - 1, False, '"abc"')
    assert cache.renew("k", '"other"') is False  # another version: not renewed
    assert cache.renew("k", '"abc"') is True and cache["k"] == {"v": 1}
    assert cache.expires("k") == utc(clock.now + 60)
    cache["k"] = {"v": 2}  # a plain write drops the origin's ETag with the value it described
    entry = cache.peek("k")
    assert entry is not None and entry.etag is None and cache.renew("k", '"abc"') is False
    raw = redis_py.Redis.from_url(redis)
    raw.set(cache.prefix + "k", b"{not json")
    with pytest.raises(backends.CorruptValueError):  # fresh and corrupt: an error, as load
        cache.peek("k")
    clock.advance(61)
    assert cache.peek("k") is None  # expired and corrupt: no entry (a tier loads it afresh)
    cache.fill("gone", 1, etag='"e"')
    assert cache.delete("gone") and cache.peek("gone") is None and cache.renew("gone", '"e"') is False
    assert raw.exists(cache.prefix + "\x7fetag/gone") == 0
    raw.close()


def test_reads_that_must_check_deadlines_take_the_same_round_trips(
    cache: RedisJsonBackend, commands: RedisCommands
) -> None:
    data = {f"k/{i:04d}": i for i in range(2500)}
    cache.dump_many(data)
    cache.load("k/0001"), "k/0001" in cache, cache.load_many(["k/0001"])  # scripts loaded once
    seen = {}
    for name, call in {
        "load": lambda: cache.load("k/0001") == 1,
        "in": lambda: "k/0001" in cache,
        "load_many": lambda: cache.load_many(data) == data,
    }.items():
        commands.reset()
        assert call()
        seen[name] = commands.count()
    assert seen == {"load": {"evalsha": 1}, "in": {"evalsha": 1}, "load_many": {"evalsha": 3}}


def test_keep_expired_is_checked_and_shown(redis: str) -> None:
    assert RedisJsonBackend(redis).keep_expired == 0
    assert RedisJsonBackend(redis, timeout=30).keep_expired == 30
    assert "keep_expired=5" in repr(RedisJsonBackend(redis, timeout=30, keep_expired=5))
    from_url = backends.open(f"{redis}?timeout=30&keep_expired=5")
    assert isinstance(from_url, RedisJsonBackend) and (from_url.timeout, from_url.keep_expired) == (30, 5)
    for bad in (-1, None, "1", True, float("nan")):
        with pytest.raises(ValueError, match="keep_expired"):
            RedisJsonBackend(redis, keep_expired=bad)  # type: ignore[arg-type]


def test_a_shared_tier_hits_with_one_round_trip_and_revalidates_with_a_304(
    cache: RedisJsonBackend,
    origin: S3JsonBackend,
    moto: S3Target,
    clock: FrozenClock,
    commands: RedisCommands,
) -> None:
    tier = TieredBackend(cache, origin)
    origin["warm"] = origin["k"] = {"name": "Ada"}
    etag = origin.stat("k").etag  # type: ignore[union-attr]
    tier["warm"]  # every script loaded once
    clock.advance(61)
    tier["warm"]
    seen: dict[str, Any] = {}
    with counting(moto.client) as requests:
        for name, advance in (("miss", 0), ("hit", 0), ("revalidation", 61)):
            clock.advance(advance)
            requests.clear()
            commands.reset()
            assert tier["k"] == {"name": "Ada"}
            seen[name] = (dict(requests.count()), commands.count())
    # a miss: peek, lock, peek again, renew the lease, fill, release; a
    # revalidation renews the entry holding that ETag, with no lease needed
    assert seen == {
        "miss": ({"GetObject": 1}, {"evalsha": 6}),
        "hit": ({}, {"evalsha": 1}),
        "revalidation": ({"GetObject": 1}, {"evalsha": 5}),
    }
    assert tier.stats == TierStats(hits=1, misses=2, revalidations=2, origin_requests=4)
    assert cache.peek("k") == backends.Entry({"name": "Ada"}, clock.now + 60, True, etag)
    origin["k"] = {"name": "Grace"}  # changed around the tier: served once the entry expires
    assert tier["k"] == {"name": "Ada"}
    clock.advance(61)
    assert tier["k"] == {"name": "Grace"} and cache["k"] == {"name": "Grace"}
    origin.delete("k")
    clock.advance(61)
    assert tier.load("k") is None and cache.peek("k") is None


def test_a_shared_tier_serves_stale_while_another_machine_refreshes(
    cache: RedisJsonBackend, origin: S3JsonBackend, moto: S3Target, clock: FrozenClock
) -> None:
    tier = TieredBackend(cache, origin, stale_while_revalidate=30)
    origin["k"] = "v1"
    assert tier["k"] == "v1"
    origin["k"] = "v2"
    clock.advance(70)  # expired 10 s ago, within the stale window
    other = RedisJsonBackend(cache.server_url or "", prefix=cache.prefix[:-1], timeout=60, clock=clock)
    with other.lock("k", ttl=30), counting(moto.client) as requests:  # another machine is refreshing
        assert tier["k"] == "v1"
        assert requests.count() == {}
    assert tier.stats.stale == 1
    assert tier["k"] == "v2"  # the lock is free: this caller refreshes
    clock.advance(100)  # past the stale window: wait for the refresh, never older than that
    origin["k"] = "v3"
    assert tier["k"] == "v3"
    other.close()


def test_writes_through_a_shared_tier_reach_every_machine(
    cache: RedisJsonBackend, origin: S3JsonBackend, clock: FrozenClock, tmp_path: Path
) -> None:
    url, prefix = cache.server_url or "", cache.prefix[:-1]
    machines = [
        TieredBackend(
            JsonCache(tmp_path / f"m{i}", timeout=5, clock=clock),
            TieredBackend(RedisJsonBackend(url, prefix=prefix, timeout=60, clock=clock), origin),
        )
        for i in range(2)
    ]
    machines[0]["k"] = {"v": 1}
    assert machines[1]["k"] == {"v": 1}  # filled from Redis, not from S3
    assert machines[1].origin.stats == TierStats(hits=1)  # type: ignore[attr-defined]
    machines[1]["k"] = {"v": 2}  # the other machine's disk keeps {"v": 1} until it expires
    assert cache["k"] == origin["k"] == {"v": 2} and machines[0]["k"] == {"v": 1}
    clock.advance(6)
    assert machines[0]["k"] == {"v": 2}
    for machine in machines:
        machine.origin.cache.close()  # type: ignore[attr-defined]


@pytest.fixture
def slow_s3(moto_server: S3Target) -> Iterator[tuple[Proxy, str]]:
    """S3 behind a proxy that adds 300 ms to every request: concurrent misses overlap."""
    S3JsonBackend(moto_server.bucket, prefix="shared", client=moto_server.client)["hot"] = {"n": 1}
    with Proxy(moto_server.endpoint_url or "", Faults(latency=0.3)) as proxy:
        yield proxy, f"s3:{proxy.endpoint} {moto_server.bucket} shared"
    S3JsonBackend(moto_server.bucket, prefix="shared", client=moto_server.client).clear()


@pytest.mark.slow
def test_four_processes_on_three_levels_send_one_get_to_s3(
    redis: str, tmp_path: Path, slow_s3: tuple[Proxy, str]
) -> None:
    """Each process is a machine: its own disk cache, then Redis (shared), then S3."""
    proxy, where = slow_s3
    shared = f"{redis}?prefix=three-levels&timeout=300"
    argvs = [["tier3", str(tmp_path / f"machine{i}"), shared, where, "2"] for i in range(4)]
    reports = []
    for report, err in run_together(argvs):
        assert not err, err
        reports.append(report)
    assert [r["values"] for r in reports] == [[{"n": 1}] * 2] * 4
    assert proxy.requests == {"GET": 1}  # one GET for 8 loaders on 4 machines
    assert sum(r["shared"]["origin_requests"] for r in reports) == 1
    assert sum(r["shared"]["hits"] for r in reports) == 3  # the other machines found it in Redis
    assert sum(r["disk"]["misses"] for r in reports) == 4  # one load per machine left its disk
    RedisJsonBackend(redis, prefix="three-levels").clear()
