"""Events: what each call, cache and lock emits, subscriptions, sinks, and what never appears."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from servers import CREDENTIALS, S3Target

import backends
from backends import FileSystemJsonBackend, JsonCache, S3JsonBackend, TieredBackend, VolatileBackend
from backends.events import HUB, Counters, Event, LoggingSink, MemorySink, digest, subscribe


def story(sink: MemorySink, operation: str | None = None) -> list[tuple[str, str | None, str]]:
    """(operation, key, outcome) of every event, or of one operation's."""
    return [(e.operation, e.key, e.outcome) for e in sink if operation is None or e.operation == operation]


def test_every_call_is_started_then_finished_or_failed(sink: MemorySink, tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path)
    store["users/42"] = {"name": "Ada"}
    assert store.load("users/42") == {"name": "Ada"} and "users/42" in store and len(store) == 1
    assert store.load_many(["users/42"]) and store.delete("users/42")
    with pytest.raises(backends.InvalidKeyError):
        store.load("../etc")
    assert story(sink) == [
        ("dump", "users/42", "started"),
        ("dump", "users/42", "finished"),
        ("load", "users/42", "started"),
        ("load", "users/42", "finished"),
        ("contains", "users/42", "started"),
        ("contains", "users/42", "finished"),
        ("len", None, "started"),
        ("len", None, "finished"),
        ("load_many", None, "started"),
        ("load_many", None, "finished"),
        ("delete", "users/42", "started"),
        ("delete", "users/42", "finished"),
        ("load", "../etc", "started"),
        ("load", "../etc", "failed"),
    ]
    finished = [e for e in sink if e.outcome in ("finished", "failed")]
    assert all(e.duration is not None and 0 <= e.duration < 60 for e in finished)
    first = next(iter(sink))
    assert (first.pid, first.backend) == (os.getpid(), repr(store)) and first.host
    assert finished[-1].detail.startswith("InvalidKeyError: invalid key")


def test_a_tier_tells_hits_misses_fills_expiry_and_revalidation(
    sink: MemorySink, tmp_path: Path, moto: S3Target
) -> None:
    clock = FrozenClock()
    origin = S3JsonBackend(moto.bucket, prefix="events", client=moto.client)
    tier = TieredBackend(JsonCache(tmp_path, timeout=60, clock=clock), origin)
    origin["k"] = 1
    sink.clear()
    assert tier["k"] == 1  # a miss
    assert story(sink, "cache") == [("cache", "k", "miss"), ("cache", "k", "filled")]
    assert story(sink, "lock") == [
        ("lock", "k", "attempted"),
        ("lock", "k", "acquired"),
        ("lock", "k", "released"),
    ]
    assert [e.backend for e in sink if e.operation == "lock"] == [repr(tier.cache)] * 3  # the cache's lock
    assert story(sink, "load_if_changed") == [
        ("load_if_changed", "k", "started"),
        ("load_if_changed", "k", "finished"),
    ]
    sink.clear()
    assert tier["k"] == 1
    assert story(sink) == [("load", "k", "started"), ("cache", "k", "hit"), ("load", "k", "finished")]
    sink.clear()
    clock.advance(61)
    assert tier["k"] == 1
    assert story(sink, "cache") == [("cache", "k", "expired"), ("cache", "k", "revalidated")]
    stale = TieredBackend(tier.cache, origin, stale_while_revalidate=30)
    clock.advance(70)
    sink.clear()
    with tier.cache.lock("k"):  # another loader is refreshing
        assert stale["k"] == 1
    assert story(sink, "cache") == [("cache", "k", "expired"), ("cache", "k", "stale")]
    acquired = next(e for e in sink if e.outcome == "acquired")
    assert acquired.attempts == 1 and acquired.duration is not None


def test_locks_tell_waits_timeouts_renewals_and_losses(sink: MemorySink) -> None:
    clock = FrozenClock()
    store = backends.MemoryCache(clock=clock)
    holder = store.lock("k", ttl=10).acquire()
    with pytest.raises(backends.LockTimeoutError):
        store.lock("k", timeout=0).acquire()
    holder.renew()
    clock.advance(11)
    store.lock("k", ttl=10).acquire()  # the lease ran out: taken over
    with pytest.raises(backends.LockError):
        holder.release()
    assert [outcome for _, _, outcome in story(sink, "lock")] == [
        "attempted",
        "acquired",
        "attempted",
        "timed out",
        "renewed",
        "attempted",
        "acquired",
        "lost",
    ]
    timed_out = next(e for e in sink if e.outcome == "timed out")
    assert timed_out.attempts == 1


