"""RedisJsonBackend, RedisTextBackend, RedisRawBackend: the Redis store with a codec."""

from __future__ import annotations

from typing import Any

from ..codecs import JsonCodec, RawCodec, TextCodec
from .store import RedisBackend

__all__ = ["RedisJsonBackend", "RedisRawBackend", "RedisTextBackend"]


class RedisJsonBackend(RedisBackend[Any]):
    """JSON values (strict), stored as compact UTF-8."""

    codec = JsonCodec()


class RedisTextBackend(RedisBackend[str]):
    """``str`` values, stored byte-exact as UTF-8."""

    codec = TextCodec()


class RedisRawBackend(RedisBackend[bytes]):
    """``bytes`` values, stored as they are."""

    codec = RawCodec()
