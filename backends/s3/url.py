"""The ``s3://bucket/prefix`` URL scheme, registered with :mod:`backends.urls`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from ..urls import as_bool, parse_query, register_scheme
from .families import S3JsonBackend, S3TextBackend
from .raw import S3RawBackend
from .store import S3Backend

__all__ = ["OPTIONS"]

#: the query parameters an s3:// URL takes, with their types
OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "region": str,
    "endpoint_url": str,
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
