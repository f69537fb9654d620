"""Reliability I: each defect the attack campaign found, reproduced through the public API.

Every test here failed before its fix. The long random attacks (kills,
multi-process races, hostile input) are in ``test_attacks.py``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from servers import S3Target

from backends import (
    BaseBackend,
    CorruptValueError,
    FileSystemJsonBackend,
    FileSystemRawBackend,
    JsonCache,
    S3JsonBackend,
    SerializationError,
    SqliteJsonBackend,
    StoreError,
    StoreUnavailableError,
    TextCache,
    TieredBackend,
    VolatileBackend,
)
from backends.filesystem.tree import MARKER
from backends.locks import Lock
from backends.testing import strategies as s

WORKER = str(Path(__file__).with_name("_worker.py"))

LOCAL: dict[str, Callable[[Path], BaseBackend[Any, Any]]] = {
    "fs-json": FileSystemJsonBackend,
    "fs-raw": FileSystemRawBackend,
    "cache-json": JsonCache,
    "cache-text": TextCache,
    "tier": lambda root: TieredBackend(JsonCache(root / "cache"), FileSystemJsonBackend(root / "origin")),
    "sqlite-json": lambda root: SqliteJsonBackend(root / "kv.db"),
}


def sample(backend: BaseBackend[Any, Any]) -> Any:
    family = backend.codec.name
    return b"v" if family == "raw" else "v"


# -- 1. a closed backend never acts on a reused descriptor ------------------------------


def test_a_closed_backend_never_writes_into_another_backends_folder(tmp_path: Path) -> None:
    a = FileSystemJsonBackend(tmp_path / "a")
    a.dump("k", 1)
    a.close()
    b = FileSystemJsonBackend(tmp_path / "b")
    b.dump("mine", 1)
    with pytest.raises(StoreError, match="closed"):
        a.dump("x", 2)
    with pytest.raises(StoreError, match="closed"):
        a.clear()
    assert sorted(b) == ["mine"]
    assert a.closed and not b.closed


CLOSED_CALLS: dict[str, Callable[[BaseBackend[Any, Any], Any], object]] = {
    "dump": lambda b, v: b.dump("k", v),
    "dump_if_absent": lambda b, v: b.dump("new", v, if_absent=True),
    "load": lambda b, v: b.load("k"),
    "contains": lambda b, v: "k" in b,
    "len": lambda b, v: len(b),
    "iter": lambda b, v: list(b),
    "list": lambda b, v: list(b.list()),
    "delete": lambda b, v: b.delete("k"),
    "pop": lambda b, v: b.pop("k", None),
    "clear": lambda b, v: b.clear(),
    "load_many": lambda b, v: b.load_many(["k"]),
    "dump_many": lambda b, v: b.dump_many({"k": v}),
    "lock": lambda b, v: b.lock("k").acquire(),
}


@pytest.mark.parametrize("call", sorted(CLOSED_CALLS))
@pytest.mark.parametrize("kind", sorted(LOCAL))
def test_every_call_on_a_closed_backend_raises_and_touches_nothing(
    tmp_path: Path, kind: str, call: str
) -> None:
    closed = LOCAL[kind](tmp_path / "closed")
    value = sample(closed)
    closed.dump("k", value)
    assert not closed.closed
    closed.close()
    assert closed.closed
    other = LOCAL[kind](tmp_path / "other")  # likely gets the freed descriptor numbers
    other.dump("k", value)
    with pytest.raises(StoreError, match="closed"):
        CLOSED_CALLS[call](closed, value)
    assert list(other) == ["k"] and other.load("k") == value
    reopened = LOCAL[kind](tmp_path / "closed")
    assert list(reopened) == ["k"] and reopened.load("k") == value


# -- 2. removing an expired entry never hides or strands a fresh one ---------------------


class HookedClock(FrozenClock):
    """A frozen clock that runs ``hook(n)`` at its n-th reading: a forced interleaving."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0
        self.hook: Callable[[int], None] | None = None

    def __call__(self) -> float:
        self.readings += 1
        if self.hook is not None:
            self.hook(self.readings)
        return self.now


def expired_entry(root: Path) -> tuple[JsonCache, JsonCache, HookedClock]:
    """A cache whose entry "k" has expired, and a second cache on the same folder."""
    clock = HookedClock()
    remover = JsonCache(root, timeout=10, clock=clock)
    remover.dump("k", "old")
    clock.advance(20)
    writer = JsonCache(root, timeout=300, clock=FrozenClock(clock.now))
    return remover, writer, clock


