"""SqliteBackend: every key a row of one SQLite file, with optional expiry (a cache).

Safe across threads (a connection per thread) and processes (SQLite's own
locking, a write-ahead log). Every call is one statement, so each is
atomic; ``dump_many`` and ``delete_many`` are one transaction each.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import weakref
from collections.abc import Callable
from typing import Any, Final, TypeVar

from ..base import MISSING, Missing
from ..bounds import check_bound
from ..cache import check_entry_etag, check_timeout
from ..codecs.layers import CodecOption
from ..errors import BackendError, SerializationError, StoreError, check_flag
from ..events import observed
from ..locks import Lock
from .bound import Bound, bookkeeping_gone
from .faults import translate
from .locks import SqliteLock
from .paths import file_path
from .reads import PAGE, SqliteReads
from .schema import WRITING, Connection, Connections, Transaction

__all__ = ["MAX_VALUE_BYTES", "PAGE", "SqliteBackend"]

V = TypeVar("V")

# ?1 key, ?2 data, ?3 now (when written), ?4 deadline, ?5 etag
_UPSERT: Final = (
    "INSERT INTO kv VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET"
    " data = excluded.data, written = excluded.written, deadline = excluded.deadline, etag = excluded.etag"
)
_CREATE: Final = _UPSERT + " WHERE kv.deadline <= ?3"  # if absent: only over an expired entry
# RETURNING gives the deadline, compared here: SQLite 3.40 computes an expression
# of it wrong in a DELETE's RETURNING (the partial index on deadline).
_DELETE: Final = "DELETE FROM kv WHERE key = ? RETURNING deadline"
_POP: Final = "DELETE FROM kv WHERE key = ? RETURNING CAST(data AS BLOB), deadline"
_DELETE_MANY: Final = "DELETE FROM kv WHERE key IN ({}) RETURNING deadline"
_RENEW: Final = "UPDATE kv SET deadline = ? WHERE key = ? AND etag = ?"
_PURGE: Final = "DELETE FROM kv WHERE deadline <= ?"


#: the longest value: SQLite's limit on a row (SQLITE_MAX_LENGTH, 1e9 bytes) less room for the key
MAX_VALUE_BYTES: Final = 1_000_000_000 - 2_048


class SqliteBackend(SqliteReads[V]):
    """Values in one SQLite file (made, with its folder, at the first write), a row per key.

    Its families: ``SqliteJsonBackend``, ``SqliteTextBackend``,
    ``SqliteRawBackend``. ``timeout``: seconds an entry lives after it is
    written (None: forever; per ``dump``, ``timeout=``), by ``clock``: with
    one, it is an expiring cache (``purge``, ``expires``, and a tier's
    ``peek``/``fill``/``renew``). ``busy_timeout``: seconds a writer waits
    for another process's write before StoreUnavailableError. ``durable``:
    every commit is synced to the disk (SQLite's ``synchronous=FULL``);
    without it a commit survives a killed process but a power cut may lose
    the last ones (``NORMAL``, as diskcache). A read never writes: it makes
    no file and removes no expired row (the next write of the key, or
    ``purge``, does). ``maxbytes``, ``maxsize``: a bound on the file's
    entries (their keys' and values' bytes, their number), kept by every
    write, which removes the expired entries and then the least recently
    used ones past it (see :mod:`backends.sqlite.bound`).
    """

    _native_errors = (sqlite3.Error, OSError)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        busy_timeout: float = 5.0,
        durable: bool = False,
        clock: Callable[[], float] | None = None,
        maxbytes: int | None = None,
        maxsize: int | None = None,
        codec: CodecOption[V] = None,
    ) -> None:
        self._check_codec(codec)
        maxbytes, maxsize = check_bound("maxbytes", maxbytes), check_bound("maxsize", maxsize)
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise ValueError(f"busy_timeout is seconds, not {type(busy_timeout).__name__}")
        if not 0 <= busy_timeout <= 3600:
            raise ValueError(f"busy_timeout is seconds from 0 to 3600, not {busy_timeout!r}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable is True or False, not {type(durable).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError(
                f"clock is a function returning seconds since the epoch, not {type(clock).__name__}"
            )
        self.path = file_path(path)
        self.timeout = check_timeout(timeout)
        # A store with a timeout is a cache: its loads count hits and misses, as JsonCache's.
        self._counted = self.timeout is not None
        self._start_counting()
        self.busy_timeout = float(busy_timeout)
        self.durable = durable
        if clock is not None:
            self.clock = clock
        #: the size bound, None for an unbounded store (whose calls are exactly those of no bound)
        self._bound = None if maxbytes is None and maxsize is None else Bound(maxbytes, maxsize)
        prepare = None if self._bound is None else self._bound.prepare
        self._connections = Connections(self.path, self.busy_timeout, self.durable, prepare)
        self._reader = self._connections.reader
        self._db = self._connections.writer
        if self._bound is not None:
            _UNCLOSED[id(self)] = self  # its hits recorded at exit if it is never closed

    # -- deadlines, sizes --------------------------------------------------------------------

    def _deadline(self, timeout: float | Missing | None, now: float) -> float | None:
        seconds = self.timeout if timeout is MISSING else check_timeout(timeout)
        return None if seconds is None else now + seconds

    def _existing(self) -> Connection | None:
        """The writer's connection if the file holds our tables, else None (deleting nothing makes it)."""
        return None if self._reader() is None else self._db()

    def _check_size(self, key: str, data: bytes, operation: str) -> None:
        # Before any I/O: past 2 GiB the driver raises a raw OverflowError,
        # past SQLite's limit it copies the value before it refuses it.
        size = len(data)
        if size > MAX_VALUE_BYTES:
            raise StoreError(
                f"the value is {size:,} bytes: SQLite stores at most {MAX_VALUE_BYTES:,} (nothing written)",
                backend=repr(self),
                operation=operation,
                key=key,
            )
        refusal = None if self._bound is None else self._bound.refusal(key, size)
        if refusal is not None:
            raise SerializationError(refusal, backend=repr(self), operation=operation, key=key)

    # -- the writes (the reads: backends/sqlite/reads.py) -----------------------------------

    @observed("dump")
    def dump(
        self, key: str, value: V, *, if_absent: bool = False, timeout: float | Missing | None = MISSING
    ) -> bool:
        """Store ``value`` under ``key``, expiring after ``timeout`` seconds (default: the backend's).

        With ``if_absent=True`` only a missing (or expired) key is written; one statement.
        """
        check_flag(if_absent, "if_absent")
        if timeout is not MISSING:
            check_timeout(timeout)
        return self._write_value(
            key, value, "dump", lambda key, data: self._write(key, data, if_absent, timeout, operation="dump")
        )

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._write(key, data, if_absent, MISSING, operation="dump")

    def _write(
        self,
        key: str,
        data: bytes,
        if_absent: bool,
        timeout: float | Missing | None,
        *,
        operation: str,
        etag: str | None = None,
    ) -> bool:
        self._check_size(key, data, operation)
        now = self.clock()
        row = (key, data, now, self._deadline(timeout, now), etag)
        statement = _CREATE if if_absent else _UPSERT
        if self._bound is not None:
            return self._bounded(lambda db: db.execute(statement, row).rowcount == 1, key)
        db = self._db()
        with WRITING:
            changed: int = db.execute(statement, row).rowcount
        return changed == 1

    def _dump_many(self, items: list[tuple[str, bytes]]) -> None:
        for key, data in items:
            self._check_size(key, data, "dump_many")
        now = self.clock()
        deadline = self._deadline(MISSING, now)
        rows = [(key, data, now, deadline, None) for key, data in items]
        if self._bound is not None:
            self._bounded(lambda db: db.executemany(_UPSERT, rows).rowcount > 0, None)
            return
        with self._transaction() as db:
            db.executemany(_UPSERT, rows)

    # -- the size bound (backends/sqlite/bound.py) ---------------------------------------------

    def _bounded(self, write: Callable[[Connection], bool], key: str | None) -> bool:
        """``write`` in a transaction that also records this store's hits and keeps the bound."""
        assert self._bound is not None
        try:
            return self._bound.write(self._transaction, write, self.clock, key)
        except sqlite3.DatabaseError as exc:
            if not bookkeeping_gone(exc):
                raise
        # Another program damaged the bookkeeping after this connection made it (the triggers
        # then fail every write): rebuilt from kv, and the write made, once.
        with WRITING:
            self._bound.rebuild(self._db())
        return self._bound.write(self._transaction, write, self.clock, key)

    def _used(self, key: str) -> None:
        """A hit of a bounded store; now and then recorded by a store that only reads."""
        assert self._bound is not None
        if self._bound.used(key):
            self._bound.record_quietly(self._connections.reader(), self._quiet_transaction, self.busy_timeout)

    def _delete(self, key: str) -> bool:
        db = self._existing()
        if db is None:
            return False
        with WRITING:
            row = db.execute(_DELETE, (key,)).fetchone()
        return row is not None and _alive(row[0], self.clock())

    def _delete_many(self, keys: list[str]) -> int:
        if self._existing() is None:
            return 0
        removed = 0
        with self._transaction() as db:
            now = self.clock()
            for start in range(0, len(keys), PAGE):
                chunk = keys[start : start + PAGE]
                rows = db.execute(_DELETE_MANY.format(",".join("?" * len(chunk))), chunk)
                removed += sum(1 for (deadline,) in rows.fetchall() if _alive(deadline, now))
        return removed

    def _pop(self, key: str) -> bytes | Missing:
        # One statement: of racing callers exactly one gets the value.
        db = self._existing()
        if db is None:
            return MISSING
        with WRITING:
            row = db.execute(_POP, (key,)).fetchone()
        if row is None or not _alive(row[1], self.clock()):
            return MISSING
        data: bytes = row[0]
        return data

    def _clear(self) -> None:
        db = self._existing()
        if db is not None:
            with WRITING:
                db.execute("DELETE FROM kv")
            if self._bound is not None:
                self._bound.forget()

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return SqliteLock(key, timeout, ttl, self._db, **self._lock_context())

    def _transaction(self) -> Transaction:
        return Transaction(self._db())

    def _quiet_transaction(self) -> Transaction:
        """A transaction for hits only: a file to switch to WAL is tried once, never waited for."""
        return Transaction(self._connections.writer(wait=False))

    # -- expiry, stat -----------------------------------------------------------------------

    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """Remove every expired entry (one statement); return how many were removed."""
        with self._translating("purge", None):
            db = self._existing()
            if db is None:
                return 0
            with WRITING:
                removed: int = db.execute(_PURGE, (self.clock(),)).rowcount
        return removed

    # -- entries, for a tier (the ExpiringCache capability) -----------------------------------

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``.

        A value that can never fit the bound is not kept, and the key's older
        entry is removed (a tier serves it from the origin; no older value stays).
        """
        check_entry_etag(etag, "fill", optional=True)
        self._write_value(key, value, "fill", lambda key, data: self._fill(key, data, etag))

    def _fill(self, key: str, data: bytes, etag: str | None) -> bool:
        if self._bound is not None and self._bound.refusal(key, len(data)) is not None:
            self._delete(key)
            return False
        return self._write(key, data, False, MISSING, operation="fill", etag=etag)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value filled with ``etag``."""
        key = self._check(key, "renew")
        check_entry_etag(etag, "renew")
        with self._translating("renew", key):
            db = self._existing()
            if db is None:
                return False
            deadline = self._deadline(MISSING, self.clock())
            with WRITING:
                changed: int = db.execute(_RENEW, (deadline, key, etag)).rowcount
        if changed == 1 and self._bound is not None:
            self._used(key)  # a tier's hit, revalidated
        return changed == 1

    # -- errors, identity, lifetime ---------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if self.closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        return translate(exc, self.path, self.busy_timeout)

    def _describe(self) -> str:
        parts = [repr(self.path)]
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout:g}")
        if self._bound is not None:
            parts += [f"{name}={value}" for name, value in self._bounds().items() if value is not None]
        return ", ".join(parts)

    def _identity(self) -> tuple[object, ...]:
        return (self.path, self.codec.identity())

    def _bounds(self) -> dict[str, int | None]:
        bound = self._bound
        return (
            {"maxbytes": None, "maxsize": None}
            if bound is None
            else {"maxbytes": bound.maxbytes, "maxsize": bound.maxsize}
        )

    @property
    def closed(self) -> bool:
        return self._connections.closed

    def close(self) -> None:
        """Record the hits not recorded yet (never waiting), close every thread's connection.

        Every later call raises StoreError.
        """
        self._record_hits()
        self._connections.close()

    def _record_hits(self) -> None:
        """The hits this store remembers, recorded if another writer lets it at once (at close and exit)."""
        bound = self._bound
        if bound is None or not bound.pending or self.closed:
            return
        # deliberate: the hits are a hint of the order, and the store closes all the same
        with contextlib.suppress(sqlite3.DatabaseError, OSError):
            bound.record_quietly(self._connections.reader(), self._quiet_transaction, self.busy_timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        # Connections do not cross processes: a copy opens its own.
        settings: dict[str, Any] = {
            "timeout": self.timeout,
            "busy_timeout": self.busy_timeout,
            "durable": self.durable,
            **self._bounds(),
        }
        if "clock" in vars(self):
            settings["clock"] = self.clock
        return (_rebuild, (type(self), self.path, {**settings, **self._codec_option()}))


#: the bounded stores alive, by id (two stores of one file are equal): at exit, their hits are recorded
_UNCLOSED: weakref.WeakValueDictionary[int, SqliteBackend[Any]] = weakref.WeakValueDictionary()


@atexit.register
def _record_hits_at_exit() -> None:
    for store in list(_UNCLOSED.values()):
        store._record_hits()


def _alive(deadline: object, now: float) -> bool:
    """SQLite's ``deadline IS NULL OR deadline > now``, as the reads ask it (a TEXT or BLOB
    another program stored compares greater than any number)."""
    if deadline is None or not isinstance(deadline, (int, float)):
        return True
    return deadline > now


def _rebuild(cls: type[SqliteBackend[Any]], path: str, settings: dict[str, Any]) -> SqliteBackend[Any]:
    return cls(path, **settings)
