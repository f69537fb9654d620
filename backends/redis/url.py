"""The ``redis://``, ``rediss://`` and ``unix://`` schemes, registered with :mod:`backends.urls`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from ..schemes import as_seconds_or_none, parse_query, register_scheme
from .client import check_redis_url
from .families import RedisJsonBackend, RedisRawBackend, RedisTextBackend
from .store import RedisBackend

__all__ = ["OPTIONS"]

#: the query parameters a Redis URL takes for the backend (the rest go to redis-py)
OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "prefix": str,
    "timeout": as_seconds_or_none,
    "keep_expired": float,
    "max_connections": int,
    "socket_timeout": float,
    "retries": int,
}


def _open_url(url: str, options: dict[str, Any]) -> RedisBackend[Any]:
    """``redis://host:port/db?prefix=app&format=json|text|raw`` (also ``rediss://``, ``unix://``)."""
    check_redis_url(url, extra=None)  # parse_query names the unknown options, with the known ones
    parts = urlsplit(url)
    if parts.username:
        raise ValueError(
            "a user name does not go in a Redis URL: pass username= (and password=) to the backend"
        )
    fmt, kwargs = parse_query(url, OPTIONS, options)
    families: dict[str, type[RedisBackend[Any]]] = {
        "json": RedisJsonBackend,
        "text": RedisTextBackend,
        "raw": RedisRawBackend,
    }
    return families[fmt](urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), **kwargs)


for _scheme in ("redis", "rediss", "unix"):
    register_scheme(_scheme, _open_url)