@pytest.mark.parametrize("meet", ["load", "contains", "purge", "keys", "delete"])
def test_a_fresh_entry_written_while_an_expired_one_is_removed_stays_visible(
    tmp_path: Path, meet: str
) -> None:
    remover, writer, clock = expired_entry(tmp_path)
    seen: list[object] = []
    looked = 2 if meet == "purge" else 1  # purge reads the clock once before it looks

    def interleave(reading: int) -> None:
        if reading == looked:  # the remover has just seen the entry expired
            writer.dump("k", "fresh")
        elif reading > looked:  # it decides what to remove: the fresh value stays visible
            seen.append(writer.load("k"))

    clock.readings, clock.hook = 0, interleave
    {
        "load": lambda: remover.load("k"),
        "contains": lambda: "k" in remover,
        "purge": remover.purge,
        "keys": lambda: list(remover),
        "delete": lambda: remover.delete("k"),
    }[meet]()
    clock.hook = None
    assert seen and set(seen) == {"fresh"}
    assert remover.load("k") == writer.load("k") == "fresh"
    assert not [name for name in os.listdir(tmp_path) if name.startswith("~") and name != MARKER]


def test_a_remover_killed_while_removing_never_strands_a_fresh_value(tmp_path: Path) -> None:
    # The worker dies (os._exit) at the very moment the old code had moved
    # the fresh value aside; the new code holds a flock, which the kernel drops.
    proc = subprocess.run(
        [sys.executable, WORKER, "die-removing", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 17, proc.stderr
    assert JsonCache(tmp_path).load("k") == "fresh"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".expired")]


# -- 3. pop hands each value to exactly one caller ----------------------------------------


