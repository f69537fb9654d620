"""The SQLite store: what it promises beyond the shared suites (which run on it from conftest)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import sqlite3
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock

import backends
from backends import (
    SqliteJsonBackend,
    SqliteRawBackend,
    StoreError,
    StoreUnavailableError,
    TieredBackend,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJsonBackend]:
    with SqliteJsonBackend(tmp_path / "kv.db") as made:
        yield made


def statements(backend: SqliteJsonBackend) -> list[str]:
    """The SQL statements this thread's connection runs from now on (SQLite's own trace)."""
    seen: list[str] = []
    backend._db().set_trace_callback(seen.append)
    return seen


# -- by URL, in a tier, pickled, in the command ------------------------------------------------


def test_it_opens_by_url_joins_a_tier_and_pickles(tmp_path: Path) -> None:
    store = backends.open(f"sqlite://{tmp_path}/data/kv.db?timeout=60&busy_timeout=1&durable=true")
    assert isinstance(store, SqliteJsonBackend)
    assert (store.timeout, store.busy_timeout, store.durable) == (60, 1, True)
    assert isinstance(backends.open(f"sqlite://{tmp_path}/kv.db?format=raw"), SqliteRawBackend)
    tier = backends.open(f"cache://{tmp_path}/cache::sqlite://{tmp_path}/data/kv.db")
    assert isinstance(tier, TieredBackend)
    tier["users/42"] = {"name": "Ada"}
    assert store["users/42"] == {"name": "Ada"}  # the folder was made at the first write
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store and copy["users/42"] == {"name": "Ada"} and copy.timeout == 60
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteJsonBackend(tmp_path / "kv.db", busy_timeout=-1)
    assert repr(SqliteJsonBackend(tmp_path / "kv.db", timeout=5)).endswith("kv.db', timeout=5)")


# -- errors ----------------------------------------------------------------------------------


def test_a_writer_locked_out_past_busy_timeout_gets_store_unavailable(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db", busy_timeout=0)
    store["k"] = 1
    other = sqlite3.connect(tmp_path / "kv.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction
    try:
        with pytest.raises(StoreUnavailableError, match="busy_timeout=0 s"):
            store["k"] = 2
        assert store["k"] == 1  # readers never wait for the writer (write-ahead log)
    finally:
        other.execute("ROLLBACK")
        other.close()
    store["k"] = 2
    assert store["k"] == 2


def test_a_file_that_is_not_a_database_is_named_in_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"just some text, not SQLite\n" * 100)
    with pytest.raises(StoreError, match=r"notes.txt' is not an SQLite database"):
        SqliteJsonBackend(tmp_path / "notes.txt").load("k")
    assert (tmp_path / "notes.txt").read_bytes() == b"just some text, not SQLite\n" * 100


# -- expiry: removing an expired entry never removes a fresh one ---------------------------------


@pytest.mark.parametrize("meet", ["dump_if_absent"])
def test_a_fresh_value_written_while_an_expired_one_is_met_is_kept(tmp_path: Path, meet: str) -> None:
    # A read removes nothing (test_sqlite_attacks: readers never wait for a
    # writer); a write over an expired entry replaces it only while it is expired.
    class Hooked(FrozenClock):
        hook: Callable[[], None] | None = None

        def __call__(self) -> float:
            if self.hook is not None:
                hook, self.hook = self.hook, None
                hook()  # right after the reader saw the entry expired, before it removes it
            return self.now

    clock = Hooked()
    remover = SqliteJsonBackend(tmp_path / "kv.db", timeout=10, clock=clock)
    remover["k"] = "old"
    clock.advance(20)
    writer = SqliteJsonBackend(tmp_path / "kv.db", timeout=300, clock=FrozenClock(clock.now))
    clock.hook = lambda: writer.dump("k", "fresh")
    result = {"dump_if_absent": lambda: remover.dump("k", "mine", if_absent=True)}[meet]()
    assert clock.hook is None  # the interleaving happened
    assert result is False  # the fresh value came first
    assert writer.load("k") == remover.load("k") == "fresh"


def test_listings_skip_expired_entries_and_purge_removes_them(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = SqliteJsonBackend(tmp_path / "kv.db", timeout=10, clock=clock)
    cache.dump_many({f"k{i}": i for i in range(5)})
    cache.dump("forever", 1, timeout=None)
    clock.advance(11)
    assert len(cache) == 1 and list(cache) == ["forever"] and list(cache.list("")) == ["forever"]
    assert [stat.key for stat in cache.stat_many()] == ["forever"]
    assert cache.purge() == 5 and cache.purge() == 0
    assert len(SqliteJsonBackend(tmp_path / "kv.db", clock=lambda: 0.0)) == 1  # gone from the file


# -- queries: flat memory, one query per page or folder --------------------------------------------


def test_a_folder_listing_skips_each_sub_folder_with_one_query(store: SqliteJsonBackend) -> None:
    store.dump_many({f"dir{d:02d}/key-{k:03d}": k for d in range(50) for k in range(100)})
    store.dump_many({"top": 1, "dir07": 2})
    seen = statements(store)
    listing = list(store.list(""))
    assert listing == sorted(["top", "dir07", *(f"dir{d:02d}/" for d in range(50))])
    assert len(seen) == 50 + 1  # a query per folder (the rest of it skipped), one for the rest
    seen.clear()
    assert len(list(store.list("dir42/"))) == 100 and len(seen) == 1
    seen.clear()
    assert len(store) == 5_002 and len(seen) == 1  # a kept count, not a scan


def test_iterating_keeps_memory_flat(tmp_path: Path) -> None:
    backend = SqliteRawBackend(tmp_path / "kv.db")
    backend.dump_many({f"key-{i:06d}": b"" for i in range(50_000)})
    assert len(list(backend)) == 50_000  # all of them at once: a few MiB of str
    tracemalloc.start()
    try:
        assert sum(1 for _ in backend) == 50_000 == len(backend)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024  # a page of 500 keys at a time


# -- threads and processes -----------------------------------------------------------------------


def open_files(path: str) -> int:
    """How many descriptors of this process are open on ``path``."""
    return sum(1 for fd in os.listdir("/proc/self/fd") if _target(fd) == path)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_each_thread_has_its_connection_and_it_ends_with_the_thread(store: SqliteJsonBackend) -> None:
    store["k"] = 0
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                store["k"] = store["k"] + 0
        except BaseException as exc:
            errors.append(exc)

    def wave() -> int:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        gc.collect()
        return open_files(store.path)

    # SQLite keeps a closed connection's descriptor for the next one while the
    # process has the file open (closing it would drop the process's locks):
    # later waves of threads reuse them: at most one per thread alive at once.
    assert max(wave() for _ in range(6)) <= 1 + 8  # not 1 + 6 * 8
    assert errors == []
    store.close()
    assert open_files(store.path) == 0


def _child_writes(backend: SqliteJsonBackend) -> None:
    backend["from-child"] = os.getpid()


def test_a_forked_child_opens_its_own_connection(store: SqliteJsonBackend) -> None:
    store["k"] = 1  # the parent's connection exists before the fork
    child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(store,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert store["from-child"] == child.pid and store["k"] == 1


def test_any_number_of_keys_in_one_batch(store: SqliteJsonBackend) -> None:
    many: dict[str, Any] = {f"k{i}": i for i in range(2_345)}
    store.dump_many(many)
    assert store.load_many([*many, "absent"]) == many
    assert store.delete_many([*many, "absent"]) == len(many) and len(store) == 0


def test_a_path_starting_with_two_slashes_is_a_file_not_a_uri_authority(tmp_path: Path) -> None:
    # sqlite:////abs/path (SQLAlchemy's absolute form) gives the path "//abs/path": as a SQLite URI
    # "file://abs/path" it named a host ("invalid uri authority") at the first write.
    store = backends.open(f"sqlite:///{tmp_path}/kv.db")
    assert store.path.startswith("//")
    store.dump("k", 1)
    assert SqliteJsonBackend(tmp_path / "kv.db").load("k") == 1
