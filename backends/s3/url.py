"""The ``s3://bucket/prefix`` URL scheme, registered with :mod:`backends.urls`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from ..schemes import OptionError, as_bool, parse_query, register_scheme
from .families import S3JsonBackend, S3TextBackend
from .raw import S3RawBackend
from .store import S3Backend

__all__ = ["OPTIONS", "as_endpoint"]


def as_endpoint(text: str) -> str:
    """``endpoint_url``: an http(s) URL with a host and a port; else OptionError (never repeating it)."""
    if re.search(r"[\x00-\x20\x7f]", text):
        raise OptionError("endpoint_url holds no space or control character")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise OptionError("endpoint_url's port is a whole number from 1 to 65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise OptionError(
            "endpoint_url is an http:// or https:// URL with a host, like http://127.0.0.1:9000"
        )
    return text


#: the query parameters an s3:// URL takes, with their types
OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "region": str,
    "endpoint_url": as_endpoint,
    "profile": str,
    "create_bucket": as_bool,
    "acl": str,
    "storage_class": str,
    "cache_control": str,
    "content_type": str,
    "retries": int,
    "max_workers": int,
    "timeout": float,
    "addressing_style": str,
    "engine": str,
}


def _open_url(url: str, options: dict[str, Any]) -> S3Backend[Any]:
    """``s3://bucket/prefix?format=json|text|raw`` and the backend's options."""
    fmt, kwargs = parse_query(url, OPTIONS, options)
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("an S3 URL names a bucket: s3://bucket or s3://bucket/prefix")
    if parts.port is not None:
        raise ValueError("an S3 URL names a bucket, not a host:port; give the server as ?endpoint_url=")
    families: dict[str, type[S3Backend[Any]]] = {
        "json": S3JsonBackend,
        "text": S3TextBackend,
        "raw": S3RawBackend,
    }
    return families[fmt](parts.netloc, prefix=unquote(parts.path).strip("/"), **kwargs)


register_scheme("s3", _open_url)