@pytest.mark.parametrize("kind", ["fs-json", "cache-json", "tier", "volatile", "sqlite-json"])
def test_threads_popping_the_same_keys_get_each_value_once(tmp_path: Path, kind: str) -> None:
    backend = VolatileBackend() if kind == "volatile" else LOCAL[kind](tmp_path)
    keys = [f"p/{i}" for i in range(300)]
    backend.dump_many({key: key for key in keys})
    barrier = threading.Barrier(6)
    got: list[list[str]] = [[] for _ in range(6)]

    def pop_all(index: int) -> None:
        barrier.wait()
        got[index] = [value for key in keys if (value := backend.pop(key, None)) is not None]

    threads = [threading.Thread(target=pop_all, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handed = sorted(value for values in got for value in values)
    assert handed == sorted(keys)  # each value once: none twice, none lost
    assert len(backend) == 0


def test_pop_takes_exactly_the_value_it_removes(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    backend["k"] = "v"
    assert backend.pop("k") == "v"
    assert backend.pop("k", "absent") == "absent"
    with pytest.raises(KeyError):
        backend.pop("k")
    assert set(os.listdir(tmp_path)) - {MARKER} == set()  # the taken file is gone, not left aside


# -- 4. a tier never puts an older value back over a newer write ---------------------------


class SlowOrigin(FileSystemJsonBackend):
    """A real folder whose loads run ``during`` after reading: the moment another writer gets in."""

    during: Callable[[], None] | None = None

    def _load(self, key: str) -> Any:
        data = super()._load(key)
        self._interleave()
        return data

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        found = super()._load_many(keys)
        self._interleave()
        return found

    def _interleave(self) -> None:
        during, self.during = self.during, None
        if during is not None:
            during()


def racing_tiers(root: Path, lease: float = 30) -> tuple[TieredBackend, TieredBackend, FrozenClock]:
    clock = FrozenClock()
    origin = SlowOrigin(root / "origin")
    origin["k"] = "old"
    slow = TieredBackend(JsonCache(root / "cache", clock=clock), origin, lease=lease)
    other = TieredBackend(JsonCache(root / "cache", clock=clock), FileSystemJsonBackend(root / "origin"))
    return slow, other, clock


@pytest.mark.parametrize("read", ["load", "load_many"])
def test_a_loader_whose_lease_ran_out_does_not_fill_over_a_newer_write(tmp_path: Path, read: str) -> None:
    slow, other, clock = racing_tiers(tmp_path)

    def writer_gets_in() -> None:
        clock.advance(31)  # the loader's lease (30 s) has run out
        other["k"] = "new"  # takes the lock over, writes origin then cache

    assert isinstance(slow.origin, SlowOrigin)
    slow.origin.during = writer_gets_in
    loaded = {
        "load": lambda: slow.load("k"),
        "load_many": lambda: slow.load_many(["k"])["k"],
    }[read]()
    assert loaded in ("old", "new")
    assert slow.cache.load("k") in (None, "new")
    assert slow.load("k") == other.load("k") == "new"


def test_bulk_loads_fill_only_under_the_key_lock(tmp_path: Path) -> None:
    slow, other, _ = racing_tiers(tmp_path, lease=30)
    with other.cache.lock("k", ttl=30):  # a writer or loader holds "k"
        assert slow.load_many(["k"]) == {"k": "old"}
        assert "k" not in slow.cache  # loaded for the caller, not put in the cache


# -- 5. a failed origin write drops the cache entry (also test_tiered.py, over HTTP) -----


class FailingOrigin(FileSystemJsonBackend):
    """Applies every write, then reports it failed: a response lost after S3 applied it."""

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        super()._dump(key, data, if_absent)
        raise StoreUnavailableError("every response was lost")

    def _delete(self, key: str) -> bool:
        super()._delete(key)
        raise StoreUnavailableError("every response was lost")

    def _pop(self, key: str) -> Any:
        super()._pop(key)
        raise StoreUnavailableError("every response was lost")


@pytest.mark.parametrize("write", ["dump", "delete", "pop", "dump_many", "delete_many"])
def test_a_failed_origin_write_leaves_no_cache_entry(tmp_path: Path, write: str) -> None:
    origin = FailingOrigin(tmp_path / "origin")
    FileSystemJsonBackend(tmp_path / "origin")["k"] = "old"
    tier = TieredBackend(JsonCache(tmp_path / "cache"), origin)
    assert tier["k"] == "old" and "k" in tier.cache
    with pytest.raises(StoreUnavailableError):
        {
            "dump": lambda: tier.dump("k", "new"),
            "delete": lambda: tier.delete("k"),
            "pop": lambda: tier.pop("k"),
            "dump_many": lambda: tier.dump_many({"k": "new"}),
            "delete_many": lambda: tier.delete_many(["k"]),
        }[write]()
    assert "k" not in tier.cache
    assert tier.load("k") == FileSystemJsonBackend(tmp_path / "origin").load("k")


# -- 6. a tier checks values against both codecs before the first write -------------------


def test_a_tier_writes_nothing_its_cache_cannot_store(tmp_path: Path) -> None:
    tier = TieredBackend(JsonCache(tmp_path), VolatileBackend())
    with pytest.raises(SerializationError):
        tier.dump("k", b"x")
    with pytest.raises(SerializationError):
        tier.dump_many({"a": 1, "b": {1, 2}})
    assert list(tier.origin) == [] and list(tier.cache) == []
    assert tier.load("k") is None and tier.load_many(["a", "b"]) == {}
    tier["k"] = [1]
    assert tier["k"] == [1]


# -- 7. reads see the folder now at the path ----------------------------------------------


@pytest.mark.parametrize("kind", ["fs-json", "cache-json"])
def test_a_reader_sees_a_root_deleted_and_made_again(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    reader = LOCAL[kind](root)
    reader.dump("before", "v")
    assert reader.load("before") == "v"
    shutil.rmtree(root)
    root.mkdir()
    LOCAL[kind](root).dump("k", "v")
    assert reader.load("k") == "v"
    assert "k" in reader and len(reader) == 1 and list(reader) == ["k"]
    assert reader.load("before") is None


def test_reading_a_deleted_root_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    reader = FileSystemJsonBackend(tmp_path / "root")
    shutil.rmtree(tmp_path / "root")
    assert reader.load("k") is None and len(reader) == 0 and "k" not in reader
    assert not (tmp_path / "root").exists()
    reader["k"] = 1
    assert FileSystemJsonBackend(tmp_path / "root")["k"] == 1


# -- 8. every valid key has a file ----------------------------------------------------------

DOTTED = ["x" * 200 + "..", "x" * 200 + ".", "d/" + "x" * 400 + ".", "x" * 400 + "..", "x" * 199 + ".."]


@pytest.mark.parametrize("kind", ["fs-json", "cache-json"])
def test_long_keys_whose_last_piece_is_dots_round_trip(tmp_path: Path, kind: str) -> None:
    backend = LOCAL[kind](tmp_path)
    for key in DOTTED:
        assert backend.dump(key, key, if_absent=True) is True
        assert backend.dump(key, key, if_absent=True) is False
        assert backend.load(key) == key and key in backend
    assert sorted(backend) == sorted(DOTTED)
    assert sorted(LOCAL[kind](tmp_path)) == sorted(DOTTED)  # listing decodes exactly
    for key in DOTTED:
        assert backend.delete(key) is True
    assert set(os.listdir(tmp_path)) - {MARKER} == set()


# -- 9, 10. foreign things at a key's name: one answer, never moved, never blocking ----------


def make_foreign(root: Path, what: str, name: str = "k") -> None:
    path = root / name
    if what == "folder":
        path.mkdir()
        (path / "inside").write_text("theirs")
    elif what == "fifo":
        os.mkfifo(path)
    else:
        (root.parent / "outside").write_text('"outside"')
        os.symlink(root.parent / "outside", path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("what", ["folder", "fifo", "symlink"])
@pytest.mark.parametrize("kind", ["fs-json", "fs-raw", "cache-json"])
def test_a_foreign_thing_at_a_keys_name_is_absent_and_left_alone(
    tmp_path: Path, kind: str, what: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    backend = LOCAL[kind](root)
    make_foreign(root, what)
    before = os.lstat(root / "k")
    assert backend.load("k") is None
    assert backend.get("k", "absent") == "absent"
    assert "k" not in backend
    assert backend.load_many(["k"]) == {}
    assert list(backend) == [] and len(backend) == 0
    assert backend.delete("k") is False
    assert backend.pop("k", "absent") == "absent"
    if isinstance(backend, FileSystemRawBackend):
        target = io.BytesIO()
        assert backend.load_file("k", target) is False
    if isinstance(backend, JsonCache):
        assert backend.purge() == 0
    with pytest.raises(StoreError, match="not a file"):
        backend.dump("k", sample(backend))
    with pytest.raises(StoreError, match="not a file"):
        backend.dump("k", sample(backend), if_absent=True)
    backend.clear()
    after = os.lstat(root / "k")
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


# -- 11. a tag that cannot be sent is ignored -------------------------------------------------


@pytest.mark.parametrize(
    "tag", [b'"bad\r\nInjected: 1"', "\u00e9t\u00e9".encode(), b'"' + b"e" * 2000 + b'"']
)
def test_a_garbage_etag_attribute_means_a_plain_load(
    tmp_path: Path, moto_server: S3Target, tag: bytes
) -> None:
    clock = FrozenClock()
    origin = S3JsonBackend(moto_server.bucket, prefix="tags", client=moto_server.client)
    origin["k"] = "v"
    tier = TieredBackend(JsonCache(tmp_path, clock=clock), origin)
    assert tier["k"] == "v"
    path = tier.cache.path("k")  # type: ignore[attr-defined]
    os.setxattr(path, "user.backends.etag", tag)
    clock.advance(301)
    assert tier["k"] == "v"
    assert tier.stats.misses == 2 and tier.stats.revalidations == 0
    origin.clear()


# -- 12. errors are translated once --------------------------------------------------------


def test_an_error_of_the_tree_raised_inside_a_store_reaches_the_caller_unchanged(tmp_path: Path) -> None:
    class Unavailable(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise StoreUnavailableError("the source store went away", operation="load_file", key="src")

    backend = FileSystemRawBackend(tmp_path)
    with pytest.raises(StoreUnavailableError, match="the source store went away") as raised:
        backend.dump_file("k", Unavailable())
    assert type(raised.value) is StoreUnavailableError
    assert list(backend) == []


# -- 13. out-of-range timeouts and leases -----------------------------------------------


def test_an_infinite_timeout_means_never(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path, timeout=math.inf, clock=clock)
    cache["a"] = 1
    cache.dump("b", 2, timeout=math.inf)
    clock.advance(10**9)
    assert cache.load_many(["a", "b"]) == {"a": 1, "b": 2}
    assert cache.expires("a") is None and cache.timeout is None


@pytest.mark.parametrize("bad", [1e300, 10**30, -1, math.nan, -math.inf, "10", True])
def test_an_out_of_range_timeout_is_refused_at_the_call(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        JsonCache(tmp_path / "a", timeout=bad)
    cache = JsonCache(tmp_path / "b")
    with pytest.raises(ValueError, match="timeout"):
        cache.dump("k", 1, timeout=bad)
    assert list(cache) == []


@pytest.mark.parametrize("bad", [math.inf, 1e300, 10**30, 0, -1, math.nan])
def test_an_endless_lease_is_refused(tmp_path: Path, bad: Any) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    with pytest.raises(ValueError, match="ttl"):
        backend.lock("k", ttl=bad)
    with pytest.raises(ValueError, match="lease"):
        TieredBackend(JsonCache(tmp_path / "c"), backend, lease=bad)
    with pytest.raises(ValueError, match="timeout"):
        backend.lock("k", timeout=math.nan)
    with backend.lock("k", timeout=math.inf, ttl=5) as held:
        assert held.held  # an endless wait is fine: a lease is not


# -- 14. circular and deeply nested values ------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fs-json", "cache-json", "tier", "s3"])
def test_circular_values_are_refused_and_deep_documents_are_corrupt(
    tmp_path: Path, kind: str, moto: S3Target
) -> None:
    if kind == "s3":
        backend: BaseBackend[Any, Any] = S3JsonBackend(moto.bucket, prefix="deep", client=moto.client)
    else:
        backend = LOCAL[kind](tmp_path)
    shared = [1, 2]
    backend["dag"] = [shared, shared, {"a": shared}]  # shared, not circular: fine
    for value in (s.circular_list(), s.circular_dict()):
        with pytest.raises(SerializationError):
            backend.dump("k", value)
        with pytest.raises(SerializationError):
            backend.dump_many({"ok": 1, "k": value})
    assert sorted(backend) == ["dag"]
    deep = b"[" * 100_000 + b"]" * 100_000
    if kind == "s3":
        moto.client.put_object(Bucket=moto.bucket, Key="deep/doc", Body=deep)
    else:
        place = backend.origin if isinstance(backend, TieredBackend) else backend
        path = place.path("doc")  # type: ignore[attr-defined]
        path.write_bytes(deep)
        os.utime(path, (time.time(), time.time() + 3600))  # a cache entry's deadline
    with pytest.raises(CorruptValueError):
        backend.load("doc")
    with pytest.raises(CorruptValueError):
        backend.load_many(["doc"])


# -- 15. Lock is abstract --------------------------------------------------------------------


def test_the_lock_base_class_cannot_be_made(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="abstract"):
        backend = FileSystemJsonBackend(tmp_path)
        Lock("k", 1, 1, owner=backend, clock=backend.clock, translating=backend._translating)  # type: ignore[abstract]


# -- 16. killed writers' temporary files are swept -----------------------------------------


@pytest.mark.parametrize("kind", ["fs-json", "cache-json"])
def test_clear_and_purge_sweep_old_temporary_files_only(tmp_path: Path, kind: str) -> None:
    backend = JsonCache(tmp_path, timeout=None) if kind == "cache-json" else LOCAL[kind](tmp_path)
    backend["d/k"] = "v"
    dead = f"~backends-{0xDEAD:032x}.tmp"
    for folder in (tmp_path, tmp_path / "d+"):
        (folder / dead).write_bytes(b"half")
        (folder / f"~{0xDEAD:016x}.expired").write_bytes(b"old")  # an earlier version's
    users = ["~WRL0001.tmp", "~mine.txt", "~notes.tmp", "~x.expired"]
    for name in users:
        (tmp_path / name).write_bytes(b"not ours to sweep")
    sweep = backend.purge if isinstance(backend, JsonCache) else backend.clear
    sweep()
    assert (tmp_path / dead).exists()  # written a moment ago: maybe a live writer's
    backend.clock = lambda: time.time() + 3601  # an hour later
    sweep()
    left = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.name != MARKER)
    expected = users if kind == "fs-json" else ["d+", "d+/k", *users]
    assert left == expected


@pytest.mark.parametrize("call", sorted(CLOSED_CALLS))
def test_every_call_on_a_closed_s3_backend_raises(moto: S3Target, call: str) -> None:
    closed = S3JsonBackend(moto.bucket, prefix="closed", access_key="a", secret_key="b", region="us-east-1")
    closed.dump("k", "v")
    closed.close()
    assert closed.closed
    with pytest.raises(StoreError, match="closed"):
        CLOSED_CALLS[call](closed, "v")
    assert S3JsonBackend(moto.bucket, prefix="closed", client=moto.client).load("k") == "v"
