"""The local stores and caches under the attacks of ../shared/ATTACKS.md (issue 24).

Folders (plain and escaped layouts), JsonCache, TextCache and MemoryCache:
foreign data, closing, bad input, pressure, processes and time, plus the
edge cases cachetools and diskcache test their own caches with, where our
contract says the same thing (ported as behaviour, not as code).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import servers
from clock import FrozenClock

from backends import (
    FileSystemJsonBackend,
    FileSystemRawBackend,
    JsonCache,
    MemoryCache,
    MemoryRawCache,
    SerializationError,
    StoreError,
    TextCache,
    TieredBackend,
    VolatileBackend,
)
from backends.events import MemorySink
from backends.filesystem.tree import MARKER

#: files a user may have that are named like temporary files (Word's, an editor's, ours before)
USERS = ("~WRL0001.tmp", "~notes.tmp", "~x.expired", "~$report.docx", "~locks.txt")


def tree_names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != MARKER)


def cache_story(sink: MemorySink) -> list[tuple[str | None, str]]:
    return [(event.key, event.outcome) for event in sink if event.operation == "cache"]


# -- foreign data: a user's files named like ours ----------------------------------------


@pytest.mark.parametrize("layout", ["plain", "escaped"])
def test_a_users_files_named_like_temporary_files_are_named_strays_never_hidden(
    tmp_path: Path, layout: str
) -> None:
    root = tmp_path / "t"
    backend = FileSystemRawBackend(root, layout=layout)
    backend.dump_many({"k": b"1", "sub/k": b"2"})
    sub = backend.path("sub/k").parent  # "sub" or "sub+"
    for name in USERS:
        (root / name).write_bytes(b"the user's")
        (sub / name).write_bytes(b"the user's")
    backend.clock = lambda: time.time() + 7200  # long after: old enough to sweep, were they ours
    theirs = {*USERS, *(f"{sub.name}/{name}" for name in USERS)}
    assert {path for path, _ in backend.strays()} == theirs  # each named
    assert sorted(backend) == ["k", "sub/k"] and len(backend) == 2
    backend.clear()  # removes keys and our own leftovers, never a user's file
    assert set(tree_names(root)) == {*theirs, sub.name}


def test_a_cache_folder_names_a_users_tilde_files_and_purge_leaves_them(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=10, clock=clock)
    cache["k"] = 1
    for name in USERS:
        (tmp_path / "c" / name).write_bytes(b"the user's")
    clock.advance(7200)
    assert cache.purge() == 1
    assert {path for path, _ in cache.strays()} == set(USERS)
    assert tree_names(tmp_path / "c") == sorted(USERS)


_KILLED_WRITER = """
import sys
from backends import FileSystemRawBackend

class Stalled:
    first = True
    def read(self, size=-1):
        if self.first:
            self.first = False
            print("writing", flush=True)  # the temporary file exists now
            return b"half of it"
        return sys.stdin.buffer.read()  # never ends: killed here

