"""The size bound of a SQLite store: its bookkeeping tables, uses recorded, victims chosen.

::

    kv_use(key TEXT PRIMARY KEY, used INTEGER, size INTEGER) WITHOUT ROWID
                            a row per row of kv: the tick of its last use, and its
                            size (the key's UTF-8 bytes plus the value's)
    kv_use_order            an index on used: the least recently used first, cheaply
    kv_bound(bytes, tick)   one row: the sum of the sizes, and the last tick given

The seam with the store: the store opens the connections and the
transactions; this module makes the bookkeeping (:meth:`Bound.prepare`, at a
connection's first write), is told of each hit (:meth:`Bound.used`: no I/O),
and, inside every write's transaction, records the hits told since and
removes what the bound needs (:meth:`Bound.settle`). Triggers on ``kv`` keep
the sizes and the ticks, so every writer of the file keeps them exact: an
unbounded store, this library's older releases and other programs' SQL alike.
They also keep ``kv_count`` exact under another program's ``REPLACE`` (``INSERT
OR REPLACE``, ``UPDATE OR REPLACE``): SQLite fires no DELETE trigger for the row
a REPLACE removes unless that connection set ``recursive_triggers``, so a use
still recorded for the new row's key is that removed row, counted out here
(with the pragma on, the DELETE trigger has already removed the use: nothing
is counted twice). Building the bookkeeping recounts ``kv_count`` from ``kv`` (and
keeps one row of it: earlier releases added one per connection making the file at once).
A tick orders uses, not a clock: frozen, stepped or unequal clocks change
nothing of which entry is the least recently used.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Final

from .schema import WRITING, Connection, ForeignTableError

__all__ = ["BOUND_TABLES", "Bound", "bookkeeping_gone"]

#: our bookkeeping tables and their columns (a table of one of these names with others is not ours)
BOUND_TABLES: Final = {"kv_use": ("key", "used", "size"), "kv_bound": ("bytes", "tick")}
#: every object of the bookkeeping: one missing (another program dropped it) and it is rebuilt
_OBJECTS: Final = (
    "kv_use",
    "kv_bound",
    "kv_use_order",
    "kv_use_inserted",
    "kv_use_removed",
    "kv_use_updated",
)
#: hits remembered between two writes of this store; past it, new keys wait for the next write
_PENDING: Final = 4096
#: seconds, and hits, between two attempts of a store that only reads to record its hits
_QUIET_EVERY: Final = 1.0
_QUIET_HITS: Final = 256

_SIZE: Final = "length(CAST({0}.key AS BLOB)) + length(CAST({0}.data AS BLOB))"
_OLD_SIZE: Final = "COALESCE((SELECT size FROM kv_use WHERE key = {}.key), 0)"
_SCHEMA: Final = f"""
CREATE TABLE kv_use (
    key TEXT PRIMARY KEY NOT NULL, used INTEGER NOT NULL, size INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO kv_use SELECT key, ROW_NUMBER() OVER (ORDER BY
    CASE WHEN typeof(written) IN ('integer', 'real') THEN written ELSE 0 END, rowid),
    {_SIZE.format("kv")} FROM kv;
CREATE INDEX kv_use_order ON kv_use (used);
CREATE TABLE kv_bound (bytes INTEGER NOT NULL, tick INTEGER NOT NULL);
INSERT INTO kv_bound SELECT COALESCE(SUM(size), 0), COUNT(*) FROM kv_use;
DELETE FROM kv_count WHERE rowid > (SELECT MIN(rowid) FROM kv_count);
INSERT INTO kv_count SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM kv_count);
UPDATE kv_count SET n = (SELECT COUNT(*) FROM kv);
CREATE TRIGGER kv_use_inserted AFTER INSERT ON kv BEGIN
    UPDATE kv_count SET n = n - 1 WHERE EXISTS (SELECT 1 FROM kv_use WHERE key = new.key);
    UPDATE kv_bound SET bytes = bytes + {_SIZE.format("new")} - {_OLD_SIZE.format("new")}, tick = tick + 1;
    INSERT INTO kv_use VALUES (new.key, (SELECT tick FROM kv_bound), {_SIZE.format("new")})
        ON CONFLICT (key) DO UPDATE SET used = excluded.used, size = excluded.size;