def test_subscriptions_per_backend_global_and_closed(tmp_path: Path) -> None:
    one, two = VolatileBackend(), VolatileBackend()
    mine, everyone = MemorySink(), MemorySink()
    with one.subscribe(mine), subscribe(everyone):
        one["a"] = 1
        two["b"] = 2
        assert HUB.on
    one["c"] = 3
    assert not HUB.on
    assert {e.key for e in mine} == {"a"} and {e.key for e in everyone} == {"a", "b"}
    # Two views of one folder are equal backends, but a subscription is to one object.
    first, second = FileSystemJsonBackend(tmp_path), FileSystemJsonBackend(tmp_path)
    assert first == second
    with first.subscribe(mine) as subscription:
        second["x"] = 1
    subscription.close()  # again: nothing happens
    assert "x" not in {e.key for e in mine}


def test_a_subscription_does_not_keep_its_backend_alive() -> None:
    import gc
    import weakref

    store = VolatileBackend()
    subscription = store.subscribe(MemorySink())
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None and not HUB.on
    subscription.close()


def test_a_subscriber_that_raises_never_changes_a_result(
    sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    store = VolatileBackend()
    errors = HUB.errors
    with subscribe(broken), caplog.at_level(logging.WARNING, "backends.events"):
        store["k"] = 1
        assert store["k"] == 1 and store.pop("k") == 1
    assert HUB.errors == errors + 6  # three calls, two events each
    assert len([r for r in caplog.records if "raised" in r.getMessage()]) == 1  # warned once
    assert story(sink, "pop") == [("pop", "k", "started"), ("pop", "k", "finished")]  # others still served


def test_digests_replace_keys_and_no_value_ever_appears(tmp_path: Path) -> None:
    secret_value = {"ssn": "078-05-1120"}
    digests = MemorySink()
    store = FileSystemJsonBackend(tmp_path)
    with subscribe(digests, digest_keys=True):
        store["people/ada"] = secret_value
        store.load("people/ada")
    assert {e.key for e in digests} == {digest("people/ada")}
    text = repr(list(digests))
    assert "people/ada" not in text and "078-05-1120" not in text


def test_a_planted_secret_never_reaches_an_event_or_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    secret = CREDENTIALS["aws_secret_access_key"]
    store = S3JsonBackend(
        "bucket",
        endpoint_url="http://127.0.0.1:9",  # nothing listens: every request fails
        access_key=CREDENTIALS["aws_access_key_id"],
        secret_key=secret,
        retries=0,
        timeout=1,
    )
    memory = MemorySink()
    with subscribe(memory), subscribe(LoggingSink()), caplog.at_level(logging.DEBUG, "backends"):
        with pytest.raises(backends.StoreUnavailableError):
            store.load("k")
    failed = [e for e in memory if e.outcome == "failed"]
    assert failed and failed[0].detail.startswith("StoreUnavailableError")
    assert secret not in repr(list(memory)) and secret not in caplog.text


def test_the_logging_sink_writes_one_line_per_event(caplog: pytest.LogCaptureFixture) -> None:
    store = VolatileBackend()
    with subscribe(LoggingSink()), caplog.at_level(logging.DEBUG, "backends"):
        store["users/42"] = 1
        with pytest.raises(KeyError):
            store.pop("nope")
    lines = [r for r in caplog.records if r.name == "backends"]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.DEBUG, logging.DEBUG, logging.WARNING]
    assert "dump users/42 finished in" in lines[1].getMessage()
    assert lines[3].getMessage().endswith("pop nope failed in " + lines[3].getMessage().split(" in ")[-1])


def test_counters_count_and_bin_latencies() -> None:
    counters = Counters()
    store = VolatileBackend()
    with subscribe(counters):
        for i in range(5):
            store[f"k{i}"] = i
            store.load(f"k{i}")
        store.load("absent")
    tally = counters.get("load", "finished", repr(store))
    assert tally.count == 6 and sum(tally.buckets) == 6 and tally.seconds > 0
    assert counters.get("dump", "finished").count == 5 and counters.get("dump", "failed").count == 0
    assert counters.snapshot()[(repr(store), "load", "started")] == 6


def test_with_nobody_subscribed_nothing_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    monkeypatch.setattr("backends.events.hub.Event", lambda *a, **k: built.append(a))  # the hub builds it
    store = VolatileBackend()
    store["k"] = 1
    store.load("k")
    assert not HUB.on and built == []


