"""JsonCache and TextCache: expiry against a model of deadlines, with a clock that never sleeps."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from backends import JsonCache, SqliteJsonBackend, TextCache
from backends.base import MISSING
from backends.filesystem.tree import MARKER
from backends.testing.parity import Folders

KEYS = st.sampled_from(["a", "b", "a/b", "deep/er/key", "é"])
TIMEOUTS = st.sampled_from([MISSING, None, 0, 1, 5, 30.5])
STEPS = st.sampled_from([0.5, 1, 4.999, 5, 30, 300])


def json_cache(folder: Path, timeout: float | None, clock: Callable[[], float]) -> Any:
    return JsonCache(folder, timeout=timeout, clock=clock)


def sqlite_cache(folder: Path, timeout: float | None, clock: Callable[[], float]) -> Any:
    return SqliteJsonBackend(folder / "kv.db", timeout=timeout, clock=clock)


class Expiry(RuleBasedStateMachine):
    """A cache against a model: key -> (value, deadline or None), and what is still stored."""

    folders: Folders
    make: Callable[[Path, float | None, Callable[[], float]], Any] = staticmethod(json_cache)
    #: a listing removes the expired entries it meets (a folder); SQLite's skips them (purge removes)
    listing_removes = True
    #: a read removes the expired entry it meets (a folder); SQLite's never writes (purge or a write removes)
    reading_removes = True

    def __init__(self) -> None:
        super().__init__()
        self.folder = self.folders.new()
        self.clock = FrozenClock()
        self.cache = self.make(self.folder, 10, self.clock)
        self.entries: dict[str, tuple[Any, float | None]] = {}  # on disk, expired or not

    def teardown(self) -> None:
        self.cache.close()
        self.folders.drop(self.folder)

    def fresh(self) -> dict[str, Any]:
        now = self.clock.now
        return {k: v for k, (v, end) in self.entries.items() if end is None or end > now}

    def meet(self, key: str) -> None:
        """A read met ``key``: an expired entry is removed (where reads remove)."""
        if self.reading_removes and key in self.entries and key not in self.fresh():
            del self.entries[key]

    @rule(key=KEYS, value=st.integers(), timeout=TIMEOUTS)
    def dump(self, key: str, value: int, timeout: Any) -> None:
        assert self.cache.dump(key, value, timeout=timeout) is True
        seconds = 10 if timeout is MISSING else timeout
        self.entries[key] = (value, None if seconds is None else self.clock.now + seconds)

    @rule(key=KEYS, value=st.integers())
    def dump_if_absent(self, key: str, value: int) -> None:
        created = self.cache.dump(key, value, if_absent=True)
        assert created is (key not in self.fresh())
        if created:
            self.entries[key] = (value, self.clock.now + 10)

    @rule(key=KEYS)
    def load(self, key: str) -> None:
        assert self.cache.load(key, "absent") == self.fresh().get(key, "absent")
        self.meet(key)

    @rule(key=KEYS)
    def contains(self, key: str) -> None:
        assert (key in self.cache) is (key in self.fresh())
        self.meet(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.cache.delete(key) is (key in self.fresh())
        self.entries.pop(key, None)

    @rule(key=KEYS)
    def expires(self, key: str) -> None:
        if key in self.fresh():
            end = self.entries[key][1]
            when = self.cache.expires(key)
            stamp = None if when is None else when.timestamp()
            assert stamp == (None if end is None else pytest.approx(end))
            assert when is None or when.tzinfo is timezone.utc  # one time type: aware UTC datetimes
        else:
            with pytest.raises(KeyError):
                self.cache.expires(key)

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def listing(self) -> None:
        fresh = self.fresh()
        assert len(self.cache) == len(fresh)
        assert sorted(self.cache) == sorted(fresh)
        assert dict(self.cache.items()) == fresh
        if self.listing_removes:
            self.entries = {k: self.entries[k] for k in fresh}  # listing met every entry

    @rule()
    def purge(self) -> None:
        fresh = self.fresh()
        assert self.cache.purge() == len(self.entries) - len(fresh)
        self.entries = {k: self.entries[k] for k in fresh}

    @invariant()
    def disk_holds_what_was_not_yet_removed(self) -> None:
        # Read the folder directly: an expired entry stays until it is met.
        on_disk = set(self.make(self.folder, None, lambda: 0.0))
        assert on_disk == set(self.entries)


class SqliteExpiry(Expiry):
    make = staticmethod(sqlite_cache)
    listing_removes = False
    reading_removes = False


@pytest.mark.parametrize("machine", [Expiry, SqliteExpiry], ids=["folder", "sqlite"])
def test_expiry_matches_a_model_of_deadlines(folders: Folders, machine: type[Expiry]) -> None:
    machine.folders = folders
    run_state_machine_as_test(machine, settings=settings(max_examples=60, stateful_step_count=30))


# -- examples ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def cache(tmp_path: Path, clock: FrozenClock) -> Iterator[JsonCache]:
    with JsonCache(tmp_path / "cache", timeout=60, clock=clock) as made:
        yield made


def test_the_default_timeout_is_the_caches_and_each_dump_can_override_it(
    cache: JsonCache, clock: FrozenClock
) -> None:
    cache["default"] = 1
    cache.dump("short", 2, timeout=5)
    cache.dump("forever", 3, timeout=None)
    cache.dump("gone", 4, timeout=0)
    assert "gone" not in cache and cache.load("gone") is None  # 0 is already expired, never "the default"
    clock.advance(5)
    assert sorted(cache) == ["default", "forever"]
    clock.advance(55)
    assert sorted(cache) == ["forever"]
    clock.advance(10**9)
    assert cache["forever"] == 3


def test_an_expired_entry_is_absent_everywhere_and_removed_when_met(
    cache: JsonCache, clock: FrozenClock
) -> None:
    cache["a/b"] = {"x": 1}
    path = cache.path("a/b")
    clock.advance(60)
    assert cache.load("a/b", "absent") == "absent"
    assert not path.exists() and not path.parent.exists()  # removed, and its emptied folder too
    cache["k"] = 1
    clock.advance(60)
    with pytest.raises(KeyError):
        cache["k"]
    assert "k" not in cache and len(cache) == 0 and list(cache.items()) == []
    assert cache.delete("k") is False


def test_if_absent_treats_an_expired_entry_as_absent(cache: JsonCache, clock: FrozenClock) -> None:
    cache["k"] = "old"
    assert cache.dump("k", "new", if_absent=True) is False
    clock.advance(61)
    assert cache.dump("k", "new", if_absent=True) is True
    assert cache.setdefault("k", "other") == "new"


def test_purge_removes_every_expired_entry_and_says_how_many(
    cache: JsonCache, clock: FrozenClock, tmp_path: Path
) -> None:
    for i in range(10):
        cache.dump(f"deep/{i}", i, timeout=i)  # deep/0 is expired at once
    cache.dump("keep", 1, timeout=None)
    clock.advance(5)
    assert cache.purge() == 6  # deep/0 .. deep/5: an entry is expired once its age reaches its timeout
    assert sorted(cache) == [f"deep/{i}" for i in range(6, 10)] + ["keep"]
    clock.advance(5)
    assert cache.purge() == 4
    assert cache.purge() == 0
    assert sorted(set(os.listdir(tmp_path / "cache")) - {MARKER}) == ["keep"]  # the emptied folder went too


@contextmanager
def opened_files() -> Iterator[list[str]]:
    """Record the paths opened while the block runs (Python's "open" audit event)."""
    seen: list[str] = []
    _AUDIT.append(seen)
    try:
        yield seen
    finally:
        _AUDIT.remove(seen)


_AUDIT: list[list[str]] = []


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _AUDIT and isinstance(args[0], str):
        _AUDIT[-1].append(args[0])


sys.addaudithook(_hook)


def test_len_keys_and_in_tell_expiry_without_reading_a_value(cache: JsonCache, clock: FrozenClock) -> None:
    for i in range(20):
        cache.dump(f"k{i}", {"i": i}, timeout=i % 2 * 100)
    clock.advance(1)
    with opened_files() as opened:
        assert len(cache) == 10
        assert sorted(cache) == sorted(f"k{i}" for i in range(1, 20, 2))
        assert "k1" in cache and "k2" not in cache
        assert cache.purge() == 0  # the listing removed the expired ones already
    assert not [name for name in opened if name.startswith("k")]  # no value file was opened


def test_timeouts_are_checked(tmp_path: Path) -> None:
    for bad in (-1, "60", float("nan"), True):
        with pytest.raises(ValueError, match="timeout"):
            JsonCache(tmp_path, timeout=bad)  # type: ignore[arg-type]
    cache = JsonCache(tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        cache.dump("k", 1, timeout=-5)
    assert "k" not in cache


def test_text_cache_entries_expire_by_age(tmp_path: Path, clock: FrozenClock) -> None:
    cache = TextCache(tmp_path, timeout=30, clock=clock)
    cache["page"] = "<p>héllo</p>\r\n"
    clock.advance(29.9)
    assert cache["page"] == "<p>héllo</p>\r\n"
    clock.advance(0.1)
    assert "page" not in cache
    assert (tmp_path / "page").exists() is False


def test_processes_share_a_cache_folder_and_its_deadlines(tmp_path: Path, clock: FrozenClock) -> None:
    one = JsonCache(tmp_path, timeout=10, clock=clock)
    two = pickle.loads(pickle.dumps(one))  # what a worker process gets
    assert (two.timeout, two.clock.now) == (10, clock.now)
    one.dump("k", [1, 2], timeout=None)
    two["j"] = "x"
    assert two["k"] == [1, 2] and one["j"] == "x"
    assert one == two and repr(one).endswith("timeout=10)")


class Intruder(FrozenClock):
    """A clock that lets another writer replace ``key`` right after the cache read the time."""

    def __init__(self, now: float, writer: JsonCache, key: str) -> None:
        super().__init__(now)
        self.writer, self.key, self.armed = writer, key, False

    def __call__(self) -> float:
        if self.armed:
            self.armed = False
            self.writer.dump(self.key, "fresh")
        return self.now


def test_a_fresh_value_written_while_an_expired_one_is_removed_is_kept(tmp_path: Path) -> None:
    writer = JsonCache(tmp_path, timeout=60, clock=FrozenClock(2_000_000_000))
    clock = Intruder(2_000_000_000, writer, "k")
    cache = JsonCache(tmp_path, timeout=60, clock=clock)
    cache.dump("k", "stale", timeout=1)
    clock.advance(2)
    clock.armed = True  # the writer replaces "k" between the cache's look and its removal
    assert cache.load("k") is None  # what it looked at had expired
    assert cache["k"] == "fresh"  # but the removal put the fresh value back
    assert cache.purge() == 0


@pytest.mark.parametrize("timeout", [None, 60])
def test_a_hit_served_from_memory_is_never_an_overwritten_value(
    tmp_path: Path, timeout: float | None
) -> None:
    clock = FrozenClock()  # frozen: every write of one key has the same deadline but for the nonce
    reader = JsonCache(tmp_path, timeout=timeout, clock=clock)
    writer = JsonCache(tmp_path, timeout=timeout, clock=clock)  # another process's view
    for n in range(300):  # same-size values; ext4 hands a freed inode out again at once
        writer["n"] = (n + 5) % 10
        writer["n"] = n % 10  # most likely in the inode the reader last read
        assert reader["n"] == n % 10
        assert reader["n"] == n % 10  # the second read is the memo's


def test_a_file_changed_in_place_by_another_tool_is_read_again(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path, timeout=None)
    cache["k"] = "aa"
    assert cache["k"] == "aa"
    path = cache.path("k")
    before = path.stat()
    path.write_bytes(b'"bb"')  # same size, rewritten in place
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the mtime put back
    assert cache["k"] == "bb"
