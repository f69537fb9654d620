"""Stat: what a store knows about one stored value, besides the value."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Stat"]


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
