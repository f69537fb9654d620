"""SqliteBackend: every key a row of one SQLite file, with optional expiry (a cache).

Safe across threads (a connection per thread) and processes (SQLite's own
locking, a write-ahead log). Every call is one statement, so each is
atomic; ``dump_many`` and ``delete_many`` are one transaction each.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..cache import Entry, check_timeout
from ..errors import BackendError, PermissionDeniedError, StoreError, StoreUnavailableError
from ..events import observed
from ..info import Stat, utc
from ..locks import Lock
from .locks import SqliteLock
from .schema import Connections

__all__ = ["PAGE", "SqliteBackend"]

V = TypeVar("V")

#: rows per query of a listing, and keys per statement of a bulk call: memory stays flat
PAGE: Final = 500
_FRESH: Final = "(deadline IS NULL OR deadline > ?)"
_LOAD: Final = "SELECT data, deadline FROM kv WHERE key = ?"
_CONTAINS: Final = "SELECT deadline FROM kv WHERE key = ?"
_EXPIRE: Final = "DELETE FROM kv WHERE key = ? AND deadline <= ?"
# ?1 key, ?2 data, ?3 now (when written), ?4 deadline, ?5 etag
_UPSERT: Final = (
    "INSERT INTO kv VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET"
    " data = excluded.data, written = excluded.written, deadline = excluded.deadline, etag = excluded.etag"
)
_CREATE: Final = _UPSERT + " WHERE kv.deadline <= ?3"  # if absent: only over an expired entry
_DELETE: Final = "DELETE FROM kv WHERE key = ? RETURNING deadline"
_POP: Final = "DELETE FROM kv WHERE key = ? RETURNING data, deadline"
_LEN: Final = "SELECT (SELECT n FROM kv_count) - (SELECT COUNT(*) FROM kv WHERE deadline <= ?)"
_KEYS: Final = f"SELECT key FROM kv WHERE key > ? AND {_FRESH} ORDER BY key LIMIT {PAGE}"
_FROM: Final = f"SELECT key FROM kv WHERE key >= ? AND {_FRESH} ORDER BY key LIMIT {PAGE}"
_STATS: Final = (
    f"SELECT key, length(data), written FROM kv WHERE key >= ? AND {_FRESH} ORDER BY key LIMIT {PAGE}"
)
_STAT: Final = "SELECT length(data), written, deadline FROM kv WHERE key = ?"
_PEEK: Final = "SELECT data, deadline, etag FROM kv WHERE key = ?"
_RENEW: Final = "UPDATE kv SET deadline = ? WHERE key = ? AND etag = ?"
_PURGE: Final = "DELETE FROM kv WHERE deadline <= ?"


class SqliteBackend(BaseBackend[V, bytes]):
    """Values in one SQLite file (made, with its folder, at the first call), a row per key.

    Its families: ``SqliteJsonBackend``, ``SqliteTextBackend``,
    ``SqliteRawBackend``. ``timeout``: seconds an entry lives after it is
    written (None: forever; per ``dump``, ``timeout=``), by ``clock``: with
    one, it is an expiring cache (``purge``, ``expires``, and a tier's
    ``peek``/``fill``/``renew``). ``busy_timeout``: seconds a writer waits
    for another process's write before StoreUnavailableError. ``durable``:
    every commit is synced to the disk (SQLite's ``synchronous=FULL``);
    without it a commit survives a killed process but a power cut may lose
    the last ones (``NORMAL``, as diskcache).
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
    ) -> None:
        self._check_codec()
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
            raise ValueError(f"busy_timeout is seconds, not {type(busy_timeout).__name__}")
        if not 0 <= busy_timeout <= 3600:
            raise ValueError(f"busy_timeout is seconds from 0 to 3600, not {busy_timeout!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.timeout = check_timeout(timeout)
        self.busy_timeout = float(busy_timeout)
        self.durable = bool(durable)
        if clock is not None:
            self.clock = clock
        self._connections = Connections(self.path, self.busy_timeout, self.durable)
        self._db = self._connections.get

    # -- deadlines ------------------------------------------------------------------------

    def _deadline(self, timeout: float | Missing | None, now: float) -> float | None:
        seconds = self.timeout if timeout is MISSING else check_timeout(timeout)
        return None if seconds is None else now + seconds

    def _live(self, deadline: float | None) -> bool:
        """Whether an entry with ``deadline`` is fresh (nothing is removed)."""
        return deadline is None or deadline > self.clock()

    def _fresh(self, key: str, deadline: float | None, db: sqlite3.Connection) -> bool:
        """Whether an entry with ``deadline`` is fresh; an expired one met here is removed."""
        if deadline is None:
            return True
        now = self.clock()
        if deadline > now:
            return True
        db.execute(_EXPIRE, (key, now))  # only while expired: never a fresh value written since
        return False

    # -- the store hooks ------------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        db = self._db()
        row = db.execute(_LOAD, (key,)).fetchone()
        if row is None or not self._fresh(key, row[1], db):
            return MISSING
        data: bytes = row[0]
        return data

    def _contains(self, key: str) -> bool:
        db = self._db()
        row = db.execute(_CONTAINS, (key,)).fetchone()
        return row is not None and self._fresh(key, row[0], db)

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        db, found = self._db(), {}
        for start in range(0, len(keys), PAGE):
            chunk = keys[start : start + PAGE]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT key, data, deadline FROM kv WHERE key IN ({marks})", chunk).fetchall()
            for key, data, deadline in rows:
                if self._fresh(key, deadline, db):
                    found[key] = data
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
            key, value, "dump", lambda key, data: self._write(key, data, if_absent, timeout)
        )

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._write(key, data, if_absent, MISSING)

    def _write(
        self, key: str, data: bytes, if_absent: bool, timeout: float | Missing | None, etag: str | None = None
    ) -> bool:
        now = self.clock()
        row = (key, data, now, self._deadline(timeout, now), etag)
        changed: int = self._db().execute(_CREATE if if_absent else _UPSERT, row).rowcount
        return changed == 1

    def _dump_many(self, items: list[tuple[str, bytes]]) -> None:
        now = self.clock()
        deadline = self._deadline(MISSING, now)
        with self._transaction() as db:
            db.executemany(_UPSERT, [(key, data, now, deadline, None) for key, data in items])

    def _delete(self, key: str) -> bool:
        row = self._db().execute(_DELETE, (key,)).fetchone()
        return row is not None and self._live(row[0])

    def _delete_many(self, keys: list[str]) -> int:
        removed = 0
        with self._transaction() as db:
            now = self.clock()
            for start in range(0, len(keys), PAGE):
                chunk = keys[start : start + PAGE]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"DELETE FROM kv WHERE key IN ({marks}) RETURNING deadline", chunk)
                removed += sum(1 for (deadline,) in rows.fetchall() if deadline is None or deadline > now)
        return removed

    def _pop(self, key: str) -> bytes | Missing:
        # One statement: of racing callers exactly one gets the value.
        row = self._db().execute(_POP, (key,)).fetchone()
        if row is None or not self._live(row[1]):
            return MISSING
        data: bytes = row[0]
        return data

    def _len(self) -> int:
        # A count kept by triggers, less the expired entries (an index range: none, usually).
        count: int = self._db().execute(_LEN, (self.clock(),)).fetchone()[0]
        return count

    def _iter_keys(self) -> Iterator[str]:
        # Sorted, a page per query: no read transaction stays open between pages.
        last = ""
        while page := self._db().execute(_KEYS, (last, self.clock())).fetchall():
            for (key,) in page:
                yield key
            if len(page) < PAGE:
                return
            last = page[-1][0]

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # In key order; a sub-folder is yielded once and the rest of it skipped with one query.
        low = prefix
        while page := self._db().execute(_FROM, (low, self.clock())).fetchall():
            for (key,) in page:
                if not key.startswith(prefix):
                    return
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
        self._db().execute("DELETE FROM kv")

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return SqliteLock(key, timeout, ttl, self._db, **self._lock_context())

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db())

    # -- expiry, stat -----------------------------------------------------------------------

    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """Remove every expired entry (one statement); return how many were removed."""
        with self._translating("purge", None):
            removed: int = self._db().execute(_PURGE, (self.clock(),)).rowcount
        return removed

    def expires(self, key: str) -> datetime | None:
        """When ``key`` expires (a UTC datetime, by the backend's clock); None: never; KeyError: absent."""
        key = self._check(key, "expires")
        with self._translating("expires", key):
            row = self._db().execute(_CONTAINS, (key,)).fetchone()
        if row is None or not self._live(row[0]):
            raise KeyError(key)
        return None if row[0] is None else utc(row[0])

    def stat(self, key: str) -> Stat | None:
        """Size and time written of ``key``; one query."""
        key = self._check(key, "stat")
        with self._translating("stat", key):
            row = self._db().execute(_STAT, (key,)).fetchone()
        if row is None or not self._live(row[2]):
            return None
        size, written, _ = row
        return Stat(key=key, size=size, last_modified=utc(written), content_type=self.codec.content_type)

    def stat_many(self, prefix: str = "") -> Iterator[Stat]:
        """The :class:`~backends.info.Stat` of every key below ``prefix``, sorted (a page per query)."""
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        low = prefix
        with self._translating("stat_many", None):
            while page := self._db().execute(_STATS, (low, self.clock())).fetchall():
                for key, size, written in page:
                    if not key.startswith(prefix):
                        return
                    yield Stat(key=key, size=size, last_modified=utc(written))
                if len(page) < PAGE:
                    return
                low = page[-1][0] + "\x00"

    # -- entries, for a tier (the ExpiringCache capability) -----------------------------------

    def peek(self, key: str) -> Entry[V] | None:
        """The entry of ``key``, expired or not, with its origin ETag (nothing is removed)."""
        key = self._check(key, "peek")
        with self._translating("peek", key):
            row = self._db().execute(_PEEK, (key,)).fetchone()
        if row is None:
            return None
        data, deadline, etag = row
        return self._entry(data, key, deadline, self._live(deadline), etag)

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``."""
        self._write_value(key, value, "fill", lambda key, data: self._write(key, data, False, MISSING, etag))

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value filled with ``etag``."""
        key = self._check(key, "renew")
        with self._translating("renew", key):
            deadline = self._deadline(MISSING, self.clock())
            changed: int = self._db().execute(_RENEW, (deadline, key, etag)).rowcount
        return changed == 1

    # -- errors, identity, lifetime ---------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if self.closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        text = str(exc)
        if isinstance(exc, PermissionError) or "readonly database" in text:
            return PermissionDeniedError, f"no permission to write {self.path!r}"
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return (
                StoreUnavailableError,
                f"the database stayed locked by another writer for busy_timeout={self.busy_timeout:g} s",
            )
        if "file is not a database" in text:
            return StoreError, f"{self.path!r} is not an SQLite database"
        return StoreError, f"SQLite: {text}" if isinstance(exc, sqlite3.Error) else text

    def _describe(self) -> str:
        parts = [repr(self.path)]
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout:g}")
        return ", ".join(parts)

    def _identity(self) -> tuple[object, ...]:
        return (self.path, type(self.codec))

    @property
    def closed(self) -> bool:
        return self._connections.closed

    def close(self) -> None:
        """Close every thread's connection; every later call raises StoreError."""
        self._connections.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Connections do not cross processes: a copy opens its own.
        settings: dict[str, Any] = {
            "timeout": self.timeout,
            "busy_timeout": self.busy_timeout,
            "durable": self.durable,
        }
        if "clock" in vars(self):
            settings["clock"] = self.clock
        return (_rebuild, (type(self), self.path, settings))


class _Transaction:
    """``with``: BEGIN IMMEDIATE (the write lock at once), COMMIT, or ROLLBACK on an error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _after(prefix: str) -> str:
    """The first string past every string that starts with ``prefix`` (its last character moved up)."""
    while prefix and prefix[-1] == "\U0010ffff":
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


def _rebuild(cls: type[SqliteBackend[Any]], path: str, settings: dict[str, Any]) -> SqliteBackend[Any]:
    return cls(path, **settings)
