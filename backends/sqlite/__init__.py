"""The SQLite store: stdlib ``sqlite3``, one file, safe across threads and processes.

``sqlite:///var/data/kv.db?format=json|text|raw&timeout=300&maxbytes=1000000`` opens it by URL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..bounds import as_bound
from ..schemes import as_bool, as_seconds_or_none, local_path, parse_query, register_scheme
from .families import SqliteJsonBackend, SqliteRawBackend, SqliteTextBackend
from .store import SqliteBackend

__all__ = ["SqliteBackend", "SqliteJsonBackend", "SqliteRawBackend", "SqliteTextBackend"]

_OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "timeout": as_seconds_or_none,
    "busy_timeout": float,
    "durable": as_bool,
    "maxbytes": as_bound,
    "maxsize": as_bound,
}


def _open_url(url: str, options: dict[str, Any]) -> SqliteBackend[Any]:
    """``sqlite:///path/to/kv.db?format=json|text|raw&timeout=300&busy_timeout=5&durable=true&maxbytes=N&maxsize=N``."""
    fmt, kwargs = parse_query(url, _OPTIONS, options)
    families: dict[str, type[SqliteBackend[Any]]] = {
        "json": SqliteJsonBackend,
        "text": SqliteTextBackend,
        "raw": SqliteRawBackend,
    }
    return families[fmt](local_path(url), **kwargs)


register_scheme("sqlite", _open_url)
