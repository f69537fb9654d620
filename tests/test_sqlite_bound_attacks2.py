"""More attacks on the SQLite store's size bound (issue 26): what test_sqlite_bound*.py do not make.

Another program's ``REPLACE`` under either setting of ``recursive_triggers``
(2), threads and processes past the bound at once and ``if_absent`` under
eviction (1, 9), ``close()`` while another thread writes and ``kill -9`` of a
bulk write (3), a value that never fits through every write path (5), the
recording of hits (7), fork while another thread writes (8), and the bounded
store under a tier, ``@cached``, views and the async twin (9).
"""

from __future__ import annotations

import errno
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock

from backends import SqliteRawBackend, StoreError


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
    assert sorted(store) == [f"r{r:03d}" for r in range(rounds - 3, rounds)]
    for r in range(rounds - 3, rounds):
        assert r in won[store[f"r{r:03d}"].decode()]  # the value kept is its winner's
    exact(path)


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