FileSystemRawBackend(sys.argv[1]).dump_file("d/k", Stalled())
"""


@pytest.mark.parametrize("layout", ["plain", "escaped"])
def test_a_killed_writers_temporary_file_is_hidden_then_swept(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "t"
    backend = FileSystemRawBackend(root, layout=layout)
    backend["d/other"] = b"1"
    (root / backend.path("d/other").parent.name / "~notes.tmp").write_bytes(b"the user's")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.stdin is not None
        child.stdin.close()
        assert child.stdout is not None
        child.stdout.close()
    folder = backend.path("d/other").parent
    leftovers = [name for name in os.listdir(folder) if name.startswith("~backends-")]
    assert len(leftovers) == 1  # the killed writer's, of the form only this library makes
    assert sorted(backend) == ["d/other"]
    assert [path for path, _ in backend.strays()] == [f"{folder.name}/~notes.tmp"]
    backend.clear()
    assert leftovers[0] in os.listdir(folder)  # a moment old: maybe a live writer's
    backend.clock = lambda: time.time() + 3601
    backend["d/other"] = b"1"
    backend.clear()
    assert os.listdir(folder) == ["~notes.tmp"]  # the leftover swept, the user's file kept


def test_temporary_names_this_library_makes_are_never_a_users(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path / "t", layout="plain")
    backend["k"] = 1
    assert backend.pop("k") == 1  # pop renames the file aside to a temporary name first
    backend["k"] = 2
    assert backend.dump("k", 3, if_absent=True) is False  # if_absent links a temporary file
    assert tree_names(tmp_path / "t") == ["k"]  # none left behind


# -- a root whose parent is a file ------------------------------------------------------


@pytest.mark.parametrize("make", [JsonCache, TextCache, FileSystemJsonBackend])
@pytest.mark.parametrize("under", ["file/root", "file"])
def test_a_root_through_a_regular_file_is_a_store_error_naming_the_folder(
    tmp_path: Path, make: Callable[[Path], Any], under: str
) -> None:
    (tmp_path / "file").write_bytes(b"a regular file")
    with pytest.raises(StoreError, match="not a folder") as caught:
        make(tmp_path / under)
    assert str(tmp_path / under) in str(caught.value)
    assert tree_names(tmp_path) == ["file"] and (tmp_path / "file").read_bytes() == b"a regular file"


# -- MemoryCache: an expired write never evicts a fresh entry ------------------------------


@pytest.mark.parametrize("bound", [{"maxsize": 1}, {"maxbytes": 1}])
def test_an_already_expired_dump_into_a_full_memory_cache_keeps_the_fresh_entry(
    bound: dict[str, int],
) -> None:
    cache = MemoryCache(clock=FrozenClock(), **bound)
    cache["fresh"] = 1
    assert cache.dump("late", 2, timeout=0) is True  # stored, and expired at once
    assert dict(cache.items()) == {"fresh": 1} and len(cache) == 1
    assert "late" not in cache


def test_an_expired_write_drops_the_keys_older_value_and_its_bytes() -> None:
    cache = MemoryRawCache(maxbytes=10, clock=FrozenClock())
    cache["k"] = b"12345678"
    cache.dump("k", b"x", timeout=0)
    assert "k" not in cache
    cache["a"] = b"1234567890"  # all 10 bytes free again: nothing is evicted for it
    assert dict(cache.items()) == {"a": b"1234567890"}


def test_a_fill_with_a_zero_default_timeout_evicts_nothing() -> None:
    cache = MemoryCache(maxsize=1, timeout=0, clock=FrozenClock())
    cache.dump("fresh", 1, timeout=60)
    cache.fill("k", 2, etag='"e"')
    assert list(cache) == ["fresh"] and cache.peek("k") is None


# -- deadlines are exact -------------------------------------------------------------------


def expiring_caches(tmp_path: Path, clock: FrozenClock) -> list[Any]:
    return [
        JsonCache(tmp_path / "json", clock=clock),
        TextCache(tmp_path / "text", clock=clock),
        MemoryCache(clock=clock),
    ]


@pytest.mark.parametrize("timeout", [1e-9, 1e-7, 5e-7, 0.3, 1.0, 86_400.0])
def test_an_entry_expires_exactly_when_its_age_reaches_its_timeout(tmp_path: Path, timeout: float) -> None:
    clock = FrozenClock()
    for cache in expiring_caches(tmp_path, clock):
        clock.now = 1_800_000_000.0
        value = "v" if isinstance(cache, TextCache) else 1
        cache.dump("k", value, timeout=timeout)
        assert "k" in cache and cache.load("k") == value  # a frozen clock: age 0, never expired
        # The first reading of the clock at which the age has reached the timeout (the float
        # after now, where now + 1e-7 is now again: 1.8e9 s have a 238 ns resolution).
        deadline = max(clock.now + timeout, math.nextafter(clock.now, math.inf))
        clock.now = math.nextafter(deadline, 0)  # the last reading before it: still fresh...
        assert "k" in cache and cache.expires("k") is not None
        clock.now = deadline  # ...and the deadline itself: expired
        assert "k" not in cache and cache.load("k") is None


def test_a_zero_timeout_is_expired_when_written_and_a_none_never(tmp_path: Path) -> None:
    clock = FrozenClock()
    for cache in expiring_caches(tmp_path, clock):
        value = "v" if isinstance(cache, TextCache) else 1
        cache.dump("zero", value, timeout=0)
        cache.dump("never", value, timeout=None)
        cache.dump("inf", value, timeout=math.inf)
        clock.advance(100 * 365.25 * 86_400)
        assert sorted(cache) == ["inf", "never"] and cache.expires("never") is None


def test_rewrites_at_one_frozen_instant_are_never_served_from_the_memo(tmp_path: Path) -> None:
    """Equal deadlines (a frozen clock), equal sizes: the memo still tells each file apart."""
    clock = FrozenClock()
    cache = JsonCache(tmp_path, timeout=60, clock=clock)
    other = JsonCache(tmp_path, timeout=60, clock=clock)  # another process's writes, in effect
    for value in range(100, 400):
        other["k"] = value
        assert cache["k"] == value


# -- a standalone cache counts and tells its hits and misses -----------------------------------


@pytest.mark.parametrize("kind", ["json", "text", "memory"])
def test_a_cache_on_its_own_tells_hits_and_misses_and_counts_them(
    sink: MemorySink, tmp_path: Path, kind: str
) -> None:
    clock = FrozenClock()
    value = "v" if kind == "text" else 1
    cache: Any = {
        "json": lambda: JsonCache(tmp_path, timeout=10, clock=clock),
        "text": lambda: TextCache(tmp_path, timeout=10, clock=clock),
        "memory": lambda: MemoryCache(timeout=10, clock=clock),
    }[kind]()
    cache["k"] = value
    sink.clear()
    assert cache["k"] == value
    told = [(e.operation, e.outcome) for e in sink]
    assert told == [("load", "started"), ("cache", "hit"), ("load", "finished")]
    assert cache.get("absent") is None
    clock.advance(10)
    assert cache.load("k") is None  # expired: a miss
    cache["k2"] = value
    assert cache.load_many(["k2", "absent"]) == {"k2": value}
    assert cache.setdefault("k2", value) == value
    assert "k2" in cache  # `in` is no load: not counted
    assert cache_story(sink) == [
        ("k", "hit"),
        ("absent", "miss"),
        ("k", "miss"),
        ("k2", "hit"),
        ("absent", "miss"),
        ("k2", "hit"),
    ]
    assert all(e.backend == repr(cache) for e in sink if e.operation == "cache")
    assert (cache.stats.hits, cache.stats.misses) == (3, 3)
    assert cache.counters.get("cache", "hit").count == 3


def test_a_cache_counts_with_nobody_subscribed(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path)
    cache["k"] = 1
    assert (cache["k"], cache.get("x")) == (1, None)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


@pytest.mark.parametrize("kind", ["json", "memory"])
def test_a_tiers_cache_leaves_the_counting_to_the_tier(sink: MemorySink, tmp_path: Path, kind: str) -> None:
    cache: Any = JsonCache(tmp_path / "c") if kind == "json" else MemoryCache()
    origin = VolatileBackend()
    tier = TieredBackend(cache, origin)
    origin.dump_many({"a": 1, "b": 2})
    sink.clear()
    assert tier["a"] == 1 and tier["a"] == 1
    assert tier.load_many(["a", "b"]) == {"a": 1, "b": 2}
    hits = [(e.backend, e.key, e.outcome) for e in sink if e.operation == "cache" and e.outcome != "filled"]
    assert hits == [
        (repr(tier), "a", "miss"),
        (repr(tier), "a", "hit"),
        (repr(tier), "a", "hit"),
        (repr(tier), "b", "miss"),
    ]  # once each, by the tier: never a second time by its cache
    assert (cache.stats.hits, cache.stats.misses) == (0, 0) and (tier.stats.hits, tier.stats.misses) == (2, 2)


# -- the peers' own tests, ported (cachetools: TTLCache/TLRUCache/LRUCache; diskcache: Cache) ------


def both_caches(tmp_path: Path, clock: FrozenClock, **options: Any) -> list[Any]:
    return [JsonCache(tmp_path / "json", clock=clock, **options), MemoryCache(clock=clock, **options)]


def test_purge_removes_exactly_the_entries_whose_age_reached_their_timeout(tmp_path: Path) -> None:
    """diskcache's test_expire: 100 entries expiring after 1..100 s; 11 s later."""
    clock = FrozenClock()
    for cache in both_caches(tmp_path, clock):
        clock.now = 1_800_000_000.0
        for value in range(1, 101):
            cache.dump(str(value), value, timeout=value)
        assert len(cache) == 100
        clock.advance(11)
        assert cache.purge() == 11  # 1..11: an age of 11 s reached a timeout of 11 s (diskcache: 10)
        assert len(cache) == 89 and "12" in cache and "11" not in cache


