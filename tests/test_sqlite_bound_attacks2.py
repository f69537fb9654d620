"""More attacks on the SQLite store's size bound (issue 26): what test_sqlite_bound*.py do not make.

Another program's ``REPLACE`` under either setting of ``recursive_triggers``
(2), threads and processes past the bound at once and ``if_absent`` under
eviction (1, 9), ``close()`` while another thread writes and ``kill -9`` of a
bulk write (3), a value that never fits through every write path (5), the
recording of hits (7), fork while another thread writes (8), and the bounded
store under a tier, ``@cached``, views and the async twin (9).
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock

from backends import (
    SerializationError,
    SqliteJsonBackend,
    SqliteRawBackend,
    StoreError,
    TieredBackend,
    VolatileBackend,
    cached,
)
from backends.sqlite.schema import WRITING

LONG = os.environ.get("BACKENDS_LONG") == "1"


def books(path: str | Path) -> tuple[int, int, int, int]:
    """(kept bytes, true bytes, kept count, true count): what "exact" compares, with kv_count too."""
    db = sqlite3.connect(path)
    try:
        kept = db.execute("SELECT bytes FROM kv_bound").fetchone()[0]
        [(count,)] = db.execute("SELECT n FROM kv_count").fetchall()  # one row
        true, rows = db.execute(
            "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(CAST(data AS BLOB))), 0), COUNT(*)"
            " FROM kv"
        ).fetchone()
        assert db.execute("SELECT COUNT(*) FROM kv_use").fetchone()[0] == rows  # a use per row
        return kept, true, count, rows
    finally:
        db.close()


def exact(path: str | Path) -> tuple[int, int]:
    """The (bytes, rows), asserted exactly kept."""
    kept, true, count, rows = books(path)
    assert (kept, count) == (true, rows)
    return kept, rows


# -- 2: another program's REPLACE, whatever its connection's recursive_triggers -------------------


@pytest.mark.parametrize("recursive", [False, True])
@pytest.mark.parametrize(
    "sql",
    [
        "REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)",
        "INSERT OR REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)",
        "UPDATE OR REPLACE kv SET key = 'k1' WHERE key = 'k0'",
        "INSERT INTO kv VALUES ('k3', x'00', 0, NULL, NULL) ON CONFLICT (key) DO UPDATE SET data = x'0102'",
        "INSERT OR IGNORE INTO kv VALUES ('k3', x'00', 0, NULL, NULL)",
    ],
)
def test_another_programs_conflict_clauses_keep_the_count_exact(
    tmp_path: Path, sql: str, recursive: bool
) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxsize=5)
    store.dump_many({f"k{i}": bytes(5) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute(f"PRAGMA recursive_triggers = {int(recursive)}")
        other.execute(sql)
        _, rows = exact(path)
        assert len(store) == rows
        store["k4"] = b"again"  # an overwrite: nothing needs to go
        assert len(store) == rows and "k4" in store
        store["new"] = b"n"
        assert len(store) == 5 and "new" in store
        exact(path)
    finally:
        other.close()


# The insert trigger of the releases before this fix, as their files hold it.
_OLD_INSERT_TRIGGER = """
CREATE TRIGGER kv_use_added AFTER INSERT ON kv BEGIN
    UPDATE kv_bound SET bytes = bytes + length(CAST(new.key AS BLOB)) + length(CAST(new.data AS BLOB))
        - COALESCE((SELECT size FROM kv_use WHERE key = new.key), 0), tick = tick + 1;
    INSERT INTO kv_use VALUES (new.key, (SELECT tick FROM kv_bound),
        length(CAST(new.key AS BLOB)) + length(CAST(new.data AS BLOB)))
        ON CONFLICT (key) DO UPDATE SET used = excluded.used, size = excluded.size;
