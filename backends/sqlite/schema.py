"""The tables of a SQLite store, and one connection per thread to them.

::

    kv(key TEXT UNIQUE, data BLOB, written REAL, deadline REAL, etag TEXT)
                            a rowid table: values of a KiB or more make a key-only
                            tree of them (WITHOUT ROWID) slower at everything
    kv_count(n)             one row: how many rows kv has (kept by triggers)
    kv_locks(key TEXT PRIMARY KEY, token TEXT, until REAL)

``deadline`` and ``until`` are seconds since the epoch (NULL: never). The
journal is a write-ahead log: readers never wait for the writer, and one
writer at a time waits up to ``busy_timeout`` seconds for the others. The
file, the log and the tables are made at the first write: a read makes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Final

from ..forkgate import fork_gate

__all__ = [
    "MMAP_BYTES",
    "SCHEMA",
    "TABLES",
    "WRITING",
    "Connection",
    "Connections",
    "ForeignTableError",
    "Rows",
    "Transaction",
]

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
INSERT INTO kv_count SELECT (SELECT COUNT(*) FROM kv) WHERE NOT EXISTS (SELECT 1 FROM kv_count);
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
#: our tables and their columns: a table of one of these names with other columns is not ours
TABLES: Final = {
    "kv": ("key", "data", "written", "deadline", "etag"),
    "kv_count": ("n",),
    "kv_locks": ("key", "token", "until"),
}
#: bumped in a child process after fork: a thread's connection made before it is made anew
_era = [0]
#: connections a child inherited open (in a transaction at the fork): never used, never closed
_inherited: list[sqlite3.Connection] = []
#: every store's connections in this process
_live: weakref.WeakSet[Connections] = weakref.WeakSet()


#: what every write statement and transaction of every store of this process runs in
WRITING: Final = fork_gate()


def _close_inherited() -> None:
    """In a forked child, before anything else: close every connection inherited from the parent.

    SQLite keeps a process's locks on a file in one record per file (its unix VFS's inode
    record), which the child copies with the parent's connections. While the child holds one
    of them open, its new connections to that file find the record and take no lock of their
    own from the operating system. The parent's last connection closing then gets the file's
    EXCLUSIVE lock as if no other process had it open: it checkpoints and deletes the WAL the
    children are writing to, and every write they acknowledge after is lost. Closed here (no
    statement runs at a fork: :data:`WRITING`), the record goes with them. The parent holds its
    own lock, so a close here never checkpoints or deletes what the parent uses. A connection
    in a transaction of the forking thread is left open and never used.
    """
    _era[0] += 1
    for connections in list(_live):
        for db in list(connections._opened):
            if not db.shut and not db.in_transaction:
                sqlite3.Connection.close(db)
                db.shut = True


os.register_at_fork(after_in_child=_close_inherited)  # after WRITING's: its gate is reset first


class ForeignTableError(sqlite3.DatabaseError):
    """The file holds a table of one of our names that this library did not make."""


class Rows:
    """What a statement gave, fetched whole while the connection was held (a cursor's subset)."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class Connection(sqlite3.Connection):
    """A thread's connection: each statement runs and is fetched whole under its lock.

    ``close()`` from another thread takes the lock too: closing a connection
    while a statement of it runs crashes the process (the driver frees what
    the statement still uses). :class:`Connections` holds it weakly (one
    ends with its thread).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_use = threading.Lock()
        #: the process that made it, and whether it was closed (by close() or in a forked child)
        self.pid, self.shut = os.getpid(), False

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:  # type: ignore[override]
        with WRITING, self.in_use:
            cursor = _EXECUTE(self, sql, parameters)  # not super(): the hot path, by half a microsecond
            rows = Rows(cursor.fetchall(), cursor.rowcount)
            del cursor  # here: freeing it resets its statement, a call into SQLite (its allocator's mutex)
        return rows

    def executemany(self, sql: str, parameters: Any, /) -> Rows:  # type: ignore[override]
        with WRITING, self.in_use:
            return Rows([], sqlite3.Connection.executemany(self, sql, parameters).rowcount)

    def executescript(self, script: str, /) -> Rows:  # type: ignore[override]
        with WRITING, self.in_use:
            sqlite3.Connection.executescript(self, script)
            return Rows([], -1)

    def close(self) -> None:
        with WRITING, self.in_use:
            sqlite3.Connection.close(self)
            self.shut = True


_EXECUTE: Final = sqlite3.Connection.execute


class Connections:
    """One connection per thread (and per process) to one database file, made at first use.

    :meth:`reader` never creates or changes anything (no file, no folder, no
    switch to WAL, no table); :meth:`writer` makes them at the first write.
    """

    def __init__(
        self,
        path: str,
        busy_timeout: float,
        durable: bool,
        prepare: Callable[[Connection], None] | None = None,
    ) -> None:
        self.path = path
        #: more to make at a connection's first write (a bounded store's bookkeeping)
        self.prepare = prepare
        self.busy_timeout = busy_timeout
        self.durable = durable
        self._local = threading.local()
        #: every thread's connection (a child never closes its parent's)
        self._opened: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.closed = False
        _live.add(self)

    def reader(self) -> Connection | None:
        """This thread's connection, or None while the file or our tables do not exist (nothing made)."""
        local = self._local
        if getattr(local, "era", None) == _era[0] and local.schema:
            db: Connection = local.db
            return db
        current = self._current(create=False)
        if current is None:
            return None
        local.schema = _has_schema(current)
        return current if local.schema else None

    def writer(self, wait: bool = True) -> Connection:
        """This thread's connection, with the file, its folder, the WAL and our tables made if missing.

        ``wait=False`` (a read recording its hits, which must not wait): a
        switch to WAL that another connection's lock refuses is not retried,
        and :attr:`prepare` is left to the first write (building a bound's
        bookkeeping reads the whole file).
        """
        local = self._local
        if getattr(local, "era", None) == _era[0] and local.ready:
            db: Connection = local.db
            return db
        made = self._current(create=True)
        assert made is not None  # create=True makes the file
        with WRITING:
            self._prepare(made, wait)
            if self.prepare is not None:
                if not wait:
                    local.schema = True
                    return made
                self.prepare(made)
        local.ready = local.schema = True
        return made

    def _current(self, create: bool) -> Connection | None:
        local = self._local
        db: Connection | None = getattr(local, "db", None)
        if db is not None and local.era == _era[0]:
            return db
        if self.closed:
            raise sqlite3.ProgrammingError("the backend is closed")
        if db is not None:  # the parent's, before a fork
            if not db.shut:
                _inherited.append(db)  # open: freeing it would close it
            local.db = None
        if not create and not os.path.exists(self.path):
            return None
        if create and os.path.dirname(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        return self._connect("rwc" if create else "rw")

    def _connect(self, mode: str) -> Connection:
        # A URI with mode=rw never creates the file (a plain path would).
        uri = f"file://{urllib.parse.quote(self.path)}?mode={mode}"  # an empty authority: a path of "//" too
        with WRITING:
            db = self._open(uri)
        try:
            # Connection settings only: nothing in the file changes.
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")  # reads from the page cache, no read() calls
        except BaseException:
            db.close()
            raise
        return self._register(db)

    def _open(self, uri: str) -> Connection:
        db: Connection = sqlite3.connect(
            uri,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=Connection,
            uri=True,
        )
        return db

    def _register(self, db: Connection) -> Connection:
        with WRITING, self._lock:  # never held across a fork (a child would wait forever)
            if self.closed:
                db.close()
                raise sqlite3.ProgrammingError("the backend is closed")
            self._opened.add(db)
        local = self._local
        local.db, local.era, local.schema, local.ready = db, _era[0], False, False
        return db

    def _prepare(self, db: Connection, wait: bool = True) -> None:
        """Switch the file to WAL and make our tables (each once per file, at its first write)."""
        ours = _has_schema(db)  # first: a foreign table of our name is refused with nothing changed
        if db.execute("PRAGMA journal_mode").fetchall() != [("wal",)]:
            self._switch_to_wal(db, self.busy_timeout if wait else 0.0)
        if not ours:
            db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
            _has_schema(db)  # and check what another program may have made meanwhile

    def _switch_to_wal(self, db: Connection, patience: float) -> None:
        # Changing the journal mode takes the file's exclusive lock and SQLite
        # answers SQLITE_BUSY at once, without its busy handler, while another
        # connection reads or writes: retry, within ``patience`` seconds (busy_timeout).
        deadline = time.monotonic() + patience
        pause = 0.001
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL").fetchall()
                return
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        """Close every thread's connection; a later call raises ProgrammingError."""
        with WRITING, self._lock:
            self.closed = True
            pid = os.getpid()
            opened = [db for db in self._opened if db.pid == pid and not db.shut]
            self._opened.clear()
        for db in opened:
            db.close()  # waits for a statement of another thread to end


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(exc)


def _has_schema(db: Connection) -> bool:
    """Whether the file holds our tables (a read sees none until the first write made them).

    Raises ForeignTableError for a table of our name with other columns.
    """
    names = ", ".join(f"'{name}'" for name in TABLES)
    found = db.execute(
        f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({names})"
    ).fetchall()
    for (name,) in found:
        columns = tuple(column for (column,) in db.execute("SELECT name FROM pragma_table_info(?)", (name,)))
        if columns != TABLES[name]:
            raise ForeignTableError(
                f"table {name!r} (columns {', '.join(columns)}) was not made by this library"
            )
    return len(found) == len(TABLES)


class Transaction:
    """``with``: BEGIN IMMEDIATE (the write lock at once), COMMIT, or ROLLBACK on an error."""

    def __init__(self, db: Connection) -> None:
        self.db = db

    def __enter__(self) -> Connection:
        WRITING.__enter__()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            WRITING.__exit__()
            raise
        return self.db

    def __exit__(self, kind: object, exc: BaseException | None, _: object) -> None:
        try:
            if kind is None:
                self.db.execute("COMMIT")
            elif self._open():
                # SQLite has already rolled back after some errors (SQLITE_FULL,
                # IOERR, NOMEM): a second ROLLBACK would fail ("no transaction is
                # active") and hide the error that matters.
                self.db.execute("ROLLBACK")
        finally:
            try:
                if self._open():  # a failed COMMIT: nothing of it stays
                    self.db.execute("ROLLBACK")
            finally:
                WRITING.__exit__()  # always: a write counted forever would stop every fork

    def _open(self) -> bool:
        """Whether a transaction is open (a connection closed by another thread has none: rolled back)."""
        try:
            return self.db.in_transaction
        except sqlite3.ProgrammingError:
            return False