def test_expired_entries_are_absent_for_pop_del_and_if_absent(tmp_path: Path) -> None:
    """diskcache's test_pop, test_del_expired and test_add, with a frozen clock instead of sleep."""
    clock = FrozenClock()
    for cache in both_caches(tmp_path, clock):
        cache.dump("beta", 456, timeout=1e-9)
        cache.dump("k", 1, timeout=1)
        clock.advance(1)
        assert cache.pop("beta", "dne") == "dne"
        with pytest.raises(KeyError):
            del cache["k"]
        assert cache.dump("k", 2, if_absent=True) is True and cache["k"] == 2
        assert cache.dump("k", 3, if_absent=True) is False and cache["k"] == 2


def test_hits_and_misses_are_counted_per_load(tmp_path: Path) -> None:
    """diskcache's test_stats: 100 hits and 10 misses are (100, 10)."""
    for cache in both_caches(tmp_path, FrozenClock()):
        cache["0"] = 0
        for _ in range(100):
            assert cache["0"] == 0
        for _ in range(10):
            assert cache.get("1") is None
        assert (cache.stats.hits, cache.stats.misses) == (100, 10)


def test_entries_expire_in_deadline_order_whatever_the_order_written(tmp_path: Path) -> None:
    """cachetools' test_ttu_reverse_insert: timeouts 3, 2, 1, 0 written in that order."""
    clock = FrozenClock()
    for cache in both_caches(tmp_path, clock, timeout=None):
        clock.now = 1_800_000_000.0
        for value in (3, 2, 1, 0):
            cache.dump(str(value), value, timeout=value)
        assert sorted(cache) == ["1", "2", "3"]
        for left in (["2", "3"], ["3"], []):
            clock.advance(1)
            assert sorted(cache) == left and len(cache) == len(left)