def test_redis_retries_are_events(redis: str, sink: MemorySink) -> None:
    import redis as redis_py

    store = backends.RedisJsonBackend(redis, prefix="events-retry", socket_timeout=0.1, retries=8)
    store["k"] = 1
    admin = redis_py.Redis.from_url(redis)
    admin.client_pause(400)  # every answer waits 0.4 s: the first tries time out
    sink.clear()
    assert store.load("k") == 1
    retried = [e for e in sink if e.outcome == "retried"]
    assert retried and retried[0].operation == "request" and retried[0].detail == "TimeoutError"
    assert [e.attempts for e in retried] == list(range(2, len(retried) + 2))
    admin.close()
    store.clear()
    store.close()


def test_s3_retries_are_events(moto_server: S3Target, sink: MemorySink) -> None:
    from servers import Faults, Proxy

    S3JsonBackend(moto_server.bucket, prefix="events", client=moto_server.client)["k"] = 1
    with Proxy(moto_server.endpoint_url or "", Faults(plan=["error500", "slowdown"])) as proxy:
        store = S3JsonBackend(
            moto_server.bucket, prefix="events", **{**moto_server.options(), "endpoint_url": proxy.endpoint}
        )
        sink.clear()
        assert store.load("k") == 1
    assert [(e.operation, e.outcome, e.attempts, e.detail) for e in sink if e.outcome == "retried"] == [
        ("request", "retried", 2, "GetObject"),
        ("request", "retried", 3, "GetObject"),
    ]


def test_listings_are_started_then_finished_stopped_or_failed(sink: MemorySink, tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path)
    store.dump_many({"a/1": 1, "a/2": 2, "b": 3})
    sink.clear()
    assert sorted(store) == ["a/1", "a/2", "b"] and sorted(store.list("a/")) == ["a/1", "a/2"]
    assert bool(store)  # takes one key, then stops
    closed = FileSystemJsonBackend(tmp_path / "gone")
    closed.close()
    with pytest.raises(backends.StoreError):
        list(closed.list("x/"))
    assert [(e.key, e.outcome, e.detail.split(":")[0]) for e in sink if e.operation == "list"] == [
        (None, "started", ""),
        (None, "finished", "3 listed"),
        ("a/", "started", ""),
        ("a/", "finished", "2 listed"),
        (None, "started", ""),
        (None, "stopped", "1 listed"),
        ("x/", "started", ""),
        ("x/", "failed", "StoreError"),
    ]


def test_a_tiers_stats_are_a_view_of_its_counters(tmp_path: Path) -> None:
    tier = TieredBackend(backends.MemoryCache(clock=FrozenClock()), FileSystemJsonBackend(tmp_path))
    tier.origin["k"] = 1
    assert tier["k"] == 1 and tier["k"] == 1 and tier.load("absent") is None
    assert tier.counters.get("cache", "hit").count == tier.stats.hits == 1
    assert tier.counters.get("cache", "miss").count == tier.stats.misses == 2
    assert tier.counters.get("origin", "requested").count == tier.stats.origin_requests == 2


def test_bytes_read_and_written_are_counted_for_the_innermost_call(sink: MemorySink, tmp_path: Path) -> None:
    tier = TieredBackend(backends.MemoryCache(clock=FrozenClock()), FileSystemJsonBackend(tmp_path))
    tier.origin["k"] = {"v": "x" * 100}
    tier.origin.dump_many({"a": 1, "b": 22})
    assert tier["k"] and tier["k"] and tier.origin.load_many(["a", "b"]) == {"a": 1, "b": 22}
    size = len(b'{"v":"' + b"x" * 100 + b'"}')
    finished = [(e.backend.split("(")[0], e.operation, e.bytes) for e in sink if e.outcome == "finished"]
    assert finished == [
        ("FileSystemJsonBackend", "dump", size),
        ("FileSystemJsonBackend", "dump_many", None),  # values encoded up front, not counted (yet)
        ("FileSystemJsonBackend", "load_if_changed", size),  # the miss: read from the origin
        ("TieredBackend", "load", None),  # the tier's own work: the origin's bytes are the origin's
        ("TieredBackend", "load", size),  # the hit: read from the memory cache
        ("FileSystemJsonBackend", "load_many", 3),  # b"1" + b"22"
    ]


def test_a_purge_tells_how_many_it_removed(sink: MemorySink) -> None:
    clock = FrozenClock()
    cache = backends.MemoryCache(timeout=10, clock=clock)
    cache.dump_many({"a": 1, "b": 2})
    clock.advance(11)
    sink.clear()
    assert cache.purge() == 2
    assert [(e.outcome, e.detail) for e in sink if e.operation == "purge"] == [
        ("started", ""),
        ("finished", "2 removed"),
    ]
