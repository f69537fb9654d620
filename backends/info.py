"""What a store knows besides values (:class:`Stat`), and the capabilities some stores have.

A capability is a small :class:`typing.Protocol`: code that needs one (the
``backends`` command among it) checks ``isinstance(backend, SupportsStat)``
and calls it, never probes with ``getattr``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol, overload, runtime_checkable

__all__ = [
    "Stat",
    "SupportsExpiry",
    "SupportsStat",
    "SupportsStatMany",
    "SupportsStrays",
    "SupportsUrl",
    "utc",
]


@overload
def utc(when: None) -> None: ...
@overload
def utc(when: datetime | float) -> datetime: ...
def utc(when: datetime | float | None) -> datetime | None:
    """``when`` (a datetime, or seconds since the epoch) as an aware UTC datetime: the one time type."""
    if when is None:
        return None
    if isinstance(when, datetime):
        return when.astimezone(timezone.utc)
    return datetime.fromtimestamp(when, timezone.utc)


@dataclass(frozen=True)
class Stat:
    """Size, date and object metadata of one key.

    Fields a store cannot tell without another request are None: a listing
    (``stat_many``) gives no content type and no user metadata.
    """

    key: str
    #: the value's own size in bytes (a gzipped S3 object: uncompressed)
    size: int
    #: when it is a timezone-aware UTC datetime, everywhere
    last_modified: datetime | None = None
    etag: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    storage_class: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] | None = field(default=None, hash=False)
    #: the bytes in the store, where they differ from ``size`` (a gzipped S3 object)
    stored_size: int | None = None
    #: the MD5 of the value, where the store keeps it apart from the ETag (a gzipped S3 object)
    md5: str | None = None


@runtime_checkable
class SupportsStat(Protocol):
    """``stat(key)``: the :class:`Stat` of a key, or None if absent (folders, caches, S3, tiers)."""

    def stat(self, key: str) -> Stat | None: ...


@runtime_checkable
class SupportsUrl(Protocol):
    """``url(key, expires=None)``: where the value can be read (``file://``, ``https://``, presigned)."""

    def url(self, key: str, expires: float | None = None) -> str: ...


@runtime_checkable
class SupportsExpiry(Protocol):
    """Entries that expire: ``purge()`` removes the expired ones, ``expires(key)`` tells when one does."""

    def purge(self) -> int: ...

    def expires(self, key: str) -> datetime | None: ...


@runtime_checkable
class SupportsStatMany(Protocol):
    """``stat_many(prefix="")``: the :class:`Stat` of every key below ``prefix``, sorted (S3: LIST pages)."""

    def stat_many(self, prefix: str = "") -> Iterator[Stat]: ...


@runtime_checkable
class SupportsStrays(Protocol):
    """``strays(prefix="")``: what a folder holds that is not a key (path, reason): reported, not dropped."""

    def strays(self, prefix: str = "") -> Iterator[tuple[str, str]]: ...
