"""SqliteJsonBackend, SqliteTextBackend, SqliteRawBackend: the SQLite store with a codec."""

from __future__ import annotations

from typing import Any

from ..codecs import JsonCodec, RawCodec, TextCodec
from .store import SqliteBackend

__all__ = ["SqliteJsonBackend", "SqliteRawBackend", "SqliteTextBackend"]


class SqliteJsonBackend(SqliteBackend[Any]):
    """JSON values (strict), stored as compact UTF-8."""

    codec = JsonCodec()


class SqliteTextBackend(SqliteBackend[str]):
    """``str`` values, stored byte-exact as UTF-8."""

    codec = TextCodec()


class SqliteRawBackend(SqliteBackend[bytes]):
    """``bytes`` values, stored as they are."""

    codec = RawCodec()