END;
CREATE TRIGGER kv_use_removed AFTER DELETE ON kv BEGIN
    UPDATE kv_bound SET bytes = bytes - {_OLD_SIZE.format("old")};
    DELETE FROM kv_use WHERE key = old.key;
END;
CREATE TRIGGER kv_use_updated AFTER UPDATE OF key, data, written ON kv BEGIN
    UPDATE kv_count SET n = n - 1
        WHERE old.key IS NOT new.key AND EXISTS (SELECT 1 FROM kv_use WHERE key = new.key);
    UPDATE kv_bound SET bytes = bytes + {_SIZE.format("new")} - {_OLD_SIZE.format("old")}
        - CASE WHEN old.key IS NOT new.key THEN {_OLD_SIZE.format("new")} ELSE 0 END, tick = tick + 1;
    DELETE FROM kv_use WHERE key = old.key AND old.key IS NOT new.key;
    INSERT INTO kv_use VALUES (new.key, (SELECT tick FROM kv_bound), {_SIZE.format("new")})
        ON CONFLICT (key) DO UPDATE SET used = excluded.used, size = excluded.size;
END;
"""
_DROP: Final = "".join(
    f"DROP {kind} IF EXISTS {name};"
    for kind, name in [
        ("TRIGGER", "kv_use_added"),
        ("TRIGGER", "kv_use_inserted"),
        ("TRIGGER", "kv_use_removed"),
        ("TRIGGER", "kv_use_changed"),
        ("TRIGGER", "kv_use_updated"),
        ("TABLE", "kv_use"),
        ("TABLE", "kv_bound"),
    ]
)
_FOUND: Final = "SELECT name FROM sqlite_master WHERE name IN ({})".format(
    ", ".join(f"'{n}'" for n in _OBJECTS)
)
_TOTALS: Final = "SELECT (SELECT bytes FROM kv_bound), (SELECT n FROM kv_count), (SELECT tick FROM kv_bound)"
_USED: Final = "UPDATE kv_use SET used = ?2 WHERE key = ?1"
_TICKS: Final = "UPDATE kv_bound SET tick = ?"
# Victims by rowid (a name another program stored as no UTF-8 is never decoded); a use
# recorded for no row (the bookkeeping of another program's damage) comes with a NULL rowid.
_EXPIRED: Final = (
    "SELECT kv.rowid, u.size, u.key FROM kv JOIN kv_use u ON u.key = kv.key"
    " WHERE kv.deadline <= ?1 AND kv.key IS NOT ?2 ORDER BY kv.deadline, u.used LIMIT ?3"
)
_LEAST_USED: Final = (
    "SELECT kv.rowid, u.size FROM kv_use u LEFT JOIN kv ON kv.key = u.key"
    " WHERE u.key IS NOT ?1 ORDER BY u.used LIMIT ?2"
)
_ORPHANS: Final = (
    "DELETE FROM kv_use WHERE NOT EXISTS (SELECT 1 FROM kv WHERE kv.key = kv_use.key) RETURNING size"
)
#: rows looked at by the first query choosing victims (a write past the bound removes one or two),
#: four times more by each next one, up to the last
_FIRST_BATCH: Final = 2
_BATCH: Final = 512


class Bound:
    """At most ``maxbytes`` bytes and ``maxsize`` entries in a store's file, least recently used out first.

    A hit is remembered in this process (a dict assignment) and recorded in
    the next write's transaction, or, in a store that only reads, after a
    second or 256 hits, in a transaction that never waits for another writer.
    """

    def __init__(self, maxbytes: int | None, maxsize: int | None) -> None:
        self.maxbytes, self.maxsize = maxbytes, maxsize
        self._pending: dict[str, None] = {}
        self._lock = threading.Lock()
        self._quiet_at = time.monotonic() + _QUIET_EVERY
        self._hits = 0  # since the last recording (approximate across threads: a hint only)

    # -- the bookkeeping ------------------------------------------------------------------

    @staticmethod
    def prepare(db: Connection) -> None:
        """Make the bookkeeping if the file lacks any of it (one transaction, from ``kv``'s rows).

        Raises ForeignTableError for a table of our names that another program made.
        """
        if _ours(db) and len(db.execute(_FOUND).fetchall()) == len(_OBJECTS):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            if not _ours(db) or len(db.execute(_FOUND).fetchall()) != len(_OBJECTS):
                # Missing or partial (another program dropped a part): the sizes are unknown, rebuilt.
                for statement in _statements(_DROP + _SCHEMA):
                    db.execute(statement)
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")

    @staticmethod
    def rebuild(db: Connection) -> None:
        """Make the bookkeeping again from ``kv``'s rows (another program damaged it), one transaction."""
        db.execute("BEGIN IMMEDIATE")
        try:
            _ours(db)  # a foreign table of our name is refused, left alone
            for statement in _statements(_DROP + _SCHEMA):
                db.execute(statement)
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")

    def refusal(self, key: str, size: int) -> str | None:
        """Why an entry of ``key`` and a value of ``size`` bytes can never be kept; None if it can."""
        entry = size + len(key.encode("utf-8", "surrogateescape"))
        if self.maxbytes is None or entry <= self.maxbytes:
            return None
        return (
            f"the entry is {entry:,} bytes (key and value): more than maxbytes={self.maxbytes:,}, "
            "so it can never be kept (nothing written)"
        )

    # -- the writes -----------------------------------------------------------------------

    def write(
        self,
        transaction: Callable[[], AbstractContextManager[Connection]],
        write: Callable[[Connection], bool],
        clock: Callable[[], float],
        key: str | None,
    ) -> bool:
        """``write`` in one transaction with the hits remembered (first) and the removals it needs.

        The hits are put back if the transaction fails: nothing of it stays.
        """
        hits = self.take()
        try:
            with transaction() as db:
                self.record(db, hits)  # first: those hits came before this write
                done = write(db)
                self.settle(db, clock, key)
        except BaseException:
            self.restore(hits)
            raise
        return done

    def record_quietly(
        self,
        db: Connection | None,
        transaction: Callable[[], AbstractContextManager[Connection]],
        busy_timeout: float,
    ) -> None:
        """Record the hits in a transaction that never waits (``busy_timeout`` 0): a read never blocks.

        Another writer at work, a read-only file or a full disk: the hits
        wait for the next write (or the next second); the read that came here
        has its value either way.
        """
        if db is None:
            return
        hits = self.take()
        db.execute("PRAGMA busy_timeout = 0")
        try:
            with transaction() as writer:
                self.record(writer, hits)
        except (sqlite3.DatabaseError, OSError):
            self.restore(hits)  # deliberate: the hits wait, the read succeeded
        finally:
            db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")

    # -- uses -------------------------------------------------------------------------------

    def used(self, key: str) -> bool:
        """Remember a hit on ``key`` (no I/O); True when a store that only reads should record them."""
        pending = self._pending
        if pending.pop(key, 0) is None or len(pending) < _PENDING:
            pending[key] = None  # at the end: the most recent (past _PENDING, new keys wait)
        self._hits += 1
        return self._hits >= _QUIET_HITS or time.monotonic() >= self._quiet_at

    def take(self) -> list[str]:
        """The hits remembered, oldest first, handed to a recording (which may fail: :meth:`restore`)."""
        with WRITING, self._lock:  # never held across a fork (a child would wait forever)
            pending, self._pending = self._pending, {}
            self._quiet_at = time.monotonic() + _QUIET_EVERY
            self._hits = 0
        return list(pending)

    def restore(self, keys: list[str]) -> None:
        """Put back the hits of a recording that failed (older than those remembered since)."""
        if keys:
            with WRITING, self._lock:
                merged = dict.fromkeys(keys)
                for key in self._pending:  # hits made meanwhile are the newer: moved to the end
                    merged.pop(key, None)
                    merged[key] = None
                self._pending = dict.fromkeys(list(merged)[-_PENDING:])

    def forget(self) -> None:
        """Drop the hits not recorded yet (``clear()``: their rows are gone)."""
        with WRITING, self._lock:
            self._pending = {}

    @property
    def pending(self) -> bool:
        """Whether hits wait to be recorded."""
        return bool(self._pending)

    @staticmethod
    def record(db: Connection, keys: list[str]) -> None:
        """Record hits on ``keys`` (oldest first) inside the caller's write transaction: new ticks."""
        if keys:
            tick: int = _totals(db)[2]
            db.executemany(_USED, [(key, tick + n) for n, key in enumerate(keys, 1)])
            db.execute(_TICKS, (tick + len(keys),))

    # -- eviction -------------------------------------------------------------------------

    def settle(
        self, db: Connection, clock: Callable[[], float], written: str | None, rebuild: bool = True
    ) -> int:
        """Inside a write's transaction (hits recorded first): remove what the bound needs.

        Expired entries first (the earliest deadline first), then the least
        recently used; never ``written`` (the entry this write made), never
        more entries than needed; ``clock`` is read (once) only when some must
        go. Returns how many entries were removed. Still past the bound with
        nothing left to remove, the bookkeeping was damaged behind the
        triggers (rows without their use): it is rebuilt from ``kv``, once.
        """
        size, count, _ = _totals(db)
        excess = [self._over(size, self.maxbytes), self._over(count, self.maxsize)]
        if excess == [0, 0]:
            return 0
        removed = self._remove(db, _EXPIRED, (clock(), written), excess)
        if excess != [0, 0]:
            removed += self._remove(db, _LEAST_USED, (written,), excess)
        if excess[0] > 0:
            _drop_orphans(db)  # sizes of rows gone behind the triggers' back: never seen as room
        if excess != [0, 0] and rebuild:
            for statement in _statements(_DROP + _SCHEMA):
                db.execute(statement)
            removed += self.settle(db, clock, written, rebuild=False)
        return removed

    @staticmethod
    def _over(total: int, bound: int | None) -> int:
        return 0 if bound is None else max(0, total - bound)

    def _remove(self, db: Connection, query: str, parameters: tuple[object, ...], excess: list[int]) -> int:
        """Remove rows in ``query``'s order until ``excess`` (bytes, entries) is covered."""
        removed, limit = 0, _FIRST_BATCH
        while excess[0] > 0 or excess[1] > 0:
            rows = db.execute(query, (*parameters, limit)).fetchall()
            victims: list[int] = []
            orphans = 0
            for row in rows:
                if excess[0] <= 0 and excess[1] <= 0:
                    break
                rowid, size = row[0], row[1]
                excess[0] -= size
                if rowid is None:
                    orphans += 1  # a use of no row: dropped below, no entry to count
                else:
                    excess[1] -= 1
                    victims.append(rowid)
            if orphans:
                _drop_orphans(db)
            if victims:
                db.execute(f"DELETE FROM kv WHERE rowid IN ({','.join('?' * len(victims))})", victims)
            removed += len(victims)
            if len(rows) < limit and not orphans:
                break
            limit = min(limit * 4, _BATCH)
        excess[0], excess[1] = max(excess[0], 0), max(excess[1], 0)
        return removed


def bookkeeping_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's answer for bookkeeping another program damaged under the triggers:
    a table of it dropped, or kv_bound's row deleted (its tick, read by the triggers, NULL)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return "no such table" in text and any(name in text for name in BOUND_TABLES)
    return isinstance(exc, sqlite3.IntegrityError) and "NOT NULL constraint failed: kv_use." in text


def _statements(script: str) -> list[str]:
    """``script`` cut into statements (executescript would commit the transaction first)."""
    found, pending = [], ""
    for line in script.replace(";", ";\n").splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    return found


def _totals(db: Connection) -> tuple[int, int, int]:
    """(bytes, entries, tick); a row of kv_bound or kv_count another program deleted: all rebuilt from kv."""
    totals = db.execute(_TOTALS).fetchone()
    if None in totals:
        for statement in _statements(_DROP + _SCHEMA):
            db.execute(statement)
        totals = db.execute(_TOTALS).fetchone()
    return totals  # type: ignore[no-any-return]


def _drop_orphans(db: Connection) -> None:
    """Remove the uses of rows that are gone (another program's damage), and their sizes."""
    sizes = db.execute(_ORPHANS).fetchall()
    if sizes:
        db.execute("UPDATE kv_bound SET bytes = bytes - ?", (sum(size for (size,) in sizes),))


def _ours(db: Connection) -> bool:
    """Whether the bookkeeping tables have our columns; ForeignTableError if one was not made by us."""
    for name, columns in BOUND_TABLES.items():
        found = tuple(column for (column,) in db.execute("SELECT name FROM pragma_table_info(?)", (name,)))
        if found and found != columns:
            raise ForeignTableError(
                f"table {name!r} (columns {', '.join(found)}) was not made by this library"
            )
        if not found:
            return False
    return True
