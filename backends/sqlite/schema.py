"""The tables of a SQLite store, and one connection per thread to them.

::

    kv(key TEXT UNIQUE, data BLOB, written REAL, deadline REAL, etag TEXT)
                            a rowid table: values of a KiB or more make a key-only
                            tree of them (WITHOUT ROWID) slower at everything
    kv_count(n)             one row: how many rows kv has (kept by triggers)
    kv_locks(key TEXT PRIMARY KEY, token TEXT, until REAL)

``deadline`` and ``until`` are seconds since the epoch (NULL: never). The
journal is a write-ahead log: readers never wait for the writer, and one
writer at a time waits up to ``busy_timeout`` seconds for the others.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from typing import Final

__all__ = ["MMAP_BYTES", "SCHEMA", "Connections"]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL,
    written REAL NOT NULL,
    deadline REAL,
    etag TEXT
);
CREATE INDEX IF NOT EXISTS kv_deadline ON kv (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS kv_count (n INTEGER NOT NULL);
INSERT INTO kv_count SELECT COUNT(*) FROM kv WHERE NOT EXISTS (SELECT 1 FROM kv_count);
CREATE TRIGGER IF NOT EXISTS kv_added AFTER INSERT ON kv BEGIN UPDATE kv_count SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS kv_removed AFTER DELETE ON kv BEGIN UPDATE kv_count SET n = n - 1; END;
CREATE TABLE IF NOT EXISTS kv_locks (
    key TEXT PRIMARY KEY NOT NULL,
    token TEXT NOT NULL,
    until REAL NOT NULL
) WITHOUT ROWID;
"""

#: bytes of the file read through a memory map (as diskcache does)
MMAP_BYTES: Final = 64 * 1024 * 1024
#: bumped in a child process after fork: a connection never crosses a fork
_forks = [0]
#: connections a child inherited: never used, never closed (the parent's locks are its own)
_inherited: list[sqlite3.Connection] = []


def _forked() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_forked)


class _Connection(sqlite3.Connection):
    """A connection that :class:`Connections` can hold weakly (one ends with its thread)."""


class Connections:
    """One connection per thread (and per process) to one database file, made at first use."""

    def __init__(self, path: str, busy_timeout: float, durable: bool) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.durable = durable
        self._local = threading.local()
        self._opened: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.closed = False

    def get(self) -> sqlite3.Connection:
        """This thread's connection (made, with the file and its folder, if there is none)."""
        local = self._local
        if getattr(local, "fork", None) == _forks[0]:
            db: sqlite3.Connection = local.db
            return db
        if getattr(local, "db", None) is not None:
            _inherited.append(local.db)
        return self._connect()

    def _connect(self) -> _Connection:
        if self.closed:
            raise sqlite3.ProgrammingError("the backend is closed")
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        try:
            if db.execute("PRAGMA journal_mode").fetchall() != [("wal",)]:
                db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")  # reads from the page cache, no read() calls
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'kv_locks'").fetchall():
                db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
        except BaseException:
            db.close()
            raise
        with self._lock:
            if self.closed:
                db.close()
                raise sqlite3.ProgrammingError("the backend is closed")
            self._opened.add(db)
        self._local.db, self._local.fork = db, _forks[0]
        return db

    def close(self) -> None:
        """Close every thread's connection; a later :meth:`get` raises ProgrammingError."""
        with self._lock:
            self.closed = True
            opened = list(self._opened)
            self._opened.clear()
        for db in opened:
            db.close()
