"""SqliteBackend: every key a row of one SQLite file, with optional expiry (a cache).

Safe across threads (a connection per thread) and processes (SQLite's own
locking, a write-ahead log). Every call is one statement, so each is
atomic; ``dump_many`` and ``delete_many`` are one transaction each.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sqlite3
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..bounds import check_bound
from ..cache import CountedLookups, Entry, check_timeout
from ..codecs.layers import CodecOption
from ..errors import (
    BackendError,
    PermissionDeniedError,
    SerializationError,
    StoreError,
    StoreUnavailableError,
)
from ..events import observed
from ..info import Stat, utc
from ..keys import all_valid, key_problem
from ..locks import Lock
from .bound import Bound, bookkeeping_gone
from .locks import SqliteLock
from .schema import WRITING, Connection, Connections, ForeignTableError

__all__ = ["MAX_VALUE_BYTES", "PAGE", "SqliteBackend"]

V = TypeVar("V")

#: rows per query of a listing, and keys per statement of a bulk call: memory stays flat
PAGE: Final = 500
_FRESH: Final = "(deadline IS NULL OR deadline > ?)"
# Freshness is SQLite's comparison, as in the listings (one answer for any row,
# another program's too), and data is CAST to bytes: a TEXT or number another
# program stored reads as its UTF-8 bytes, as SQLite gives them.
_LOAD: Final = "SELECT CAST(data AS BLOB) FROM kv WHERE key = ?1 AND (deadline IS NULL OR deadline > ?2)"
_CONTAINS: Final = "SELECT 1 FROM kv WHERE key = ?1 AND (deadline IS NULL OR deadline > ?2)"
_LOAD_MANY: Final = (
    "SELECT key, CAST(data AS BLOB) FROM kv WHERE key IN ({}) AND (deadline IS NULL OR deadline > ?)"
)
# ?1 key, ?2 data, ?3 now (when written), ?4 deadline, ?5 etag
_UPSERT: Final = (
    "INSERT INTO kv VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET"
    " data = excluded.data, written = excluded.written, deadline = excluded.deadline, etag = excluded.etag"
)
_CREATE: Final = _UPSERT + " WHERE kv.deadline <= ?3"  # if absent: only over an expired entry
_LIVE: Final = "deadline IS NULL OR deadline > ?2"
# RETURNING gives the deadline, compared here: SQLite 3.40 computes an expression
# of it wrong in a DELETE's RETURNING (the partial index on deadline).
_DELETE: Final = "DELETE FROM kv WHERE key = ? RETURNING deadline"
_POP: Final = "DELETE FROM kv WHERE key = ? RETURNING CAST(data AS BLOB), deadline"
_DELETE_MANY: Final = "DELETE FROM kv WHERE key IN ({}) RETURNING deadline"
_SIZE: Final = "CASE typeof(data) WHEN 'blob' THEN length(data) ELSE length(CAST(data AS BLOB)) END"
_LEN: Final = "SELECT (SELECT n FROM kv_count) - (SELECT COUNT(*) FROM kv WHERE deadline <= ?)"
# Listings: text names only (a BLOB or number another program wrote is a stray, named by
# strays()), from a bound given as bytes (CAST(? AS TEXT) compares them as text), so that a
# name that is no UTF-8, read back with surrogateescape, continues a listing as any other.
_TEXT: Final = "typeof(key) = 'text'"
_KEYS: Final = (
    f"SELECT key FROM kv WHERE key > CAST(? AS TEXT) AND {_TEXT} AND {_FRESH} ORDER BY key LIMIT {PAGE}"
)
_FROM: Final = (
    f"SELECT key FROM kv WHERE key >= CAST(? AS TEXT) AND {_TEXT} AND {_FRESH} ORDER BY key LIMIT {PAGE}"
)
_ROWS: Final = f"SELECT key FROM kv WHERE key >= CAST(? AS TEXT) AND {_TEXT} ORDER BY key LIMIT {PAGE}"
_ODD_ROWS: Final = f"SELECT CAST(key AS BLOB), typeof(key) FROM kv WHERE NOT {_TEXT}"
_STATS: Final = (
    f"SELECT key, {_SIZE}, CAST(written AS REAL) FROM kv"
    f" WHERE key >= CAST(? AS TEXT) AND {_TEXT} AND {_FRESH} ORDER BY key LIMIT {PAGE}"
)
_STAT: Final = f"SELECT {_SIZE}, CAST(written AS REAL) FROM kv WHERE key = ?1 AND ({_LIVE})"
_EXPIRES: Final = f"SELECT deadline FROM kv WHERE key = ?1 AND ({_LIVE})"
_PEEK: Final = f"SELECT CAST(data AS BLOB), deadline, etag, {_LIVE} FROM kv WHERE key = ?1"
_RENEW: Final = "UPDATE kv SET deadline = ? WHERE key = ? AND etag = ?"
_PURGE: Final = "DELETE FROM kv WHERE deadline <= ?"


#: the longest value: SQLite's limit on a row (SQLITE_MAX_LENGTH, 1e9 bytes) less room for the key
MAX_VALUE_BYTES: Final = 1_000_000_000 - 2_048


class SqliteBackend(CountedLookups, BaseBackend[V, bytes]):
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
        self.path = _file_path(path)
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

    # -- the store hooks ------------------------------------------------------------------
    # Reads are one SELECT each: they never write, so they never wait for a
    # writer (the write-ahead log) and work on a file they may not write.

    def _load(self, key: str) -> bytes | Missing:
        db = self._reader()
        row = None if db is None else db.execute(_LOAD, (key, self.clock())).fetchone()
        if self._counted:
            self._looked_up(key, row is not None)
        if row is None:
            return MISSING
        if self._bound is not None:
            self._used(key)
        data: bytes = row[0]
        return data

    def _contains(self, key: str) -> bool:
        db = self._reader()
        return db is not None and db.execute(_CONTAINS, (key, self.clock())).fetchone() is not None

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        db = self._reader()
        found: dict[str, bytes] = {}
        if db is not None:
            now = self.clock()
            for start in range(0, len(keys), PAGE):
                chunk = keys[start : start + PAGE]
                query = _LOAD_MANY.format(",".join("?" * len(chunk)))
                found.update(db.execute(query, [*chunk, now]).fetchall())
        if self._bound is not None:
            for key in keys:
                if key in found:
                    self._used(key)
        if self._counted:
            self._looked_up_all(keys, found)
        return found

    @observed("dump")
    def dump(
        self, key: str, value: V, *, if_absent: bool = False, timeout: float | Missing | None = MISSING
    ) -> bool:
        """Store ``value`` under ``key``, expiring after ``timeout`` seconds (default: the backend's).

        With ``if_absent=True`` only a missing (or expired) key is written; one statement.
        """
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
        except sqlite3.OperationalError as exc:
            if not bookkeeping_gone(exc):
                raise
        # Another program dropped a table of the bookkeeping after this connection made it
        # (the triggers then fail every write): rebuilt from kv, and the write made, once.
        with WRITING:
            self._bound.prepare(self._db())
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

    def _len(self) -> int:
        # A count kept by triggers, less the expired entries (an index range: none, usually).
        db = self._reader()
        count: int = 0 if db is None else db.execute(_LEN, (self.clock(),)).fetchone()[0]
        return count

    def _iter_keys(self) -> Iterator[str]:
        # Sorted, a page per query: no read transaction stays open between pages.
        last = ""
        while (db := self._reader()) is not None and (page := _page(db, _KEYS, (_bound(last), self.clock()))):
            keys = [key for (key,) in page]
            yield from keys if all_valid(keys, self._max_key_bytes) else filter(self._is_key, keys)
            if len(page) < PAGE:
                return
            last = page[-1][0]

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # In key order; a sub-folder is yielded once and the rest of it skipped with one query.
        low: str | None = prefix if _encodable(prefix) else None  # a lone surrogate starts no key
        while low is not None and (db := self._reader()) is not None:
            page = _page(db, _FROM, (_bound(low), self.clock()))
            valid = all_valid([key for (key,) in page], self._max_key_bytes)
            for (key,) in page:
                if not key.startswith(prefix):
                    return
                if not valid and not self._is_key(key):
                    continue  # a stray: no folder of it either
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut >= 0:
                    folder = key[: cut + len(delimiter)]
                    yield folder
                    low = _after(folder)
                    break
                yield key
            else:
                if len(page) < PAGE:
                    return
                low = page[-1][0] + "\x00"  # the first string after it (keys hold no NUL)

    def _clear(self) -> None:
        db = self._existing()
        if db is not None:
            with WRITING:
                db.execute("DELETE FROM kv")
            if self._bound is not None:
                self._bound.forget()

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return SqliteLock(key, timeout, ttl, self._db, **self._lock_context())

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db())

    def _quiet_transaction(self) -> _Transaction:
        """A transaction for hits only: a file to switch to WAL is tried once, never waited for."""
        return _Transaction(self._connections.writer(wait=False))

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

    def expires(self, key: str) -> datetime | None:
        """When ``key`` expires (a UTC datetime, by the backend's clock); None: never; KeyError: absent."""
        key = self._check(key, "expires")
        with self._translating("expires", key):
            db = self._reader()
            row = None if db is None else db.execute(_EXPIRES, (key, self.clock())).fetchone()
        if row is None:
            raise KeyError(key)
        return None if row[0] is None else utc(row[0])

    def stat(self, key: str) -> Stat | None:
        """Size and time written of ``key``; one query."""
        key = self._check(key, "stat")
        with self._translating("stat", key):
            db = self._reader()
            row = None if db is None else db.execute(_STAT, (key, self.clock())).fetchone()
        if row is None:
            return None
        return self._stat(key, *row)

    def _stat(self, key: str, size: int, written: float) -> Stat:
        return Stat(key=key, size=size, last_modified=utc(written), content_type=self.codec.content_type)

    def stat_many(self, prefix: str = "") -> Iterator[Stat]:
        """The :class:`~backends.info.Stat` of every key below ``prefix``, sorted (a page per query)."""
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        low = prefix
        with self._translating("stat_many", None):
            while _encodable(prefix) and (db := self._reader()) is not None:
                page = _page(db, _STATS, (_bound(low), self.clock()))
                valid = all_valid([key for key, _, _ in page], self._max_key_bytes)
                for key, size, written in page:
                    if not key.startswith(prefix):
                        return
                    if valid or self._is_key(key):
                        yield self._stat(key, size, written)
                if len(page) < PAGE:
                    return
                low = page[-1][0] + "\x00"

    def strays(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """Yield each row below ``prefix`` whose key is not a valid key, and why; streaming, sorted.

        Rows another program wrote: never listed, never loaded (their name is
        an InvalidKeyError), reported here instead of skipped silently (the
        ``backends`` command reports them for ``ls`` and ``cp``). A scan of
        the rows below ``prefix``, a page per query.
        """
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        with self._translating("strays", None):
            yield from self._text_strays(prefix)
            db = self._reader()
            for name, kind in [] if db is None else db.execute(_ODD_ROWS).fetchall():
                shown = _lenient(name)
                if shown.startswith(prefix):
                    yield shown, f"not a key: a name stored as {kind}, not text"

    def _text_strays(self, prefix: str) -> Iterator[tuple[str, str]]:
        low = prefix
        while _encodable(prefix) and (db := self._reader()) is not None:
            page = _page(db, _ROWS, (_bound(low),))
            for (key,) in page:
                if not key.startswith(prefix):
                    return
                problem = key_problem(key, self._max_key_bytes)
                if problem is not None:
                    yield key, f"not a key: {problem if _encodable(key) else 'not UTF-8 text'}"
            if len(page) < PAGE:
                return
            low = page[-1][0] + "\x00"

    def _is_key(self, key: str) -> bool:
        return key_problem(key, self._max_key_bytes) is None

    # -- entries, for a tier (the ExpiringCache capability) -----------------------------------

    def peek(self, key: str) -> Entry[V] | None:
        """The entry of ``key``, expired or not, with its origin ETag (nothing is removed)."""
        key = self._check(key, "peek")
        with self._translating("peek", key):
            db = self._reader()
            row = None if db is None else db.execute(_PEEK, (key, self.clock())).fetchone()
        if row is None:
            return None
        data, deadline, etag, live = row
        if self._bound is not None:
            self._used(key)  # a tier's hit
        return self._entry(data, key, deadline, bool(live), etag)

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``.

        A value that can never fit the bound is not kept, and the key's older
        entry is removed (a tier serves it from the origin; no older value stays).
        """
        self._write_value(key, value, "fill", lambda key, data: self._fill(key, data, etag))

    def _fill(self, key: str, data: bytes, etag: str | None) -> bool:
        if self._bound is not None and self._bound.refusal(key, len(data)) is not None:
            self._delete(key)
            return False
        return self._write(key, data, False, MISSING, operation="fill", etag=etag)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value filled with ``etag``."""
        key = self._check(key, "renew")
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
        text, name = str(exc), getattr(exc, "sqlite_errorname", "")
        if (
            isinstance(exc, PermissionError)
            or name.startswith("SQLITE_READONLY")
            or "readonly database" in text
        ):
            return PermissionDeniedError, f"no permission to write {self.path!r}"
        if name == "SQLITE_CANTOPEN" and os.path.exists(self.path) and not os.access(self._folder, os.W_OK):
            return PermissionDeniedError, (
                f"cannot read {self.path!r}: SQLite must make {os.path.basename(self.path)}-shm beside it "
                "(its write-ahead log's index) and the folder is read-only"
            )
        if name == "SQLITE_FULL" or getattr(exc, "errno", None) == errno.ENOSPC:
            return StoreError, f"the disk is full (nothing of this call written): {text}"
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return (
                StoreUnavailableError,
                f"the database stayed locked by another writer for busy_timeout={self.busy_timeout:g} s",
            )
        return StoreError, self._file_problem(exc, text, name)

    def _file_problem(self, exc: BaseException, text: str, name: str) -> str:
        """What is wrong with the file itself (never changed by this store), or SQLite's words."""
        if "file is not a database" in text:
            return f"{self.path!r} is not an SQLite database"
        if name == "SQLITE_CORRUPT" or "malformed" in text:
            return f"{self.path!r} is corrupt (SQLite: {text}); it was left as it is"
        if isinstance(exc, ForeignTableError):
            return f"{self.path!r} holds a {text}; it was left as it is"
        return f"SQLite: {text}" if isinstance(exc, sqlite3.Error) else text

    @property
    def _folder(self) -> str:
        return os.path.dirname(self.path)

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


class _Transaction:
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


def _alive(deadline: object, now: float) -> bool:
    """SQLite's ``deadline IS NULL OR deadline > now``, as the reads ask it (a TEXT or BLOB
    another program stored compares greater than any number)."""
    if deadline is None or not isinstance(deadline, (int, float)):
        return True
    return deadline > now


def _bound(text: str) -> bytes:
    """``text`` as a listing query binds it (``CAST(? AS TEXT)``): a name read back with
    surrogateescape (another program's, no UTF-8) is a bound as well as any."""
    return text.encode("utf-8", "surrogateescape")


def _lenient(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _page(db: Connection, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
    """One page of a listing. A name that is no UTF-8 (another program's) is read back with
    surrogateescape, to be told a stray, instead of failing the page: only then, as decoding
    every name so costs a third more."""
    try:
        return list(db.execute(sql, parameters).fetchall())
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    db.text_factory = _lenient
    try:
        return list(db.execute(sql, parameters).fetchall())
    finally:
        db.text_factory = str


def _encodable(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogate): what SQLite can be asked about."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _after(prefix: str) -> str | None:
    """The first string past every string that starts with ``prefix``; None if there is none.

    Its last character moved up by one, skipping the surrogates (no key holds one).
    """
    prefix = prefix.rstrip("\U0010ffff")
    if not prefix:
        return None  # "\U0010ffff..." is the end of the code points
    following = ord(prefix[-1]) + 1
    return prefix[:-1] + chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)


def _file_path(path: object) -> str:
    """The absolute path of the database file; ValueError or TypeError naming ``path`` before any I/O."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path is a str or os.PathLike naming a file, not {type(path).__name__}")
    given = os.fspath(path)
    if not isinstance(given, str):
        raise TypeError(f"path is a str or os.PathLike of str, not {type(given).__name__}")
    if given in ("", ":memory:"):
        raise ValueError(
            f"path {given!r} names no file (SQLite's private in-memory or temporary database is not "
            "shared by threads or processes): use VolatileBackend, or a file under tempfile.mkdtemp()"
        )
    if "\x00" in given:
        raise ValueError("path holds a NUL character")
    if not _encodable(given):
        raise ValueError(f"path {given!r} is not valid UTF-8 (SQLite takes UTF-8 paths)")
    return os.path.abspath(given)


def _rebuild(cls: type[SqliteBackend[Any]], path: str, settings: dict[str, Any]) -> SqliteBackend[Any]:
    return cls(path, **settings)
