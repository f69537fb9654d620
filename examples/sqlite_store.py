"""A third-party store written only against the documented extension API: one SQLite table.

README.rst, "Writing a backend", walks through it. What it writes: a
``codec`` per family, the four required hooks, the optional ones SQLite does
better than the defaults, one error table, and its URL scheme. Everything
else (key validation, encoding, the dict API, bulk calls, listings, typed
errors, pickling checks) comes from :class:`backends.BaseBackend`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

from backends import BaseBackend, JsonCodec, StoreError, StoreUnavailableError, TextCodec
from backends.base import MISSING, Missing
from backends.errors import BackendError
from backends.urls import local_path, parse_query, register_scheme

V = TypeVar("V")

#: keys per query of a listing: memory stays flat however many keys there are
PAGE = 1000


class SqliteBackend(BaseBackend[V, bytes]):
    """Values in one SQLite file (made, with its folder, at the first call), one row per key.

    Safe across threads (a connection per thread) and processes (SQLite's
    own locking; a writer that waits longer than ``timeout`` seconds raises
    StoreUnavailableError).
    """

    _native_errors = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self._check_codec()
        self.path = os.path.abspath(os.fspath(path))
        self.timeout = timeout
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise sqlite3.ProgrammingError("closed")
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID"
            )
            with self._lock:
                self._opened.append(db)
            self._local.db = db
        return db

    # -- the required hooks --------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        row = self._db().execute("SELECT data FROM kv WHERE key = ?", (key,)).fetchone()
        return MISSING if row is None else bytes(row[0])

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        verb = "INSERT OR IGNORE" if if_absent else "INSERT OR REPLACE"
        return self._db().execute(f"{verb} INTO kv VALUES (?, ?)", (key, data)).rowcount == 1

    def _delete(self, key: str) -> bool:
        return self._db().execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 1

    def _iter_keys(self) -> Iterator[str]:
        last = ""
        while True:
            page = (
                self._db()
                .execute("SELECT key FROM kv WHERE key > ? ORDER BY key LIMIT ?", (last, PAGE))
                .fetchall()
            )
            yield from (row[0] for row in page)
            if len(page) < PAGE:
                return
            last = page[-1][0]

    # -- optional hooks: what SQLite does in one statement ------------------------------

    def _contains(self, key: str) -> bool:
        return self._db().execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None

    def _len(self) -> int:
        count: int = self._db().execute("SELECT COUNT(*) FROM kv").fetchone()[0]
        return count

    def _pop(self, key: str) -> bytes | Missing:
        # One statement: of racing callers exactly one gets the value.
        row = self._db().execute("DELETE FROM kv WHERE key = ? RETURNING data", (key,)).fetchone()
        return MISSING if row is None else bytes(row[0])

    def _clear(self) -> None:
        self._db().execute("DELETE FROM kv")

    # -- errors, identity, lifetime ---------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if self._closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return StoreUnavailableError, f"the database stayed locked for {self.timeout:g} s"
        return StoreError, str(exc)

    def _describe(self) -> str:
        return repr(self.path)

    def _identity(self) -> tuple[object, ...]:
        return (self.path, type(self.codec))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
        for db in opened:
            db.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Connections do not cross processes: a copy opens its own.
        return (type(self), (self.path,), {"timeout": self.timeout})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.timeout = state["timeout"]


class SqliteJsonBackend(SqliteBackend[Any]):
    """JSON values in SQLite."""

    codec = JsonCodec()


class SqliteTextBackend(SqliteBackend[str]):
    """``str`` values in SQLite."""

    codec = TextCodec()


def _open_url(url: str, options: dict[str, Any]) -> SqliteBackend[Any]:
    """``sqlite:///path/to/file.db?format=json|text&timeout=5``."""
    fmt, kwargs = parse_query(url, {"timeout": float}, options)
    if fmt == "raw":
        raise ValueError("this example keeps json or text values")
    return (SqliteJsonBackend if fmt == "json" else SqliteTextBackend)(local_path(url), **kwargs)


register_scheme("sqlite", _open_url)
