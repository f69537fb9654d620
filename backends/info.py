"""What a store knows besides values (:class:`Stat`), and the capabilities some stores have.

A capability is a small :class:`typing.Protocol`: code that needs one (the
``backends`` command among it) checks ``isinstance(backend, SupportsStat)``
and calls it, never probes with ``getattr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["Stat", "SupportsExpiry", "SupportsStat", "SupportsUrl"]


@dataclass(frozen=True)
class Stat:
    """Size, date and object metadata of one key.

    Fields a store cannot tell without another request are None: a listing
    (``stat_many``) gives no content type and no user metadata.
    """

    key: str
    size: int
    last_modified: datetime | None = None
    etag: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    storage_class: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] | None = field(default=None, hash=False)


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

    def expires(self, key: str) -> float | None: ...
