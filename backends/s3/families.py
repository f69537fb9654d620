"""S3JsonBackend and S3TextBackend: the S3 store with a codec."""

from __future__ import annotations

from typing import Any

from ..codecs import JsonCodec, TextCodec
from .store import S3Backend

__all__ = ["S3JsonBackend", "S3TextBackend"]


class S3JsonBackend(S3Backend[Any]):
    """JSON values (strict), stored as compact UTF-8 with Content-Type application/json."""

    codec = JsonCodec()


class S3TextBackend(S3Backend[str]):
    """``str`` values, stored byte-exact as UTF-8 (text/plain; charset=utf-8)."""

    codec = TextCodec()
