"""The size bound of the SQLite store (issue 26): ``maxbytes=``, ``maxsize=``, shared by every process.

A model of least-recently-used-with-expiry drives the store (a hypothesis
state machine); then the attacks of ``../shared/ATTACKS.md`` that apply:
another program's rows and damage (2), closing mid-eviction (3), bad bounds
(5), clocks and a held write lock (7), a full disk and a read-only file (8),
processes, fork and kill -9 (9). Lost replies (1) and secrets (10) do not
apply (a local file, no credential); hostile text (4) and one error
everywhere (6) are the store's own tests (test_sqlite_attacks.py).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import servers
from clock import FrozenClock
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_sqlite_attacks import immutable, tree

import backends
from backends import (
    PermissionDeniedError,
    SerializationError,
    SqliteJsonBackend,
    SqliteRawBackend,
    SqliteTextBackend,
    StoreError,
    StoreUnavailableError,
    TieredBackend,
    VolatileBackend,
)
from backends.sqlite.schema import WRITING

LONG = os.environ.get("BACKENDS_LONG") == "1"


def books(path: str | Path) -> tuple[int, int, int]:
    """(the kept bytes, the true bytes of the rows, the rows): what "exact" compares."""
    db = sqlite3.connect(path)
    try:
        kept = db.execute("SELECT bytes FROM kv_bound").fetchone()[0]
        true, rows = db.execute(
            "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(CAST(data AS BLOB))), 0), COUNT(*)"
            " FROM kv"
        ).fetchone()
        uses = db.execute("SELECT COUNT(*) FROM kv_use").fetchone()[0]
        assert uses == rows  # a use per row, no more
        return kept, true, rows
    finally:
        db.close()


def tables(path: str | Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()


# -- the model: least recently used, expired first --------------------------------------------------


class Model:
    """What a bounded store holds: rows (expired ones too, until removed) in order of last use."""

    def __init__(self, maxbytes: int | None, maxsize: int | None) -> None:
        self.maxbytes, self.maxsize = maxbytes, maxsize
        self.rows: dict[str, tuple[bytes, float | None]] = {}  # in order of use, the last the latest

    def fresh(self, key: str, now: float) -> bool:
        if key not in self.rows:
            return False
        deadline = self.rows[key][1]
        return deadline is None or deadline > now

    def use(self, key: str) -> None:
        self.rows[key] = self.rows.pop(key)

    def write(self, key: str, data: bytes, deadline: float | None) -> None:
        self.rows.pop(key, None)
        self.rows[key] = (data, deadline)

    def settle(self, now: float, written: str | None) -> None:
        over_bytes = sum(len(k) + len(d) for k, (d, _) in self.rows.items()) - (self.maxbytes or 1 << 62)
        over_count = len(self.rows) - (self.maxsize or 1 << 62)
        order = list(self.rows)
        expired = sorted(
            (k for k, (_, deadline) in self.rows.items() if deadline is not None and deadline <= now),
            key=lambda k: (self.rows[k][1], order.index(k)),
        )
        for key in [*expired, *order]:
            if over_bytes <= 0 and over_count <= 0:
                return
            if key == written or key not in self.rows:
                continue
            over_bytes -= len(key) + len(self.rows.pop(key)[0])
            over_count -= 1


KEYS = st.sampled_from("abcde")
SIZES = st.integers(0, 35)
TIMEOUTS = st.sampled_from([None, 3.0, 10.0])


class BoundMachine(RuleBasedStateMachine):
    """The store against the model, call by call, with the bookkeeping checked exact after each."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(TMP.mkdtemp())

    @initialize(maxbytes=st.sampled_from([None, 40, 70, 100]), maxsize=st.sampled_from([None, 2, 3]))
    def make(self, maxbytes: int | None, maxsize: int | None) -> None:
        if maxbytes is None and maxsize is None:
            maxbytes = 80
        self.clock = FrozenClock()
        self.store = SqliteRawBackend(
            self.folder / "kv.db", clock=self.clock, maxbytes=maxbytes, maxsize=maxsize
        )
        self.model = Model(maxbytes, maxsize)

    def _fits(self, key: str, size: int) -> bool:
        return self.model.maxbytes is None or len(key) + size <= self.model.maxbytes

    @rule(key=KEYS, size=SIZES, timeout=TIMEOUTS, if_absent=st.booleans())
    def dump(self, key: str, size: int, timeout: float | None, if_absent: bool) -> None:
        data = bytes([ord(key)]) * size
        if not self._fits(key, size):
            with pytest.raises(SerializationError, match="more than maxbytes"):
                self.store.dump(key, data, timeout=timeout, if_absent=if_absent)
            return
        now = self.clock()
        written = self.store.dump(key, data, timeout=timeout, if_absent=if_absent)
        expect = not (if_absent and self.model.fresh(key, now))
        assert written == expect
        if expect:
            self.model.write(key, data, None if timeout is None else now + timeout)
        self.model.settle(now, key)

    @rule(items=st.dictionaries(KEYS, SIZES, min_size=1, max_size=3))
    def dump_many(self, items: dict[str, int]) -> None:
        values = {key: bytes([ord(key)]) * size for key, size in items.items()}
        if not all(self._fits(key, size) for key, size in items.items()):
            with pytest.raises(SerializationError, match="more than maxbytes"):
                self.store.dump_many(values)
            return
        self.store.dump_many(values)
        for key, data in values.items():
            self.model.write(key, data, None)
        self.model.settle(self.clock(), None)

    @rule(key=KEYS)
    def load(self, key: str) -> None:
        expect = self.model.rows[key][0] if self.model.fresh(key, self.clock()) else None
        assert self.store.load(key) == expect
        if expect is not None:
            self.model.use(key)

    @rule(keys=st.lists(KEYS, max_size=4))
    def load_many(self, keys: list[str]) -> None:
        now = self.clock()
        found = self.store.load_many(keys)
        assert found == {key: self.model.rows[key][0] for key in keys if self.model.fresh(key, now)}
        for key in keys:
            if key in found:
                self.model.use(key)

    @rule(key=KEYS)
    def contains(self, key: str) -> None:
        assert (key in self.store) == self.model.fresh(key, self.clock())  # not a use

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        fresh = self.model.fresh(key, self.clock())
        assert self.store.delete(key) == fresh
        self.model.rows.pop(key, None)

    @rule(key=KEYS)
    def pop(self, key: str) -> None:
        expect = self.model.rows[key][0] if self.model.fresh(key, self.clock()) else None
        assert self.store.pop(key, None) == expect
        self.model.rows.pop(key, None)

    @rule(seconds=st.sampled_from([2.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def purge(self) -> None:
        now = self.clock()
        expired = [k for k in self.model.rows if not self.model.fresh(k, now)]
        assert self.store.purge() == len(expired)
        for key in expired:
            del self.model.rows[key]

    @precondition(lambda self: len(self.model.rows) > 3)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.rows.clear()

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "store"):
            return
        now = self.clock()
        assert sorted(self.store) == sorted(k for k in self.model.rows if self.model.fresh(k, now))
        assert len(self.store) == sum(1 for k in self.model.rows if self.model.fresh(k, now))
        if os.path.exists(self.store.path) and "kv_bound" in tables(self.store.path):
            kept, true, rows = books(self.store.path)
            assert kept == true and rows == len(self.model.rows)
            assert self.model.maxbytes is None or kept <= self.model.maxbytes
            assert self.model.maxsize is None or rows <= self.model.maxsize

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()


class _Temp:
    def __init__(self) -> None:
        self.base: Path | None = None
        self.n = 0

    def mkdtemp(self) -> str:
        assert self.base is not None
        self.n += 1
        folder = self.base / f"m{self.n}"
        folder.mkdir()
        return str(folder)


TMP = _Temp()


def test_a_bounded_store_removes_what_a_model_of_lru_with_expiry_removes(tmp_path: Path) -> None:
    TMP.base = tmp_path
    machine = settings(max_examples=500 if LONG else 60, stateful_step_count=30, deadline=None)(BoundMachine)
    machine.TestCase().runTest()


# -- the bound, exactly ------------------------------------------------------------------------------


def test_the_least_recently_used_entry_goes_first_and_a_hit_is_a_use(tmp_path: Path) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxsize=3)
    store.dump_many({"a": b"1", "b": b"2", "c": b"3"})
    assert store["a"] == b"1"  # a use: b is now the least recently used
    store["d"] = b"4"
    assert sorted(store) == ["a", "c", "d"]
    assert store.load_many(["c"]) == {"c": b"3"} and "a" in store  # `in` is no use
    store["e"] = b"5"
    assert sorted(store) == ["c", "d", "e"]


def test_expired_entries_go_first_and_a_fresh_one_never_for_an_expired_one(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = SqliteRawBackend(tmp_path / "kv.db", clock=clock, maxbytes=30)  # keys 1 byte + values 9
    store.dump("old", b"o" * 7)  # used least recently, but it never expires
    store.dump("x", b"x" * 9, timeout=10)
    store.dump("y", b"y" * 9, timeout=5)
    clock.advance(6)  # y is expired, x is not
    store.dump("z", b"z" * 9)
    assert sorted(store) == ["old", "x", "z"]  # y made the room, though "old" was used before it
    clock.advance(10)  # x too
    store.dump("w", b"w" * 9)
    assert sorted(store) == ["old", "w", "z"]
    kept, true, rows = books(store.path)
    assert kept == true == 30 and rows == 3


def test_no_more_is_removed_than_needed(tmp_path: Path) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxbytes=1_000)
    store.dump_many({f"k{i}": bytes(98) for i in range(10)})  # 100 bytes each: exactly full
    assert len(store) == 10
    store["big"] = bytes(247)  # 250: three of the oldest go
    assert sorted(store) == ["big", *(f"k{i}" for i in range(3, 10))]
    store["one"] = bytes(57)  # 950 + 60 bytes: one goes
    assert len(store) == 8 and "k3" not in store and "k4" in store
    kept, true, _ = books(store.path)
    assert kept == true <= 1_000


def test_a_bound_holds_for_a_frozen_clock_and_a_clock_that_goes_back(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = SqliteRawBackend(tmp_path / "kv.db", clock=clock, maxsize=3)
    for i in range(6):
        store[f"k{i}"] = b"v"
        clock.advance(-100)  # uses are ticks, not times: the order is still the order of calls
    assert sorted(store) == ["k3", "k4", "k5"]
    assert store["k3"] == b"v"
    store["n"] = b"v"
    assert sorted(store) == ["k3", "k5", "n"]


def test_an_entry_larger_than_maxbytes_is_refused_before_any_io(tmp_path: Path) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxbytes=100)
    with pytest.raises(SerializationError, match="more than maxbytes=100") as caught:
        store["k"] = bytes(100)  # 1 + 100 bytes
    assert "nothing written" in str(caught.value) and not (tmp_path / "kv.db").exists()
    store["k"] = bytes(99)  # exactly the bound
    with pytest.raises(SerializationError, match="more than maxbytes"):
        store.dump_many({"a": b"1", "b": bytes(200)})
    assert list(store) == ["k"] and len(store["k"]) == 99


def test_a_tiers_hits_through_peek_keep_an_entry(tmp_path: Path) -> None:
    cache = SqliteJsonBackend(tmp_path / "kv.db", timeout=60, maxsize=3)
    origin = VolatileBackend()
    origin.dump_many({f"k{i}": i for i in range(6)})
    tier = TieredBackend(cache, origin)
    assert tier["k0"] == 0
    for i in range(1, 6):
        assert tier[f"k{i}"] == i
        assert "k0" in cache  # not removed: the tier's last hit on it counted as a use
        assert tier["k0"] == 0  # a hit of the cache (through peek)
    assert "k0" in cache and len(cache) == 3


def test_a_tier_serves_a_value_its_bounded_cache_can_never_keep_and_drops_the_older(tmp_path: Path) -> None:
    cache = SqliteRawBackend(tmp_path / "kv.db", timeout=60, maxbytes=100)
    origin = VolatileBackend()
    tier = TieredBackend(cache, origin)
    tier["k"] = b"small"
    assert cache["k"] == b"small"
    tier["k"] = bytes(500)  # written through: the origin has it, the cache cannot
    assert "k" not in cache and tier["k"] == bytes(500)  # never the older value
    origin["big"] = bytes(300)
    assert tier["big"] == bytes(300) and "big" not in cache
    with pytest.raises(SerializationError, match="more than maxbytes"):
        cache["big"] = bytes(300)  # a plain write is refused: nothing is dropped in silence


def test_clear_purge_and_len_keep_the_bookkeeping_exact(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = SqliteTextBackend(tmp_path / "kv.db", clock=clock, timeout=5, maxbytes=10_000)
    store.dump_many({f"é{i}": "ü" * i for i in range(50)})  # sizes in UTF-8 bytes
    assert books(store.path)[0] == books(store.path)[1] == sum(2 + len(str(i)) + 2 * i for i in range(50))
    clock.advance(5)
    assert len(store) == 0 and store.purge() == 50 and books(store.path)[:2] == (0, 0)
    store["a"] = "x"
    store.clear()
    assert books(store.path) == (0, 0, 0)


def test_an_unbounded_store_makes_no_bookkeeping_and_its_writes_are_counted_once_there(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.db"
    plain = SqliteRawBackend(path)
    plain["a"] = b"123"
    assert not tables(path) & {"kv_use", "kv_bound"}  # today's tables, today's cost
    bounded = SqliteRawBackend(path, maxbytes=100)
    bounded["b"] = b"1"
    plain.dump_many({f"p{i}": bytes(10) for i in range(20)})  # another process's unbounded writes
    kept, true, _ = books(path)
    assert kept == true == 4 + 2 + sum(len(f"p{i}") + 10 for i in range(20))  # by the file's triggers
    bounded["c"] = b"1"
    assert books(path)[0] <= 100 and "c" in bounded


def test_the_bounds_travel_in_pickles_urls_and_reprs(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db", maxbytes=1000, maxsize=10)
    assert "maxbytes=1000" in repr(store) and "maxsize=10" in repr(store)
    copy = pickle.loads(pickle.dumps(store))
    copy.dump_many({f"k{i}": i for i in range(20)})
    assert len(copy) == 10
    opened = backends.open_url(f"sqlite://{tmp_path}/u.db?maxbytes=50&maxsize=none&format=raw")
    assert "maxbytes=50" in repr(opened) and "maxsize" not in repr(opened)
    opened.dump_many({f"k{i}": bytes(8) for i in range(10)})
    assert len(opened) == 5


# -- 5: bad bounds, refused before anything is written ---------------------------------------------


@pytest.mark.parametrize("name", ["maxbytes", "maxsize"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (2**62 + 1, ValueError),
        (10**100, ValueError),
        (float("nan"), TypeError),
        (1.5, TypeError),
        (100.0, TypeError),
        (True, TypeError),
        ("100", TypeError),
        (b"1", TypeError),
    ],
)
def test_a_bad_bound_is_refused_naming_it(tmp_path: Path, name: str, value: object, error: type) -> None:
    with pytest.raises(error, match=name):
        SqliteJsonBackend(tmp_path / "kv.db", **{name: value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["maxbytes", "maxsize"])
@pytest.mark.parametrize("text", ["0", "-5", "1.5", "nan", "inf", "1e3", "", "ten", "9" * 30, "\uff11\uff12"])
def test_a_bad_bound_in_a_url_is_a_value_error_naming_it(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(ValueError, match=name):
        backends.open_url(f"sqlite://{tmp_path}/kv.db?{name}={text}")
    assert list(tmp_path.iterdir()) == []


# -- 2: another program's rows, damage and schemas ----------------------------------------------------


TODAYS_SCHEMA = """
CREATE TABLE kv (
    key TEXT NOT NULL UNIQUE, data BLOB NOT NULL, written REAL NOT NULL, deadline REAL, etag TEXT
);
CREATE INDEX kv_deadline ON kv (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE kv_count (n INTEGER NOT NULL);
INSERT INTO kv_count SELECT COUNT(*) FROM kv;
CREATE TRIGGER kv_added AFTER INSERT ON kv BEGIN UPDATE kv_count SET n = n + 1; END;
CREATE TRIGGER kv_removed AFTER DELETE ON kv BEGIN UPDATE kv_count SET n = n - 1; END;
CREATE TABLE kv_locks (key TEXT PRIMARY KEY NOT NULL, token TEXT NOT NULL, until REAL NOT NULL) WITHOUT ROWID;
"""
#: the statement today's release writes with
TODAYS_UPSERT = (
    "INSERT INTO kv VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET"
    " data = excluded.data, written = excluded.written, deadline = excluded.deadline, etag = excluded.etag"
)


def test_a_database_of_todays_release_is_bounded_in_place_by_its_write_order(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(TODAYS_SCHEMA)
    for i, written in enumerate([5.0, 1.0, 3.0, 2.0, 4.0]):  # k1 written first, then k3, k2, k4, k0
        db.execute(TODAYS_UPSERT, (f"k{i}", bytes(10), written, None, None))
    store = SqliteRawBackend(path, maxsize=4)
    store["new"] = b"1"  # the first write adds the bookkeeping (one transaction), then keeps the bound
    assert sorted(store) == ["k0", "k2", "k4", "new"]  # k1 and k3 were written first
    db.execute(TODAYS_UPSERT, ("old", bytes(5), 9.0, None, None))  # today's release writes on: counted
    kept, true, rows = books(path)
    assert kept == true and rows == 5
    store["again"] = b"2"
    assert sorted(store) == ["again", "k0", "new", "old"]
    # today's release still opens it: its tables are all there with its columns
    assert {"kv", "kv_count", "kv_locks"} <= tables(path)
    db.close()


def test_rows_another_program_adds_deletes_or_changes_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxbytes=2_000)
    store.dump_many({f"k{i}": bytes(50) for i in range(10)})
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("DELETE FROM kv WHERE key IN ('k1', 'k2')")
    other.execute("UPDATE kv SET data = ? WHERE key = 'k3'", (bytes(500),))
    other.execute("UPDATE kv SET key = 'renamed' WHERE key = 'k4'")
    other.execute("INSERT INTO kv VALUES ('theirs', 'some text', 'not a time', 'never', NULL)")
    other.execute("INSERT INTO kv VALUES (?, x'00ff', 0, NULL, NULL)", (b"blob\xff",))  # a stray
    other.execute("INSERT INTO kv VALUES (CAST(? AS TEXT), x'01', 0, NULL, NULL)", (b"bad\xff",))  # no UTF-8
    other.execute("DELETE FROM kv")  # all of it, row by row: the triggers see each
    other.execute("INSERT INTO kv VALUES (CAST(? AS TEXT), ?, 0, NULL, NULL)", (b"bad\xff", bytes(900)))
    other.execute("INSERT INTO kv VALUES (?, ?, 0, NULL, NULL)", (b"blob\xff", bytes(900)))
    kept, true, _ = books(path)
    assert kept == true == 904 + 905
    store.dump_many({f"n{i}": bytes(98) for i in range(5)})  # strays are rows of ours: the oldest goes
    assert sorted(store) == [f"n{i}" for i in range(5)]
    assert [name for name, _ in store.strays()] == ["blob\udcff"]  # the newer stray was not needed
    assert books(path)[0] == books(path)[1] == 905 + 500
    other.close()


def test_bookkeeping_another_program_dropped_or_damaged_is_rebuilt_or_never_room(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path, maxbytes=1_000).dump_many({f"k{i}": bytes(99) for i in range(10)})
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("DROP TRIGGER kv_use_inserted")
    other.execute("INSERT INTO kv VALUES ('x', zeroblob(300), 0, NULL, NULL)")  # not counted: no trigger
    store = SqliteRawBackend(path, maxbytes=1_000)  # its first write rebuilds the bookkeeping from kv
    store["y"] = b"1"
    kept, true, _ = books(path)
    assert kept == true <= 1_000 and "y" in store
    other.execute("INSERT INTO kv_use VALUES ('ghost', 0, 500)")  # a use of no row
    other.execute("UPDATE kv_bound SET bytes = bytes + 500")
    store["z"] = bytes(400)
    assert books(path)[0] <= 1_000 and "z" in store and "y" in store  # the ghost's 500 bytes were no room
    other.execute("DELETE FROM kv_use")  # every row without its use: none could be chosen
    store["w"] = bytes(300)  # past the bound with nothing to remove: rebuilt from kv, then kept
    kept, true, _ = books(path)
    assert kept == true <= 1_000 and "w" in store
    other.close()


def test_a_foreign_table_of_a_bookkeeping_name_is_a_store_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    first = SqliteRawBackend(path)
    first["a"] = b"1"
    first.close()  # closed now: its close checkpoints the log into kv.db, never later, when collected
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE kv_use (id INTEGER PRIMARY KEY, note TEXT)")
    other.close()
    before = tree(tmp_path)
    store = SqliteRawBackend(path, maxbytes=100)
    assert store["a"] == b"1"  # reads work
    with pytest.raises(StoreError, match=r"kv_use.*not made by this library"):
        store["b"] = b"2"
    assert {k: v for k, v in tree(tmp_path).items() if k == "kv.db"} == {
        k: v for k, v in before.items() if k == "kv.db"
    }


# -- 3: close in the middle of an eviction --------------------------------------------------------


class ClosingClock(FrozenClock):
    """Closes ``closes`` when read the second time: inside a bounded write's transaction, as it evicts."""

    def __init__(self) -> None:
        super().__init__()
        self.closes: SqliteRawBackend | None = None
        self.reads = 0

    def __call__(self) -> float:
        if self.closes is not None:
            self.reads += 1
            if self.reads == 2:
                store, self.closes = self.closes, None
                store.close()
        return self.now


def test_close_in_the_middle_of_an_eviction_rolls_the_write_back(tmp_path: Path) -> None:
    clock = ClosingClock()
    store = SqliteRawBackend(tmp_path / "kv.db", clock=clock, maxsize=5)
    store.dump_many({f"k{i}": b"v" for i in range(5)})
    clock.closes = store
    with pytest.raises(StoreError, match="closed"):
        store["new"] = b"n"
    assert clock.closes is None and WRITING.in_flight == 0
    with pytest.raises(StoreError, match="closed"):
        store["again"] = b"n"
    after = SqliteRawBackend(tmp_path / "kv.db", maxsize=5)
    assert sorted(after) == [f"k{i}" for i in range(5)]  # nothing of it: no entry, no eviction
    kept, true, rows = books(after.path)
    assert kept == true and rows == 5
    store.close()


# -- 7: time and a held write lock ------------------------------------------------------------------


def test_hits_of_a_store_that_only_reads_never_wait_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    SqliteRawBackend(path).dump_many({f"k{i:03d}": b"v" for i in range(300)})
    reader = SqliteRawBackend(path, maxsize=300, busy_timeout=60)
    reader["first"] = b"v"  # makes the bookkeeping, removing k000
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write, held past many reads
    done = threading.Event()

    def read() -> None:
        for i in range(1, 300):
            assert reader[f"k{i:03d}"] == b"v"  # 256 hits ask to be recorded: the writer is busy
        done.set()

    worker = threading.Thread(target=read)
    worker.start()
    worker.join(timeout=30)  # a read waiting for the writer would wait busy_timeout=60 s
    other.execute("ROLLBACK")
    other.close()
    assert done.is_set()
    reader["second"] = b"v"  # the hits kept are recorded first: "first" is the least recently used
    assert "first" not in reader and "k001" in reader


def test_a_bounded_write_locked_out_past_busy_timeout_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path, maxsize=3, busy_timeout=0.05)
    store.dump_many({"a": b"1", "b": b"2", "c": b"3"})
    assert store["a"] == b"1"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailableError, match="busy_timeout"):
        store["d"] = b"4"
    other.execute("ROLLBACK")
    other.close()
    assert sorted(store) == ["a", "b", "c"]
    store["d"] = b"4"  # the hit on a, kept through the failure, still counts
    assert sorted(store) == ["a", "c", "d"]


# -- 8: a full disk, a read-only file ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    with servers.small_disk(tmp_path / "disk", "8m") as folder:  # the log grows to 4 MB before a checkpoint
        yield folder


def test_a_full_disk_fails_a_bounded_write_whole_and_the_bound_frees_room_after(small_disk: Path) -> None:
    path = small_disk / "kv.db"
    store = SqliteRawBackend(path, maxbytes=400_000)
    store.dump_many({f"k{i}": bytes(1_000) for i in range(100)})
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(bytes(4096))
            out.flush()
    with pytest.raises(StoreError, match="disk is full"):
        for i in range(50):
            store.dump(f"big{i}", os.urandom(150_000))
    kept, true, _ = books(path)
    assert kept == true <= 400_000
    filler.unlink()
    for i in range(10):
        store.dump(f"big{i}", os.urandom(150_000))  # the bound makes room: the file stops growing
    assert books(path)[0] <= 400_000 and "big9" in store


def test_a_bounded_store_reads_a_read_only_file_and_its_hits_wait(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    writer = SqliteRawBackend(path, maxsize=400)
    writer.dump_many({f"k{i:03d}": b"v" for i in range(300)})
    reader = SqliteRawBackend(path, maxsize=400)
    with immutable(path):
        for i in range(300):
            assert reader[f"k{i:03d}"] == b"v"  # past 256 hits it tries to record them, and cannot
        assert len(reader) == 300
        with pytest.raises(PermissionDeniedError):
            reader["new"] = b"v"
    writer.close()
    reader.close()


# -- 9: processes, fork, kill -9 ---------------------------------------------------------------------


def _fill(path: str, worker: int, count: int, size: int) -> None:
    store = SqliteRawBackend(path, maxbytes=20_000)
    hot = f"p{worker}/hot"
    store[hot] = bytes(size)
    for i in range(count):
        store[f"p{worker}/{i:05d}"] = bytes(size)
        store.get(hot)  # a hit, recorded with this process's next write (which may wait for many others)


def test_four_processes_filling_ten_times_the_bound_keep_it_and_remove_the_least_recent(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "kv.db")
    workers, size = (8, 190) if LONG else (4, 190)
    count = 10 * 20_000 // (workers * 200)
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_fill, args=(path, w, count, size)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    kept, true, _ = books(path)
    assert kept == true <= 20_000
    assert kept > 20_000 - 200  # never more removed than needed: one more entry would not fit
    survivors = set(SqliteRawBackend(path))
    for w in range(workers):
        mine = sorted(
            int(k.rsplit("/", 1)[1]) for k in survivors if k.startswith(f"p{w}/") and "hot" not in k
        )
        assert mine == list(range(count - len(mine), count))  # the newest of each writer: a suffix


def _write_after_fork(store: SqliteRawBackend) -> None:
    store.dump_many({f"child{i}": bytes(100) for i in range(50)})
    store["child-last"] = bytes(100)


def test_a_child_forked_after_first_use_keeps_the_bound(tmp_path: Path) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxbytes=3_000)
    store.dump_many({f"parent{i}": bytes(100) for i in range(20)})
    assert store["parent0"] == bytes(100)  # a hit remembered, not yet recorded, when it forks
    child = multiprocessing.get_context("fork").Process(target=_write_after_fork, args=(store,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    store["parent-last"] = bytes(100)
    kept, true, _ = books(store.path)
    assert kept == true <= 3_000 and "child-last" in store and "parent-last" in store


def _hang_in_eviction(path: str, ready: Any) -> None:
    class Hanging(FrozenClock):
        reads = 0

        def __call__(self) -> float:
            self.reads += 1
            if self.reads == 2:  # inside the write's transaction, choosing what to remove
                ready.send("evicting")
                threading.Event().wait()  # until killed
            return self.now

    store = SqliteRawBackend(path, clock=Hanging(), maxsize=5)
    store.dump("new", bytes(10))


def test_a_writer_killed_mid_eviction_leaves_the_bound_and_the_books_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.db")
    SqliteRawBackend(path, maxsize=5).dump_many({f"k{i}": bytes(10) for i in range(5)})
    context = multiprocessing.get_context("fork")
    parent, child_end = context.Pipe()
    proc = context.Process(target=_hang_in_eviction, args=(path, child_end))
    proc.start()
    assert parent.poll(60) and parent.recv() == "evicting"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    store = SqliteRawBackend(path, maxsize=5)
    assert sorted(store) == [f"k{i}" for i in range(5)]  # the killed write left nothing
    kept, true, rows = books(path)
    assert kept == true == 5 * 12 and rows == 5
    store["after"] = bytes(10)  # and the next write is not locked out, and keeps the bound
    assert len(store) == 5 and "after" in store


def test_threads_reading_and_writing_one_bounded_store_keep_it_exact(tmp_path: Path) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxbytes=5_000)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                store[f"t{n}/{i % 40}"] = bytes(100)
                store.load_many([f"t{(n + 1) % 4}/{j}" for j in range(i % 40)])
                store.get(f"t{n}/{(i * 7) % 40}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    kept, true, _ = books(store.path)
    assert kept == true <= 5_000


def test_lock_rows_are_not_entries(tmp_path: Path) -> None:
    store = SqliteRawBackend(tmp_path / "kv.db", maxsize=2)
    with store.lock("a", timeout=1, ttl=30):
        store.dump_many({"a": b"1", "b": b"2"})
        assert sorted(store) == ["a", "b"]
        store["c"] = b"3"
        assert sorted(store) == ["b", "c"]
