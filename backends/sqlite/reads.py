"""The reads of a SQLite store: one SELECT each, on the thread's connection, never a write.

They never wait for a writer (the write-ahead log), work on a file they may
not write, and make nothing: no file, no table (:meth:`Connections.reader`
is None until the first write). A bounded store's hits are told to the
bound (:meth:`SqliteReads._used`: no I/O here).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..cache import CountedLookups, Entry
from ..info import Stat, utc
from ..keys import all_valid, key_problem
from .bound import Bound
from .paths import encodable
from .schema import Connection

__all__ = ["PAGE", "SqliteReads"]

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
_LIVE: Final = "deadline IS NULL OR deadline > ?2"
_SIZE: Final = "CASE typeof(data) WHEN 'blob' THEN length(data) ELSE length(CAST(data AS BLOB)) END"
# kv_count's row deleted by another program: the rows counted (a bounded write rebuilds it)
_LEN: Final = (
    "SELECT COALESCE((SELECT n FROM kv_count), (SELECT COUNT(*) FROM kv))"
    " - (SELECT COUNT(*) FROM kv WHERE deadline <= ?)"
)
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


class SqliteReads(CountedLookups, BaseBackend[V, bytes]):
    """The reading half of :class:`~backends.sqlite.store.SqliteBackend`: loads, listings, stat, peek."""

    #: this thread's connection, None while the file or our tables do not exist
    _reader: Callable[[], Connection | None]
    #: the size bound, None for an unbounded store
    _bound: Bound | None
    #: a store with a timeout is a cache: its loads count hits and misses
    _counted: bool

    def _used(self, key: str) -> None:
        """A hit of a bounded store (the store records it)."""
        raise NotImplementedError

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

    def _len(self) -> int:
        # A count kept by triggers, less the expired entries (an index range: none, usually).
        db = self._reader()
        count: int = 0 if db is None else db.execute(_LEN, (self.clock(),)).fetchone()[0]
        return count

    def _iter_keys(self) -> Iterator[str]:
        # Sorted, a page per query: no read transaction stays open between pages.
        last = ""
        while (db := self._reader()) is not None and (
            page := _page(db, _KEYS, (_bound_text(last), self.clock()))
        ):
            keys = [key for (key,) in page]
            yield from keys if all_valid(keys, self._max_key_bytes) else filter(self._is_key, keys)
            if len(page) < PAGE:
                return
            last = page[-1][0]

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # In key order; a sub-folder is yielded once and the rest of it skipped with one query.
        low: str | None = prefix if encodable(prefix) else None  # a lone surrogate starts no key
        while low is not None and (db := self._reader()) is not None:
            page = _page(db, _FROM, (_bound_text(low), self.clock()))
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
            while encodable(prefix) and (db := self._reader()) is not None:
                page = _page(db, _STATS, (_bound_text(low), self.clock()))
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
        while encodable(prefix) and (db := self._reader()) is not None:
            page = _page(db, _ROWS, (_bound_text(low),))
            for (key,) in page:
                if not key.startswith(prefix):
                    return
                problem = key_problem(key, self._max_key_bytes)
                if problem is not None:
                    yield key, f"not a key: {problem if encodable(key) else 'not UTF-8 text'}"
            if len(page) < PAGE:
                return
            low = page[-1][0] + "\x00"

    def _is_key(self, key: str) -> bool:
        return key_problem(key, self._max_key_bytes) is None

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


def _bound_text(text: str) -> bytes:
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


def _after(prefix: str) -> str | None:
    """The first string past every string that starts with ``prefix``; None if there is none.

    Its last character moved up by one, skipping the surrogates (no key holds one).
    """
    prefix = prefix.rstrip("\U0010ffff")
    if not prefix:
        return None  # "\U0010ffff..." is the end of the code points
    following = ord(prefix[-1]) + 1
    return prefix[:-1] + chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)