END
"""


def test_a_file_of_an_older_release_with_an_inflated_count_is_recounted_at_the_first_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path, maxsize=5).dump_many({f"k{i}": bytes(5) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("DROP TRIGGER kv_use_inserted")
        other.execute(_OLD_INSERT_TRIGGER)
        for _ in range(3):
            other.execute("REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)")
        assert other.execute("SELECT n FROM kv_count").fetchone() == (8,)  # what the old trigger did
        other.execute("INSERT INTO kv_count VALUES (0)")  # as two first writes at once made it
        store = SqliteRawBackend(path, maxsize=5)
        store["k4"] = b"again"  # the first bounded write: the bookkeeping rebuilt, the count too
        assert sorted(store) == [f"k{i}" for i in range(5)]  # none removed for the phantom rows
        names = {n for (n,) in other.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert "kv_use_added" not in names and "kv_use_inserted" in names
        assert exact(path)[1] == 5
    finally:
        other.close()


# -- 7: the hits, remembered in the process and recorded later -------------------------------------


class FailingClock(FrozenClock):
    """At its second read (inside a bounded write's transaction, as it evicts): ``during()``, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Callable[[], None] | None = None
        self.reads = 0

    def __call__(self) -> float:
        if self.during is not None:
            self.reads += 1
            if self.reads == 2:
                during, self.during = self.during, None
                during()
                raise OSError(errno.EIO, "the clock failed")
        return self.now


def test_hits_made_while_a_recording_fails_stay_the_most_recent(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    clock = FailingClock()
    store = SqliteRawBackend(path, maxsize=4, clock=clock)
    for key in "abcd":
        store[key] = b"v"  # uses in this order: a b c d
    assert store["a"] == store["b"] == b"v"  # remembered, taken by the next write

    def hits_of_another_thread() -> None:
        def hit() -> None:
            assert store["c"] == store["a"] == b"v"

        thread = threading.Thread(target=hit)
        thread.start()
        thread.join()

    clock.during = hits_of_another_thread
    with pytest.raises(StoreError):
        store["x"] = b"v"  # fails: its hits (a, b) put back, older than c, a
    store["x"] = b"v"  # uses now d, b, c, a: d goes
    store["y"] = b"v"  # then b, never a (the most recent)
    assert sorted(store) == ["a", "c", "x", "y"]
    exact(path)


def test_close_records_the_hits_of_a_store_that_only_read(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    writer = SqliteRawBackend(path, maxsize=3)
    for key in "abc":
        writer[key] = b"v"
    reader = SqliteRawBackend(path, maxsize=3)  # another process's, which only reads, then ends
    assert reader["a"] == b"v"
    reader.close()
    writer["d"] = b"v"  # b is the least recently used now
    assert sorted(writer) == ["a", "c", "d"]
    writer.close()


def test_256_hits_of_a_store_that_only_reads_are_recorded_in_their_order(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    writer = SqliteRawBackend(path, maxsize=300)
    writer.dump_many({f"k{i:03d}": b"v" for i in range(300)})  # one tick for all: k000 .. k299 by rowid
    reader = SqliteRawBackend(path, maxsize=300, clock=FrozenClock())
    for i in reversed(range(256)):
        assert reader[f"k{i:03d}"] == b"v"  # the 256th hit records them all: k255 first, k000 last
    writer.dump_many({f"n{i:02d}": b"v" for i in range(44 + 10)})  # k256..k299, then k255..k246 go
    left = sorted(k for k in writer if k.startswith("k"))
    assert left == [f"k{i:03d}" for i in range(246)]
    exact(path)


def test_a_process_that_only_read_records_its_hits_when_it_exits(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    writer = SqliteRawBackend(path, maxsize=3)
    for key in "abc":
        writer[key] = b"v"
    script = (
        "import sys; from backends import SqliteRawBackend\n"
        "store = SqliteRawBackend(sys.argv[1], maxsize=3)\n"
        "assert store['a'] == b'v'\n"  # one hit, never closed: recorded at exit
    )
    argv = [sys.executable, "-c", script, str(path)]
    done = subprocess.run(argv, check=False, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    writer["d"] = b"v"  # b is the least recently used now
    assert sorted(writer) == ["a", "c", "d"]
    writer.close()


# -- 1 and 9: threads and processes past the bound at once ----------------------------------------


def _race_rounds(path: str, barrier: Any, results: Any, worker: int, rounds: int) -> None:
    store = SqliteRawBackend(path, maxsize=3)

    def race(thread: int) -> None:
        won = []
        for r in range(rounds):
            barrier.wait(timeout=60)
            if store.dump(f"r{r:03d}", f"{worker}.{thread}".encode(), if_absent=True):
                won.append(r)
        results.put((f"{worker}.{thread}", won))

    threads = [threading.Thread(target=race, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_if_absent_racing_across_processes_and_threads_has_one_winner_while_entries_are_evicted(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "kv.db")
    SqliteRawBackend(path, maxsize=3).dump_many({"x": b"1", "y": b"2", "z": b"3"})
    context = multiprocessing.get_context("fork")
    workers, rounds = 3, 40
    barrier, results = context.Barrier(workers * 2), context.Queue()
    procs = [
        context.Process(target=_race_rounds, args=(path, barrier, results, w, rounds)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    won = dict(results.get(timeout=120) for _ in range(workers * 2))
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    winners = sorted(r for rs in won.values() for r in rs)
    assert winners == list(range(rounds))  # each round's key made once: every write of it evicted others
    store = SqliteRawBackend(path, maxsize=3)
    assert sorted(store) == [f"r{r:03d}" for r in range(rounds - 3, rounds)], _bookkeeping(path)
    for r in range(rounds - 3, rounds):
        assert r in won[store[f"r{r:03d}"].decode()]  # the value kept is its winner's
    exact(path)


def _bookkeeping(path: str) -> str:
    """The rows, their uses and the totals, for a failure's message (CI once kept the three oldest
    rounds instead of the newest: which of the bookkeeping went wrong is not known yet)."""
    with closing(sqlite3.connect(path)) as db:
        tables = {
            name: db.execute(query).fetchall()
            for name, query in (
                ("kv", "SELECT key, written FROM kv ORDER BY rowid"),
                ("kv_use", "SELECT key, used, size FROM kv_use ORDER BY used"),
                ("kv_bound", "SELECT * FROM kv_bound"),
                ("kv_count", "SELECT * FROM kv_count"),
            )
        }
    return repr(tables)


def _fill_with_threads(path: str, barrier: Any, worker: int, count: int) -> None:
    store = SqliteRawBackend(path, maxbytes=20_000)

    def fill(thread: int) -> None:
        name = f"p{worker}t{thread}"
        store[f"{name}/hot"] = bytes(190)
        barrier.wait(timeout=60)
        try:
            for i in range(count):
                store[f"{name}/{i:05d}"] = bytes(190)
                store.get(f"{name}/hot")  # a hit, recorded with this process's next write (approximate)
        except BaseException as exc:
            errors.append(exc)

    errors: list[BaseException] = []
    threads = [threading.Thread(target=fill, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    if errors:
        raise SystemExit(repr(errors))


def test_processes_of_two_threads_ten_times_past_the_bound_keep_it_and_remove_only_the_least_recent(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "kv.db")
    workers = 3
    count = 10 * 20_000 // (workers * 2 * 200)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers * 2)
    procs = [
        context.Process(target=_fill_with_threads, args=(path, barrier, w, count)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    kept, _ = exact(path)
    assert 20_000 - 200 < kept <= 20_000  # within the bound, and never more removed than needed
    survivors = set(SqliteRawBackend(path))
    for name in (f"p{w}t{t}" for w in range(workers) for t in range(2)):
        mine = sorted(int(k.rsplit("/", 1)[1]) for k in survivors if k.startswith(f"{name}/0"))
        assert mine == list(range(count - len(mine), count))  # the newest of each writer: a suffix


@pytest.mark.parametrize("bound", [{}, {"maxsize": 50}])
def test_threads_making_the_file_at_once_make_one_count(tmp_path: Path, bound: dict[str, int]) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, **bound)
    barrier = threading.Barrier(6)

    def first_write(n: int) -> None:
        barrier.wait(timeout=60)
        store[f"k{n}"] = b"v"  # each thread's connection finds no tables, and makes them

    threads = [threading.Thread(target=first_write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT n FROM kv_count").fetchall() == [(6,)]  # one row, not one per maker
    finally:
        db.close()
    assert len(store) == 6


# -- 3: closing while another thread writes, a bulk write killed ------------------------------------


def test_close_while_another_thread_writes_past_the_bound_is_a_store_error_and_the_books_stay_exact(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxbytes=2_000)
    written = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(100_000):
                store[f"k{i:06d}"] = bytes(90)
                store.get(f"k{i // 2:06d}")
                if i == 50:
                    written.set()
        except BaseException as exc:
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    assert written.wait(timeout=60)
    store.close()
    writer.join(timeout=60)
    assert len(failures) == 1 and type(failures[0]) is StoreError, failures
    assert "closed" in str(failures[0])
    assert WRITING.in_flight == 0
    assert exact(path)[0] <= 2_000
    after = SqliteRawBackend(path, maxbytes=2_000)
    after["last"] = bytes(90)
    assert exact(path)[0] <= 2_000 and "last" in after
    after.close()


def _hang_in_bulk_eviction(path: str, ready: Any) -> None:
    class Hanging(FrozenClock):
        reads = 0

        def __call__(self) -> float:
            self.reads += 1
            if self.reads == 2:  # inside dump_many's transaction, choosing what to remove
                ready.send("evicting")
                threading.Event().wait()  # until killed
            return self.now

    store = SqliteRawBackend(path, clock=Hanging(), maxsize=5)
    store.dump_many({f"new{i}": bytes(10) for i in range(700)})  # past one page of the bulk statement


def test_a_bulk_write_killed_mid_eviction_leaves_nothing_and_the_count_exact(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.db")
    SqliteRawBackend(path, maxsize=5).dump_many({f"k{i}": bytes(10) for i in range(5)})
    context = multiprocessing.get_context("fork")
    parent, child_end = context.Pipe()
    proc = context.Process(target=_hang_in_bulk_eviction, args=(path, child_end))
    proc.start()
    assert parent.poll(60) and parent.recv() == "evicting"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    store = SqliteRawBackend(path, maxsize=5)
    assert sorted(store) == [f"k{i}" for i in range(5)]
    assert exact(path) == (5 * 12, 5)
    store.dump_many({f"new{i}": bytes(10) for i in range(700)})
    assert sorted(store) == [f"new{i}" for i in range(695, 700)]  # the batch's last five: LRU in order
    exact(path)


# -- 8: fork while another thread writes ---------------------------------------------------------------


def _child_writes(store: SqliteRawBackend, n: int) -> None:
    store[f"child{n}"] = bytes(50)
    store.get(f"child{n}")  # a hit (the parent's writer may have removed it already)
    store.dump_many({f"child{n}/{i}": bytes(50) for i in range(3)})


def test_forks_while_another_thread_writes_past_the_bound_never_hang_and_both_keep_it(
    tmp_path: Path,
) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxbytes=3_000)
    store["first"] = bytes(50)
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        i = 0
        try:
            while not stop.is_set():
                store[f"parent{i % 200}"] = bytes(50)
                store.get(f"parent{(i * 7) % 200}")  # hits: the pending ones are taken by each write
                i += 1
        except BaseException as exc:
            failures.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: a fork lands anywhere in the writer's calls
    writer = threading.Thread(target=write)
    writer.start()
    context = multiprocessing.get_context("fork")
    try:
        for n in range(20 if not LONG else 200):
            child = context.Process(target=_child_writes, args=(store, n))
            child.start()
            child.join(timeout=30)
            if child.exitcode is None:
                child.kill()
                child.join()
            assert child.exitcode == 0, f"child {n} hung or failed"
    finally:
        stop.set()
        writer.join(timeout=60)
        sys.setswitchinterval(switch)
    assert failures == []
    assert exact(store.path)[0] <= 3_000
    store.close()


# -- 5: a value that never fits, through every write path ---------------------------------------------


def _cached_call(store: SqliteJsonBackend) -> object:
    @cached(store, timeout=60)
    def compute(n: int) -> str:
        return "y" * n

    return compute(300)


def _async_dump(store: SqliteJsonBackend) -> object:
    async def dump() -> bool:
        return await store.aio().dump("b", "x" * 200)

    return asyncio.run(dump())


WRITE_PATHS: dict[str, Callable[[SqliteJsonBackend], object]] = {
    "dump": lambda s: s.dump("b", "x" * 200),
    "dump(if_absent)": lambda s: s.dump("b", "x" * 200, if_absent=True),
    "dump(timeout)": lambda s: s.dump("b", "x" * 200, timeout=5),
    "setitem": lambda s: s.__setitem__("b", "x" * 200),
    "setitem over an entry": lambda s: s.__setitem__("a", "x" * 200),
    "setdefault": lambda s: s.setdefault("b", "x" * 200),
    "update": lambda s: s.update({"c": 1, "b": "x" * 200}),
    "dump_many": lambda s: s.dump_many([("c", 1), ("b", "x" * 200)]),
    "a prefixed view": lambda s: s.namespace("p/").dump("b", "x" * 100),
    "the async twin": _async_dump,
    "@cached": _cached_call,
}


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_a_value_that_never_fits_is_a_serialization_error_on_every_write_path_and_nothing_changes(
    tmp_path: Path, path: str
) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db", maxbytes=100, timeout=60)
    store["a"] = 1
    assert store["a"] == 1  # a hit, waiting to be recorded
    before = exact(store.path)
    with pytest.raises(SerializationError, match="more than maxbytes=100"):
        WRITE_PATHS[path](store)
    assert dict(store.items()) == {"a": 1} and exact(store.path) == before
    store.close()


# -- 9: the bounded store under a tier, @cached, views and the async twin -----------------------------


def test_a_bounded_cache_under_a_tier_keeps_its_bound_and_a_tiers_hit_is_a_use(tmp_path: Path) -> None:
    cache = SqliteJsonBackend(tmp_path / "kv.db", maxsize=3, timeout=60, clock=FrozenClock())
    origin = VolatileBackend()
    origin.dump_many({f"k{i}": i for i in range(6)})
    tier = TieredBackend(cache, origin)
    for key in ["k0", "k1", "k2", "k0", "k3"]:  # k0 hit through the tier (its peek) before k3 comes
        assert tier[key] == int(key[1])
    assert sorted(cache) == ["k0", "k2", "k3"]  # k1, the least recently used, went
    tier["k4"] = 40  # a write through the tier fills the cache: k2 goes
    assert sorted(cache) == ["k0", "k3", "k4"] and origin["k4"] == 40
    assert dict(origin.items()) == {**{f"k{i}": i for i in range(6)}, "k4": 40}  # the origin keeps all
    exact(cache.path)
    cache.close()


def test_cached_over_a_bounded_store_keeps_the_bound_and_the_recently_called(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db", maxsize=3)
    calls: list[int] = []

    @cached(store, timeout=60)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    for n in [1, 2, 3, 1, 4]:  # 1 is a hit before 4 comes: 2 goes
        assert square(n) == n * n
    assert calls == [1, 2, 3, 4]
    assert len(store) == 3
    assert square(1) == 1 and square(2) == 4 and calls == [1, 2, 3, 4, 2]  # 2 computed again
    exact(store.path)
    store.close()


def test_hits_through_views_and_the_async_twin_are_uses_and_their_writes_keep_the_bound(
    tmp_path: Path,
) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxsize=4)
    view = store.namespace("p/")
    for key in "abcd":
        view[key] = b"v"
    assert store.readonly()["p/a"] == b"v"  # a hit through a read-only view

    async def through_the_twin() -> None:
        twin = view.aio()
        assert await twin.load("b") == b"v"  # and one through the twin
        await twin.dump("e", b"v")  # c goes: a and b were used since

    asyncio.run(through_the_twin())
    assert sorted(store) == ["p/a", "p/b", "p/d", "p/e"]
    exact(store.path)
    store.close()


def test_hits_on_a_file_another_program_left_out_of_wal_never_make_a_read_wait(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    writer = SqliteRawBackend(path, maxsize=300)
    writer.dump_many({f"k{i:03d}": b"v" for i in range(300)})
    writer.close()
    other = sqlite3.connect(path, isolation_level=None)
    assert other.execute("PRAGMA journal_mode=DELETE").fetchall() == [("delete",)]  # a tool's copy, say
    other.execute("BEGIN")
    other.execute("SELECT COUNT(*) FROM kv").fetchall()  # its read: the switch to WAL must wait for it
    reader = SqliteRawBackend(path, maxsize=300, busy_timeout=60)
    done = threading.Event()

    def read() -> None:
        for i in reversed(range(300)):
            assert reader[f"k{i:03d}"] == b"v"  # 256 hits ask to be recorded: the file is not WAL yet
        done.set()

    worker = threading.Thread(target=read)
    worker.start()
    worker.join(timeout=30)  # a read waiting for the switch would wait busy_timeout=60 s
    read_while_held = done.is_set()
    other.execute("ROLLBACK")
    other.close()
    worker.join(timeout=120)
    assert read_while_held
    reader["new"] = b"v"  # the first write switches it and records the hits kept, k299 the oldest
    assert "k000" in reader and "k299" not in reader
    exact(path)
    reader.close()


@pytest.mark.parametrize("table", ["kv_bound", "kv_use"])
def test_bookkeeping_dropped_under_a_store_already_writing_is_rebuilt_at_its_next_write(
    tmp_path: Path, table: str
) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxsize=3)
    store.dump_many({"a": b"1", "b": b"2"})  # this thread's connection has made the bookkeeping
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"DROP TABLE {table}")  # the triggers stay, and name it
    other.close()
    store["c"] = b"3"
    store["d"] = b"4"
    assert sorted(store) == ["b", "c", "d"]
    exact(path)
    store.close()


@pytest.mark.xfail(
    strict=True,
    reason="an unbounded store's writes fire the bookkeeping's triggers of a once-bounded file; with a"
    " table of it dropped by another program they fail until a bounded store's write rebuilds it",
)
def test_an_unbounded_store_writes_a_file_whose_bookkeeping_another_program_half_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path, maxsize=3)["a"] = b"1"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("DROP TABLE kv_bound")
    other.close()
    store = SqliteRawBackend(path)
    store["b"] = b"2"
    assert sorted(store) == ["a", "b"]


@pytest.mark.xfail(
    strict=True,
    reason="kv_count of a file never bounded counts another program's REPLACE over a row as one more"
    " (SQLite fires no DELETE trigger for it); only the bound's triggers see the row it replaced",
)
def test_replace_into_a_file_never_bounded_keeps_len_exact(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path)
    store.dump_many({f"k{i}": bytes(5) for i in range(5)})
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("REPLACE INTO kv VALUES ('k2', zeroblob(30), 0, NULL, NULL)")
    other.close()
    assert len(store) == 5


def test_a_bounded_store_that_only_reads_a_file_never_bounded_makes_no_bookkeeping(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path).dump_many({f"k{i:03d}": b"v" for i in range(300)})  # today's file, say
    reader = SqliteRawBackend(path, maxsize=300)
    for i in reversed(range(300)):
        assert reader[f"k{i:03d}"] == b"v"  # past 256 hits: nothing to record them in, nothing made
    db = sqlite3.connect(path)
    try:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert not names & {"kv_use", "kv_bound"}  # a read never builds it (a scan of the whole file)
    reader["new"] = b"v"  # the first write builds it, in write order, then records the hits kept
    assert "k000" in reader and "k299" not in reader
    exact(path)
    reader.close()


@pytest.mark.parametrize("table", ["kv_count", "kv_bound"])
def test_a_row_of_the_totals_another_program_deleted_is_no_raw_error(tmp_path: Path, table: str) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxsize=3)
    store.dump_many({"a": b"1", "b": b"2"})
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"DELETE FROM {table}")
    other.close()
    assert len(store) == 2 and len(SqliteRawBackend(path)) == 2
    store["c"] = b"3"
    store["d"] = b"4"  # rebuilt from kv, then kept
    assert sorted(store) == ["b", "c", "d"] and len(store) == 3
    exact(path)
    store.close()
