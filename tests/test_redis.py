"""Redis backends on a real redis-server: request budget, listing design, URLs, secrets, failures."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
import servers
from clock import FrozenClock
from monitor import RedisCommands
from servers import free_port

import backends
from backends import RedisJsonBackend, RedisRawBackend, RedisTextBackend
from backends.info import SupportsExpiry, SupportsStat, SupportsUrl, utc


@pytest.fixture
def store(redis: str, request: pytest.FixtureRequest) -> Iterator[RedisJsonBackend]:
    backend = RedisJsonBackend(redis, prefix=f"test/{request.node.name}")
    yield backend
    backend.clear()
    backend.close()


def test_the_request_budget_is_one_round_trip_per_call(
    store: RedisJsonBackend, commands: RedisCommands
) -> None:
    store["k"] = {"v": 1}  # loads the write script once
    calls = {
        "load": lambda: store.load("k"),
        "in": lambda: "k" in store,
        "dump": lambda: store.dump("k", {"v": 2}),
        "dump if_absent": lambda: store.dump("k", 3, if_absent=True),
        "len": lambda: len(store),
        "stat": lambda: store.stat("k"),
        "delete": lambda: store.delete("k"),
        "pop": lambda: store.pop("k", None),
    }
    for script_warmup in ("stat", "delete", "pop", "len", "dump if_absent"):
        calls[script_warmup]()
    store["k"] = 1
    seen = {}
    for name, call in calls.items():
        commands.reset()
        call()
        seen[name] = commands.count()
    assert seen == {  # reads are scripts: only they see whether a value key is ours and a string
        "load": {"evalsha": 1},
        "in": {"evalsha": 1},
        "dump": {"evalsha": 1},
        "dump if_absent": {"evalsha": 1},
        "len": {"evalsha": 1},
        "stat": {"evalsha": 1},
        "delete": {"evalsha": 1},
        "pop": {"evalsha": 1},
    }


def test_bulk_calls_take_one_round_trip_per_thousand_keys(
    store: RedisJsonBackend, commands: RedisCommands
) -> None:
    data = {f"k/{i:04d}": i for i in range(2500)}
    store.dump_many({"warm": 0})
    store.load_many(["warm"])
    list(store.list("w"))  # every script loaded once
    commands.reset()
    store.dump_many(data)
    assert commands.count()["evalsha"] == 3
    commands.reset()
    assert store.load_many(data) == data
    assert commands.count() == {"evalsha": 3}
    commands.reset()
    assert list(store.list("k/")) == sorted(data)
    assert commands.count() == {"evalsha": 3}
    commands.reset()
    assert store.delete_many(list(data)) == 2500
    assert commands.count()["evalsha"] == 3


def test_listing_is_sorted_as_on_s3_and_jumps_over_folders(
    store: RedisJsonBackend, commands: RedisCommands
) -> None:
    keys = ["a", "a/b", "a/c/d", "a-b", "b", "é", "z", "A"] + [f"big/{i:04d}" for i in range(3000)]
    store.dump_many(dict.fromkeys(keys, 1))
    assert list(store) == sorted(keys, key=lambda key: key.encode())  # the page script is loaded
    assert list(store.list("zz/")) == []  # and the folder script
    commands.reset()
    assert list(store.list("")) == ["A", "a", "a-b", "a/", "b", "big/", "z", "é"]
    # The server jumps past a/ and past big/ (3,000 keys): one round trip, eight names sent.
    assert commands.count() == {"evalsha": 1}
    assert list(store.list("a/")) == ["a/b", "a/c/"]
    assert list(store.list("a", delimiter="")) == ["a", "a-b", "a/b", "a/c/d"]
    folders = {f"f{i:04d}/{j}": 1 for i in range(1500) for j in range(3)}
    store.dump_many(folders)
    commands.reset()
    assert list(store.list("f", "/")) == [f"f{i:04d}/" for i in range(1500)]
    assert commands.count() == {"evalsha": 2}  # 1,000 names per round trip


def test_prefixes_ending_in_any_character_list_exactly_their_keys(store: RedisJsonBackend) -> None:
    edges = ["\ud7ff", "\U0010ffff", "\x7e", "\u00ff", "\uffff"]
    keys = [f"p{c}" + tail for c in edges for tail in ("", "/x", "y")] + ["q", "p", "o"]
    store.dump_many(dict.fromkeys(keys, 1))
    for c in edges:
        assert list(store.list(f"p{c}", "")) == sorted(
            (key for key in keys if key.startswith(f"p{c}")), key=lambda key: key.encode()
        )
        assert list(store.list(f"p{c}", "/")) == sorted([f"p{c}", f"p{c}/", f"p{c}y"], key=str.encode)


def test_keys_of_other_tools_under_the_prefix_are_left_alone(redis: str, store: RedisJsonBackend) -> None:
    raw = redis_py.Redis.from_url(redis)
    raw.set(store.prefix + "theirs", b"not ours")
    raw.set("elsewhere", b"x")
    store["ours"] = 1
    assert list(store) == ["ours"] and len(store) == 1
    store.clear()
    assert raw.get(store.prefix + "theirs") == b"not ours" and raw.get("elsewhere") == b"x"
    raw.delete(store.prefix + "theirs", "elsewhere")
    raw.close()


def test_if_match_takes_the_etag_stat_gives(store: RedisJsonBackend) -> None:
    store["k"] = {"v": 1}
    found = store.stat("k")
    assert found is not None and found.size == len(b'{"v":1}') and len(found.etag or "") == 40
    assert store.dump("k", {"v": 2}, if_match='"stale"') is False
    assert store["k"] == {"v": 1}
    assert store.dump("k", {"v": 2}, if_match=found.etag) is True
    assert store["k"] == {"v": 2} and store.stat("k").etag != found.etag  # type: ignore[union-attr]
    assert store.dump("absent", 1, if_match=found.etag) is False and "absent" not in store
    assert store.stat("absent") is None
    # Capabilities: stat and expiry; no URL (an attribute named url once made it look like one).
    assert isinstance(store, (SupportsStat, SupportsExpiry)) and not isinstance(store, SupportsUrl)


def test_a_password_never_goes_in_a_url_or_a_repr(redis: str) -> None:
    secret = "s3cr3t-pa55"
    for url in (
        f"redis://:{secret}@127.0.0.1:6379/0",
        f"redis://u:{secret}@h/0",
        f"redis://h/0?password={secret}",
    ):
        with pytest.raises(ValueError, match="REDISCLI_AUTH") as refused:
            RedisJsonBackend(url)
        assert secret not in str(refused.value)
        with pytest.raises(ValueError) as refused:
            backends.open(url)
        assert secret not in str(refused.value)
    backend = RedisJsonBackend(redis, password=secret, prefix="p")
    assert secret not in repr(backend) and "p:" in repr(backend)
    admin = redis_py.Redis.from_url(redis)
    admin.config_set("requirepass", "the-right-one")  # this connection stays authenticated
    try:
        with pytest.raises(backends.PermissionDeniedError) as failed:
            backend.load("k")
        assert secret not in str(failed.value) and secret not in repr(failed.value)
        assert "refused access" in str(failed.value)
        assert RedisJsonBackend(redis, password="the-right-one").load("k") is None
    finally:
        admin.config_set("requirepass", "")
        admin.close()


def test_constructing_sends_nothing_and_a_dead_server_is_unavailable() -> None:
    backend = RedisJsonBackend(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.5, retries=1)
    with pytest.raises(backends.StoreUnavailableError) as failed:
        backend["k"] = 1
    assert "could not be reached" in str(failed.value)


def test_a_pickled_backend_builds_its_own_pool(store: RedisJsonBackend) -> None:
    store["k"] = [1]
    copy = pickle.loads(pickle.dumps(store))
    assert copy["k"] == [1] and copy.client is not store.client and copy == store
    given = RedisJsonBackend(client=store.client, prefix="given")
    with pytest.raises(TypeError, match="per process"):
        pickle.dumps(given)


def test_urls_families_and_options(redis: str) -> None:
    text = backends.open(f"{redis}?prefix=app&format=text&socket_timeout=2&timeout=60")
    assert isinstance(text, RedisTextBackend) and text.prefix == "app:"
    assert isinstance(backends.open(f"{redis}?format=raw"), RedisRawBackend)
    with pytest.raises(ValueError, match="unknown parameter 'bogus'"):
        backends.open(f"{redis}?bogus=1")
    with pytest.raises(ValueError, match="user name"):
        backends.open("redis://someone@127.0.0.1/0")
    for bad in ({"max_connections": 0}, {"socket_timeout": 0}, {"retries": -1}, {"timeout": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RedisJsonBackend(redis, **bad)  # type: ignore[arg-type]


def test_closed_backends_refuse_calls(redis: str) -> None:
    backend = RedisJsonBackend(redis, prefix="closing")
    backend["k"] = 1
    backend.close()
    assert backend.closed
    for call in (lambda: backend.load("k"), lambda: backend.dump("k", 2), lambda: list(backend)):
        with pytest.raises(backends.StoreError, match="closed"):
            call()
    reopened: Any = RedisJsonBackend(redis, prefix="closing")
    assert reopened["k"] == 1
    reopened.clear()


def test_a_script_flush_mid_run_changes_nothing(redis: str, store: RedisJsonBackend) -> None:
    admin = redis_py.Redis.from_url(redis)
    store["a"] = 1
    admin.script_flush()  # every script is gone from the server
    store["b"] = 2  # reloaded on NOSCRIPT, then run once
    assert store.pop("a") == 1 and store.dump("b", 3, if_absent=True) is False
    admin.script_flush()
    assert store.delete_many(["b"]) == 1 and list(store) == [] and len(store) == 0
    admin.close()


def test_a_server_restart_mid_run_is_unavailable_then_works_again() -> None:
    port = free_port()
    with servers.redis_server(port) as url:
        backend = RedisJsonBackend(url, socket_timeout=1, retries=1)
        backend["k"] = 1
    with pytest.raises(backends.StoreUnavailableError):  # the server is down
        backend.load("k")
    with servers.redis_server(port):  # a new, empty server on the same port
        assert backend.load("k") is None  # the pool reconnects: no stale connection is used
        backend["k"] = 2
        assert backend["k"] == 2 and list(backend) == ["k"]
    backend.close()


def test_a_full_server_refuses_writes_with_its_message_and_changes_nothing() -> None:
    with servers.redis_server(None, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction") as url:
        store = RedisRawBackend(url, prefix="full")
        cache = RedisRawBackend(url, prefix="cache", timeout=300)
        cache.fill("kept", b"v", etag='"e"')
        written = 0
        with pytest.raises(backends.StoreError) as full:
            while True:
                store[f"k{written}"] = b"x" * 10_000
                written += 1
        assert type(full.value) is backends.StoreError and "maxmemory" in str(full.value)
        assert f"k{written}" not in store and len(store) == len(list(store)) == written
        # Kept full for the calls below: the refused write's buffers, freed after it, could bring the
        # server back under its limit (CI saw a small dump_many then accepted).
        admin = redis_py.Redis.from_url(url)
        admin.config_set("maxmemory", str(int(admin.info("memory")["used_memory"]) - 65536))
        for refused in (
            lambda: store.dump_many({"a": b"1", "b": b"2"}),
            lambda: cache.renew("kept", '"e"'),
            lambda: store.lock("l").acquire(),
        ):
            with pytest.raises(backends.StoreError, match="maxmemory"):
                refused()
        assert "a" not in store and "b" not in store and cache.expires("kept") is not None
        assert store["k0"] == b"x" * 10_000 and cache["kept"] == b"v"  # reads go on
        assert store.delete_many([f"k{i}" for i in range(written)]) == written  # deleting frees memory
        admin.config_set("maxmemory", "3mb")
        store["k"] = b"after"
        assert list(store) == ["k"]
        store.close()
        cache.close()
        admin.close()


def test_expired_keys_are_absent_for_every_call(redis: str) -> None:
    clock = FrozenClock()
    store = RedisJsonBackend(redis, prefix="expiry", timeout=10, clock=clock)
    store.dump_many({"old": 1, "dir/old": 2})
    store.dump("never", 3, timeout=None)
    store.dump("long", 4, timeout=100)
    assert store.expires("old") == utc(clock.now + 10) and store.expires("never") is None
    clock.advance(10)
    assert store.load("old") is None and "old" not in store and store.stat("old") is None
    assert sorted(store) == ["long", "never"] and len(store) == 2
    assert list(store.list("")) == ["long", "never"] and store.load_many(["old", "long"]) == {"long": 4}
    assert dict(store.items()) == {"long": 4, "never": 3}
    assert store.delete("old") is False and store.pop("dir/old", "gone") == "gone"
    assert store.dump("old", 5, if_absent=True) is True  # expired counts as absent
    with pytest.raises(KeyError):
        store.expires("dir/old")
    clock.advance(100)
    assert store.purge() == 2 and sorted(store) == ["never"]  # "old" again and "long"
    assert store.dump("now", 1, timeout=0) is True and "now" not in store  # already expired
    store.clear()
    store.close()


def test_the_servers_clock_expires_values_and_reclaims_their_memory(redis: str) -> None:
    store = RedisRawBackend(redis, prefix="server-clock", timeout=0.05, keep_expired=0)
    kept = RedisRawBackend(redis, prefix="server-clock-kept", timeout=0.05, keep_expired=60)
    raw = redis_py.Redis.from_url(redis)
    store["k"] = kept["k"] = b"v"
    deadline = store.expires("k")
    assert deadline is not None and 0 < deadline.timestamp() - store.clock() <= 0.05
    waited = 0
    # The server's clock runs on: wait for the deadline, bounded. Every call
    # reads the deadline in ms; Redis' own expiry of PX may trail it by 1 ms.
    while "k" in store or "k" in kept or raw.exists(store.prefix + "k"):
        waited += 1
        assert waited < 10_000
    assert raw.exists(store.prefix + "k") == 0  # Redis removed the value itself
    assert len(store) == 0 and list(store) == [] and store.purge() == 1
    # Kept for a minute past its deadline: absent, but a tier can still peek at it.
    assert kept.load("k") is None and kept.load_many(["k"]) == {} and len(kept) == 0
    entry = kept.peek("k")
    assert entry is not None and entry.value == b"v" and not entry.fresh
    assert 59_000 < raw.pttl(kept.prefix + "k") <= 60_000  # then Redis removes it
    assert kept.purge() == 1 and raw.exists(kept.prefix + "k") == 0 and kept.peek("k") is None
    raw.close()
    store.close()
    kept.close()


def test_a_redis_backend_with_a_timeout_is_a_cache_in_a_tier(redis: str, tmp_path: Any) -> None:
    clock = FrozenClock()
    cache = RedisJsonBackend(redis, prefix="tier-cache", timeout=60, clock=clock)
    tier = backends.TieredBackend(cache, backends.FileSystemJsonBackend(tmp_path))
    tier.origin["k"] = {"v": 1}
    assert tier["k"] == {"v": 1} and tier["k"] == {"v": 1}
    assert tier.stats.origin_requests == 1 and cache["k"] == {"v": 1}
    assert cache.expires("k") == utc(clock.now + 60)
    clock.advance(61)  # expired in Redis: the next load goes to the origin again
    assert "k" not in cache and tier["k"] == {"v": 1}
    assert tier.stats.origin_requests == 2
    tier["k"] = {"v": 2}  # writes go through, under the Redis lock
    assert cache["k"] == tier.origin["k"] == {"v": 2}
    cache.clear()
    cache.close()