def test_least_recently_used_goes_first_among_expiring_entries() -> None:
    """cachetools' test_ttl_lru / test_ttu_lru: maxsize 2, a load is a use."""
    clock = FrozenClock()
    cache = MemoryCache(maxsize=2, timeout=1, clock=clock)
    cache.dump_many({"1": 1, "2": 2})
    cache["3"] = 3
    assert sorted(cache) == ["2", "3"]
    assert cache["2"] == 2
    cache["4"] = 4
    assert sorted(cache) == ["2", "4"]  # 3 was the least recently used
    clock.advance(1)
    cache["5"] = 5
    assert list(cache) == ["5"]  # the others expired meanwhile


def test_a_value_over_maxbytes_is_refused_and_the_old_entry_stays() -> None:
    """cachetools' _test_getsizeof: the overwrite accounting, and a value too large changing nothing."""
    cache = MemoryRawCache(maxbytes=3, clock=FrozenClock())
    cache.dump_many({"1": b"1", "2": b"22"})
    assert sorted(cache) == ["1", "2"]
    cache["1"] = b"22"  # 1 byte more: 2 (the least recently used) goes, the old 1's byte is freed
    assert dict(cache.items()) == {"1": b"22"}
    cache.dump_many({"1": b"1", "2": b"22"})
    cache["3"] = b"333"
    assert dict(cache.items()) == {"3": b"333"}
    with pytest.raises(SerializationError):
        cache["3"] = b"4444"
    with pytest.raises(SerializationError):
        cache["4"] = b"4444"
    assert dict(cache.items()) == {"3": b"333"}


def test_each_call_of_a_ticking_clock_still_finds_a_fresh_entry() -> None:
    """cachetools' test_ttu_atomic: a clock that moves 1 s at every reading, timeout 2 s."""

    class Ticking:
        now = 1_800_000_000.0

        def __call__(self) -> float:
            self.now += 1
            return self.now

    cache = MemoryCache(maxsize=1, timeout=2, clock=Ticking())
    cache["1"] = 1
    assert cache["1"] == 1
    cache["1"] = 1
    assert cache.get("1") == 1
    cache["1"] = 1
    assert cache.pop("1") == 1
    cache.clear()  # (setdefault is two calls here, a write then a load: two readings)
    assert len(cache) == 0


