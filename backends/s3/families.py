"""S3JsonBackend and S3TextBackend: the S3 store with a codec."""

from __future__ import annotations

from typing import Any

from ..codecs import Codec, JsonCodec, TextCodec
from .store import S3Backend

__all__ = ["S3JsonBackend", "S3TextBackend"]


class S3JsonBackend(S3Backend[Any]):
    """JSON values (strict), stored as compact UTF-8 with Content-Type application/json."""

    def _default_codec(self) -> Codec[Any, bytes]:
        return JsonCodec()


class S3TextBackend(S3Backend[str]):
    """``str`` values, stored byte-exact as UTF-8 (text/plain; charset=utf-8)."""

    def _default_codec(self) -> Codec[str, bytes]:
        return TextCodec()
