"""MemoryCache: bounded by entries and bytes, least recently used out first, expiring, thread-safe."""

from __future__ import annotations

import math
import pickle
import random
import threading

import pytest
from clock import FrozenClock

from backends import (
    MemoryCache,
    MemoryRawCache,
    MemoryTextCache,
    SerializationError,
    TieredBackend,
    VolatileBackend,
)
from backends.info import utc


def test_the_least_recently_used_entry_goes_first_when_maxsize_is_reached() -> None:
    cache = MemoryCache(maxsize=3)
    cache.dump_many({"a": 1, "b": 2, "c": 3})
    assert cache["a"] == 1  # a is now the most recently used
    cache["d"] = 4
    assert sorted(cache) == ["a", "c", "d"]
    assert "c" in cache  # "in" does not count as a use...
    cache["e"] = 5
    assert sorted(cache) == ["a", "d", "e"]  # ...so c, the least recently loaded, went


def test_maxbytes_bounds_the_stored_bytes_and_a_value_over_it_is_refused() -> None:
    cache = MemoryRawCache(maxbytes=10)
    cache["a"] = b"123456"
    cache["b"] = b"7890"
    assert sorted(cache) == ["a", "b"]
    cache["c"] = b"xy"  # 12 bytes: the oldest goes
    assert sorted(cache) == ["b", "c"]
    with pytest.raises(SerializationError, match="maxbytes=10"):
        cache["b"] = b"x" * 11
    assert cache["b"] == b"7890" and sorted(cache) == ["b", "c"]  # nothing changed
    cache["b"] = b"0123456789"  # exactly the bound: the others make room
    assert list(cache) == ["b"]


def test_a_hit_returns_a_new_object_so_changing_it_changes_nothing_stored() -> None:
    cache = MemoryCache()
    cache["k"] = {"items": [1]}
    loaded = cache["k"]
    loaded["items"].append(2)
    assert cache["k"] == {"items": [1]}
    with pytest.raises(SerializationError):
        cache["bad"] = {1: "not a JSON object key"}
    assert "bad" not in cache


def test_entries_expire_for_every_call_and_purge_removes_them() -> None:
    clock = FrozenClock()
    cache = MemoryTextCache(timeout=10, clock=clock)
    cache["old"] = "o"
    cache.dump("never", "n", timeout=None)
    cache.dump("inf", "i", timeout=math.inf)
    cache.dump("long", "l", timeout=100)
    assert cache.expires("old") == utc(clock.now + 10) and cache.expires("never") is None
    clock.advance(10)
    assert cache.load("old") is None and "old" not in cache
    assert sorted(cache) == ["inf", "long", "never"] and len(cache) == 3
    assert cache.dump("old", "again", if_absent=True) is True  # expired counts as absent
    clock.advance(100)
    assert cache.purge() == 2  # "old" again and "long"
    assert sorted(cache) == ["inf", "never"]
    with pytest.raises(KeyError):
        cache.expires("long")
    assert cache.delete("long") is False and cache.pop("long", "d") == "d"


def test_an_already_expired_dump_reads_as_absent() -> None:
    cache = MemoryCache(clock=FrozenClock())
    assert cache.dump("k", 1, timeout=0) is True
    assert "k" not in cache and cache.load("k", "d") == "d"


def test_peek_fill_and_renew_keep_the_etag_for_a_tier() -> None:
    clock = FrozenClock()
    cache = MemoryCache(timeout=10, clock=clock)
    cache.fill("k", [1], etag='"abc"')
    entry = cache.peek("k")
    assert entry is not None and entry.value == [1] and entry.fresh and entry.etag == '"abc"'
    clock.advance(11)
    entry = cache.peek("k")
    assert entry is not None and not entry.fresh and entry.deadline == clock.now - 1
    assert cache.renew("k", '"other"') is False
    assert cache.renew("k", '"abc"') is True
    assert cache.expires("k") == utc(clock.now + 10) and cache["k"] == [1]
    assert cache.peek("absent") is None and cache.renew("absent", '"abc"') is False


def test_bounds_and_timeouts_are_checked_before_anything_is_made() -> None:
    for bad in (0, -1, True, 1.5, "10"):
        with pytest.raises(ValueError, match="maxsize"):
            MemoryCache(maxsize=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="maxbytes"):
            MemoryCache(maxbytes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        MemoryCache(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        MemoryCache().dump("k", 1, timeout=float("nan"))


def test_threads_never_break_the_bounds_or_lose_the_last_write() -> None:
    cache = MemoryRawCache(maxsize=50, maxbytes=2000)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        try:
            for _ in range(2000):
                key = f"k{rng.randrange(80)}"
                action = rng.random()
                if action < 0.5:
                    cache[key] = bytes(rng.randrange(100))
                elif action < 0.8:
                    value = cache.load(key)
                    assert value is None or value == bytes(len(value))
                else:
                    cache.pop(key, None)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    values = dict(cache.items())
    assert len(values) == len(cache) <= 50
    assert sum(len(value) for value in values.values()) <= 2000
    cache["last"] = b"x"
    assert cache["last"] == b"x"


def test_a_memory_cache_pickles_with_its_entries_and_settings() -> None:
    clock = FrozenClock()
    cache = MemoryCache(maxsize=5, timeout=30, clock=clock)
    cache["k"] = {"v": 1}
    copy = pickle.loads(pickle.dumps(cache))
    assert copy["k"] == {"v": 1} and copy.maxsize == 5 and copy.timeout == 30
    with copy.lock("k"):
        assert repr(copy) == "MemoryCache(maxsize=5, maxbytes=67108864, timeout=30)"


def test_a_value_too_big_for_the_cache_is_served_by_a_tier_but_not_kept() -> None:
    origin = VolatileBackend()
    origin["big"] = b"x" * 100
    tier = TieredBackend(MemoryRawCache(maxbytes=10), origin)
    assert tier["big"] == b"x" * 100
    assert "big" not in tier.cache
    assert tier.stats.origin_requests == 1


def test_a_forked_child_uses_memory_stores_its_parent_used_with_counts_of_its_own() -> None:
    """Fork after first use (the one fork hook of backends.memory): each store works in the child,
    and a cache's hits and misses there are the child's, not its parent's."""
    import os

    cache, volatile = MemoryCache(), VolatileBackend()
    cache["k"] = 1
    volatile["k"] = [1]
    assert cache["k"] == 1 and cache.load("absent") is None
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    pid = os.fork()
    if pid == 0:
        try:
            cache["k2"] = 2
            volatile["k2"] = [2]
            fresh = (cache.stats.hits, cache.stats.misses) == (0, 0)
            used = (
                cache["k"] == 1
                and cache["k2"] == 2
                and volatile["k"] == [1]
                and sorted(volatile) == ["k", "k2"]
            )
            os._exit(0 if fresh and used and (cache.stats.hits, cache.stats.misses) == (2, 0) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)  # the parent's own, untouched
    assert "k2" not in cache and "k2" not in volatile