# -- foreign data: odd things in the folder ---------------------------------------------------


@pytest.mark.parametrize("layout", ["plain", "escaped"])
def test_fifos_symlinks_and_names_no_key_has_are_named_and_left_alone(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "t"
    backend = FileSystemRawBackend(root, layout=layout)
    backend["k"] = b"1"
    os.mkfifo(root / "fifo")
    (root / "link").symlink_to(root / "k")
    (root / "outside").symlink_to(tmp_path)
    raw = os.fsencode(root) + b"/bad-\xff-utf8"
    with open(raw, "wb") as file:
        file.write(b"not UTF-8")
    (root / "new\nline\x1b[31m").write_bytes(b"control characters")
    strays = dict(backend.strays())
    assert {"fifo", "link", "outside", "bad-\udcff-utf8", "new\nline\x1b[31m"} <= set(strays)
    assert all(isinstance(path, str) and reason for path, reason in strays.items())
    assert list(backend) == ["k"] and backend.load("fifo") is None and "link" not in backend
    with pytest.raises(StoreError):
        backend["fifo"] = b"x"  # never replaces another tool's FIFO
    backend.clear()
    assert os.path.exists(raw) and (root / "fifo").exists() and (root / "outside").is_symlink()


# -- closing --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "json", "text"])
def test_a_closed_local_store_refuses_every_call_with_a_store_error(tmp_path: Path, kind: str) -> None:
    backend: Any = {
        "folder": lambda: FileSystemJsonBackend(tmp_path / "f"),
        "json": lambda: JsonCache(tmp_path / "j"),
        "text": lambda: TextCache(tmp_path / "t"),
    }[kind]()
    backend["k"] = "v"
    backend.close()
    backend.close()  # twice: nothing more
    assert backend.closed
    calls: list[Callable[[], object]] = [
        lambda: backend.load("k"),
        lambda: backend.dump("k", "w"),
        lambda: backend.delete("k"),
        lambda: "k" in backend,
        lambda: len(backend),
        lambda: list(backend),
        lambda: backend.load_many(["k"]),
        lambda: backend.dump_many({"a": "b"}),
        lambda: backend.pop("k"),
        backend.clear,
        lambda: list(backend.strays()),
        lambda: backend.stat("k"),
        lambda: backend.lock("k").acquire(),
    ]
    if kind != "folder":
        calls += [backend.purge, lambda: backend.peek("k"), lambda: backend.expires("k")]
    for call in calls:
        with pytest.raises(StoreError, match="closed"):
            call()
    reopened = type(backend)(backend.root)
    assert reopened["k"] == "v" and list(reopened) == ["k"]  # nothing was written after close


class _Pausing:
    """Stops the thread of the ``at``-th call of its hook until ``go``: a close() from another
    thread then lands at a known point (a test hook for timing, never for the result)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0
        self.reached, self.go = threading.Event(), threading.Event()

    def tick(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            assert self.go.wait(60)


def _close_while_paused(backend: Any, pause: _Pausing, work: Callable[[], Any]) -> list[BaseException]:
    """Run ``work`` in a thread, close ``backend`` while the thread is paused, and return what it raised."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert pause.reached.wait(60)
    backend.close()
    pause.go.set()
    worker.join()
    return failures


class _PausingFolder(FileSystemRawBackend):
    pause: _Pausing

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        self.pause.tick()
        return super()._dump(key, data, if_absent)


def test_a_close_in_the_middle_of_a_bulk_write_stops_it_with_a_store_error(tmp_path: Path) -> None:
    backend = _PausingFolder(tmp_path / "t")
    backend.pause = _Pausing(at=101)  # "first", then 99 keys of the bulk write; close before the 100th
    backend["first"] = b"0"
    items = {f"k{i:05d}": b"1" for i in range(5_000)}
    failures = _close_while_paused(backend, backend.pause, lambda: backend.dump_many(items))
    assert len(failures) == 1 and isinstance(failures[0], StoreError) and "closed" in str(failures[0])
    root = tmp_path / "t"
    written = set(os.listdir(root)) - {MARKER}
    assert sorted(FileSystemRawBackend(root)) == sorted(written) == ["first", *sorted(items)[:99]]
    assert list(FileSystemRawBackend(root).strays()) == []  # nothing torn, nothing left aside


# -- bad input in every argument -------------------------------------------------------------

BAD_TIMEOUTS = [-1, -1e-9, math.nan, -math.inf, 1e300, "5", True, [1], b"1"]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_a_bad_timeout_is_refused_naming_it_before_anything_is_written(tmp_path: Path, timeout: Any) -> None:
    for make in (lambda: JsonCache(tmp_path / "c", timeout=timeout), lambda: MemoryCache(timeout=timeout)):
        with pytest.raises(ValueError, match="timeout"):
            make()
    assert not (tmp_path / "c").exists()
    for cache in (JsonCache(tmp_path / "d"), TextCache(tmp_path / "e"), MemoryCache()):
        with pytest.raises(ValueError, match="timeout"):
            cache.dump("k", "v", timeout=timeout)
        assert "k" not in cache and len(cache) == 0
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


@pytest.mark.parametrize("bound", [0, -1, True, False, 1.5, "3", None, math.inf])
@pytest.mark.parametrize("name", ["maxsize", "maxbytes"])
def test_a_bad_bound_of_a_memory_cache_is_refused_naming_it(name: str, bound: Any) -> None:
    with pytest.raises(ValueError, match=name):
        MemoryCache(**{name: bound})


@pytest.mark.parametrize("layout", [None, 1, "PLAIN", "", "escaped ", b"plain"])
def test_a_bad_layout_is_refused_before_any_io(tmp_path: Path, layout: Any) -> None:
    with pytest.raises(ValueError, match="layout"):
        FileSystemRawBackend(tmp_path / "t", layout=layout)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(("root", "error"), [("a\0b", ValueError), (b"/tmp/x", TypeError), (3, TypeError)])
def test_a_bad_root_is_refused_naming_it(root: Any, error: type[Exception]) -> None:
    for make in (FileSystemJsonBackend, JsonCache, TextCache):
        with pytest.raises(error, match="root"):
            make(root)


# -- pressure: a full disk, a read-only folder -------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    with servers.small_disk(tmp_path / "mnt", "1m") as mount:
        yield mount


def test_a_full_disk_is_a_store_error_that_keeps_the_old_value(small_disk: Path) -> None:
    folder = FileSystemRawBackend(small_disk / "r")
    cache = JsonCache(small_disk / "c")
    folder["k"] = b"old"
    cache["k"] = "old"
    for write in (lambda: folder.dump("k", b"x" * (2 << 20)), lambda: cache.dump("k", "x" * (2 << 20))):
        with pytest.raises(StoreError, match="No space"):
            write()
    assert folder["k"] == b"old" and cache["k"] == "old"
    written = 0
    with pytest.raises(StoreError, match="No space"):
        for written in range(10_000):
            folder[f"f{written}"] = b"x" * 4000
    assert len(folder) == written + 1  # every write that returned is there, whole
    leftovers = [
        name
        for _, _, names in os.walk(small_disk)
        for name in names
        if name.startswith("~back") and name != MARKER
    ]
    assert leftovers == []  # a failed write leaves no temporary file
    folder.clear()
    folder["after"] = b"1"  # service once there is room again
    assert list(folder) == ["after"] and cache["k"] == "old"


def test_a_read_only_cache_folder_reads_and_says_expired_entries_are_absent(small_disk: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(small_disk / "c", timeout=10, clock=clock)
    cache.dump_many({"a": 1, "d/b": 2, "f": 3})
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert cache["a"] == 1 and sorted(cache) == ["a", "d/b", "f"]
    with pytest.raises(StoreError, match="Read-only"):
        cache["a"] = 9
    clock.advance(10)
    # Expired: absent for every call, though the folder cannot be tidied now.
    assert (cache.load("a"), "d/b" in cache, len(cache), list(cache), cache.delete("f")) == (
        None,
        False,
        0,
        [],
        False,
    )
    with pytest.raises(StoreError, match="Read-only"):
        cache.purge()  # purge's job is removing: it says why it cannot
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert cache.purge() == 3 and len(cache) == 0


# -- processes: fork after first use, 8 processes on one cache ----------------------------------


def _in_child(work: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: exit without running the parent's cleanup
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def test_a_cache_used_before_a_fork_serves_the_childs_writes(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path, timeout=60)
    memory = MemoryCache()
    cache["k"] = 1
    memory["k"] = 1
    assert cache["k"] == 1 and memory["k"] == 1  # the memo holds k

    def child() -> None:
        assert cache["k"] == 1 and memory["k"] == 1
        cache["k"] = 2  # a rewrite of the same size
        memory["k"] = 2  # the child's own copy
        assert cache["k"] == 2

    _, status = os.waitpid(_in_child(child), 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache["k"] == 2 and memory["k"] == 1


def test_eight_processes_on_one_cache_lose_nothing_and_agree_on_one_winner(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path, timeout=None)
    cache["warm"] = 0  # first use before the fork

    def child(number: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(40):
                cache[f"p{number}/k{i}"] = [number, i]
                cache.dump("shared", number)
                assert cache.setdefault(f"once{i}", number) == cache[f"once{i}"]
            cache.purge()

        return work

    pids = [_in_child(child(number)) for number in range(8)]
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0] * 8
    assert len(cache) == 1 + 8 * 40 + 1 + 40
    assert all(cache[f"p{n}/k{i}"] == [n, i] for n in range(8) for i in range(40))
    assert cache["shared"] in range(8) and all(cache[f"once{i}"] in range(8) for i in range(40))
    assert [
        name
        for _, _, names in os.walk(tmp_path)
        for name in names
        if name.startswith("~back") and name != MARKER
    ] == []


@pytest.mark.parametrize("clock", [5, "time.time", 1.5])
def test_a_clock_that_cannot_be_called_is_refused_naming_it(tmp_path: Path, clock: Any) -> None:
    for make in (lambda: JsonCache(tmp_path / "c", clock=clock), lambda: MemoryCache(clock=clock)):
        with pytest.raises(TypeError, match="clock"):
            make()


@pytest.mark.parametrize("durable", ["no", None, 2, 1.0, [True]])
def test_durable_is_true_or_false(tmp_path: Path, durable: Any) -> None:
    for make in (FileSystemJsonBackend, JsonCache):
        with pytest.raises(TypeError, match="durable"):
            make(tmp_path / "t", durable=durable)
    assert not (tmp_path / "t").exists()


def test_a_pickled_cache_counts_on_its_own_from_zero(tmp_path: Path) -> None:
    import pickle

    for cache in (JsonCache(tmp_path), MemoryCache()):
        cache["k"] = 1
        assert cache["k"] == 1
        copy = pickle.loads(pickle.dumps(cache))
        assert copy["k"] == 1 and copy.get("x") is None
        assert (copy.stats.hits, copy.stats.misses) == (1, 1) and cache.stats.hits == 1


@pytest.mark.parametrize("bound", [{"maxsize": 2}, {"maxbytes": 2}])
def test_a_full_memory_cache_drops_its_expired_entries_before_a_fresh_one(bound: dict[str, int]) -> None:
    """cachetools' TTLCache expires before it evicts: a fresh entry never goes while an expired one stays."""
    clock = FrozenClock()
    cache = MemoryCache(timeout=60, clock=clock, **bound)
    cache["old"] = 1  # the least recently used, fresh
    cache.dump("short", 2, timeout=1)
    clock.advance(1)  # short expired, not yet met; old is still the least recently used
    cache["new"] = 3
    assert sorted(cache) == ["new", "old"]


@pytest.mark.parametrize("layout", ["plain", "escaped"])
@pytest.mark.parametrize("thing", ["file", "symlink", "fifo"])
def test_a_users_thing_at_the_lock_folders_name_is_named_as_the_cause(
    tmp_path: Path, layout: str, thing: str
) -> None:
    root = tmp_path / "t"
    backend = FileSystemJsonBackend(root, layout=layout)
    backend["k"] = 1
    place = root / "~locks"
    {
        "file": lambda: place.write_bytes(b"the user's"),
        "symlink": lambda: place.symlink_to(tmp_path),
        "fifo": lambda: os.mkfifo(place),
    }[thing]()
    with pytest.raises(StoreError, match="lock folder '~locks'") as caught:
        with backend.lock("k", timeout=0):
            pass  # ok: the acquire is what must raise
    assert "cannot coexist" not in str(caught.value)  # not blamed on the layout
    assert "~locks" in dict(backend.strays()) and backend["k"] == 1


# -- the same failure, its real cause: the caller's file is not the store's ---------------------


@pytest.mark.parametrize("layout", ["plain", "escaped"])
def test_a_folder_or_missing_file_given_to_dump_file_or_load_file_is_named_as_the_cause(
    tmp_path: Path, layout: str
) -> None:
    (tmp_path / "outdir").mkdir()
    backend = FileSystemRawBackend(tmp_path / "t", layout=layout)
    backend["k"] = b"1"
    calls = {
        "load_file": lambda: backend.load_file("k", tmp_path / "outdir"),
        "dump_file": lambda: backend.dump_file("k2", tmp_path / "outdir"),
        "missing": lambda: backend.dump_file("k3", tmp_path / "typo.bin"),
    }
    for name, call in calls.items():
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert ("outdir" if name != "missing" else "typo.bin") in message, message
        assert "cannot coexist" not in message and "in the way" not in message
    assert sorted(backend) == ["k"] and backend["k"] == b"1"


def test_dump_file_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    for layout in ("auto", "plain", "escaped"):
        backend = FileSystemRawBackend(tmp_path / layout, layout=layout)
        with pytest.raises(StoreError, match=r"typo\.bin"):
            backend.dump_file("k", tmp_path / "typo.bin")
        assert not (tmp_path / layout).exists()  # no folder, no layout file: bad input changes nothing


def test_a_fork_while_another_thread_is_inside_a_call_leaves_the_child_a_working_cache() -> None:
    """A thread stuck inside a call (the cache's lock held: its clock blocks) when another
    forks: the child's calls go on (its locks are new), as after any fork."""
    inside, release = threading.Event(), threading.Event()
    stuck: list[threading.Thread] = []

    def clock() -> float:
        if threading.current_thread() in stuck:
            inside.set()
            release.wait(10)
        return 1_800_000_000.0

    cache = MemoryCache(clock=clock)
    cache["k"] = 1
    stuck.append(threading.Thread(target=lambda: cache.load("k")))
    stuck[0].start()
    assert inside.wait(10)

    def child() -> None:
        signal.alarm(5)  # a deadlock ends the child with SIGALRM
        assert cache["k"] == 1
        cache["j"] = 3
        assert cache["j"] == 3 and sorted(cache) == ["j", "k"]

    pid = _in_child(child)
    _, status = os.waitpid(pid, 0)
    release.set()
    stuck[0].join()
    assert os.waitstatus_to_exitcode(status) == 0


class _PausingCache(JsonCache):
    pause: _Pausing

    def _still_open(self) -> None:
        self.pause.tick()
        super()._still_open()


class _PausingRaw(FileSystemRawBackend):
    pause: _Pausing

    def _still_open(self) -> None:
        self.pause.tick()
        super()._still_open()


@pytest.mark.parametrize("kind", ["clear", "purge"])
def test_a_close_in_the_middle_of_clear_or_purge_stops_it(tmp_path: Path, kind: str) -> None:
    """Walks hold descriptors of their own: they too stop at close(), and remove nothing after."""
    clock, root = FrozenClock(), tmp_path / "t"
    backend: Any = _PausingCache(root, timeout=1, clock=clock) if kind == "purge" else _PausingRaw(root)
    backend.pause = _Pausing(at=51)  # the walk removed 50 keys; close before the 51st
    value = 1 if kind == "purge" else b"1"
    backend.dump_many({f"d{i % 10}/k{i:05d}": value for i in range(1_500)})
    clock.advance(1)
    sweep = backend.purge if kind == "purge" else backend.clear
    failures = _close_while_paused(backend, backend.pause, sweep)
    assert len(failures) == 1 and isinstance(failures[0], StoreError) and "closed" in str(failures[0])
    left = [name for _, _, names in os.walk(root) for name in names if name != MARKER]
    assert len(left) == 1_500 - 50  # nothing removed after close
