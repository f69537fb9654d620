"""The optional calls of a view (:mod:`backends.views`), each the view's when its base has it.

Each set is a class on :class:`~backends.viewbase.ViewBase` alone, which
:func:`backends.views.view_class` puts before :class:`~backends.views.View`
in the class of a view of a base that has the calls.

``stat``, ``stat_many``, ``url``, ``strays``, expiry, the entries a tier
fills, a folder's ``path`` and ``open``, S3's server-side copies and ACLs,
and ``stats``: each passes the view's keys below its prefix to the base's
own call, names the key back as the view does, and (a write) is refused by
a read-only view before any I/O. Streaming (``dump_file``, ``load_file``)
comes with :class:`~backends.transfers.FileTransfers` for a raw base.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

from .cache import Entry
from .events import observed
from .info import Stat
from .transfers import FileTransfers, PathOrFile
from .viewbase import ViewBase

__all__ = ["PARTS", "FilesView"]

V = TypeVar("V")


class _StatView(ViewBase[V]):
    def stat(self, key: str) -> Stat | None:
        """The base's :class:`~backends.info.Stat` of the key, naming the key as this view does."""
        key = self._check(key, "stat")
        with self._renamed():
            found: Stat | None = self._live("stat", key).stat(self._full(key))  # type: ignore[attr-defined]
        return None if found is None else dataclasses.replace(found, key=key)


class _StatManyView(ViewBase[V]):
    def stat_many(self, prefix: str = "") -> Iterator[Stat]:
        """The base's ``stat_many`` of the keys of this view below ``prefix``."""
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        with self._renamed():
            for found in self._live("stat_many").stat_many(self.prefix + prefix):  # type: ignore[attr-defined]
                yield dataclasses.replace(found, key=found.key[self._cut :])


class _UrlView(ViewBase[V]):
    def url(self, key: str, expires: float | None = None) -> str:
        """The base's URL of the key."""
        key = self._check(key, "url")
        with self._renamed():
            return str(self._live("url", key).url(self._full(key), expires))  # type: ignore[attr-defined]


class _StraysView(ViewBase[V]):
    def strays(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """What the base holds below this view's ``prefix`` that is no key: ``(path, reason)``, the path
        as this view names it."""
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        with self._renamed():
            for path, reason in self._live("strays").strays(self.prefix + prefix):  # type: ignore[attr-defined]
                yield str(self._outer(path)), reason


class _ExpiryView(ViewBase[V]):
    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """The base's ``purge()``: its expired entries, which no view of it can see, are removed
        (all of them: the count is the base's). Refused by a read-only view."""
        self._writable("purge")
        with self._renamed():
            return int(self._live("purge").purge())  # type: ignore[attr-defined]

    def expires(self, key: str) -> datetime | None:
        """When the entry of the key expires (None: never); KeyError if absent."""
        key = self._check(key, "expires")
        try:
            with self._renamed():
                when: datetime | None = self._live("expires", key).expires(self._full(key))  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(key) from None
        return when


class _EntriesView(ViewBase[V]):
    def peek(self, key: str) -> Entry[V] | None:
        """The base's entry of the key, expired or not (for a tier)."""
        key = self._check(key, "peek")
        with self._renamed():
            return self._live("peek", key).peek(self._full(key))  # type: ignore[attr-defined, no-any-return]

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """The base's ``fill`` of the key (for a tier); refused by a read-only view."""
        self._writable("fill", key)
        key = self._check(key, "fill")
        with self._renamed():
            self._live("fill", key).fill(self._full(key), value, etag=etag)  # type: ignore[attr-defined]

    def renew(self, key: str, etag: str) -> bool:
        """The base's ``renew`` of the key (for a tier); refused by a read-only view."""
        self._writable("renew", key)
        key = self._check(key, "renew")
        with self._renamed():
            return bool(self._live("renew", key).renew(self._full(key), etag))  # type: ignore[attr-defined]


class FilesView(ViewBase[bytes], FileTransfers):
    """A view of a raw store that streams: ``dump_file`` and ``load_file`` through the base's."""

    def dump_file(self, key: str, source: PathOrFile, *, if_absent: bool = False) -> bool:
        """Store a file's contents under the key, streamed (refused by a read-only view)."""
        self._writable("dump_file", key)
        return super().dump_file(key, source, if_absent=if_absent)

    def _dump_stream(self, key: str, source: PathOrFile, if_absent: bool) -> bool:
        with self._renamed():
            base = self._live("dump_file", key)
            return base.dump_file(self._full(key), source, if_absent=if_absent)  # type: ignore[attr-defined, no-any-return]

    def _load_stream(self, key: str, target: PathOrFile) -> bool:
        with self._renamed():
            return self._live("load_file", key).load_file(self._full(key), target)  # type: ignore[attr-defined, no-any-return]


class _PathView(ViewBase[V]):
    def path(self, key: str) -> Path:
        """The path of the base's file of the key (which may not exist)."""
        key = self._check(key, "path")
        with self._renamed():
            return self._live("path", key).path(self._full(key))  # type: ignore[attr-defined, no-any-return]


class _OpenView(ViewBase[V]):
    def open(self, key: str) -> BinaryIO:
        """The value of the key as a binary file open for reading; KeyError if absent."""
        key = self._check(key, "open")
        try:
            with self._renamed():
                return self._live("open", key).open(self._full(key))  # type: ignore[attr-defined, no-any-return]
        except KeyError:
            raise KeyError(key) from None


class _CopyView(ViewBase[V]):
    def copy(self, source: str, target: str) -> bool:
        """The base's server-side copy, both keys in this view; False if ``source`` is absent."""
        self._writable("copy", source)
        source, target = self._check(source, "copy"), self._check(target, "copy")
        with self._renamed():
            return bool(self._live("copy", source).copy(self._full(source), self._full(target)))  # type: ignore[attr-defined]

    def move(self, source: str, target: str) -> bool:
        """The base's server-side move, both keys in this view; False if ``source`` is absent."""
        self._writable("move", source)
        source, target = self._check(source, "move"), self._check(target, "move")
        with self._renamed():
            return bool(self._live("move", source).move(self._full(source), self._full(target)))  # type: ignore[attr-defined]


class _AclView(ViewBase[V]):
    def make_public(self, key: str) -> bool:
        """The base's ``make_public`` of the key (refused by a read-only view)."""
        self._writable("make_public", key)
        key = self._check(key, "make_public")
        with self._renamed():
            return bool(self._live("make_public", key).make_public(self._full(key)))  # type: ignore[attr-defined]

    def make_private(self, key: str) -> bool:
        """The base's ``make_private`` of the key (refused by a read-only view)."""
        self._writable("make_private", key)
        key = self._check(key, "make_private")
        with self._renamed():
            return bool(self._live("make_private", key).make_private(self._full(key)))  # type: ignore[attr-defined]


class _StatsView(ViewBase[V]):
    @property
    def stats(self) -> Any:
        """The base's counts (a cache's hits and misses, a tier's): the whole store's, not this view's."""
        return self.base.stats  # type: ignore[attr-defined]


#: each optional call set, and the names a base must have for its view to have it
PARTS: Final[tuple[tuple[type[ViewBase[Any]], tuple[str, ...]], ...]] = (
    (_StatView, ("stat",)),
    (_StatManyView, ("stat_many",)),
    (_UrlView, ("url",)),
    (_StraysView, ("strays",)),
    (_ExpiryView, ("purge", "expires")),
    (_EntriesView, ("peek", "fill", "renew")),
    (_PathView, ("path",)),
    (_OpenView, ("open",)),
    (_CopyView, ("copy", "move")),
    (_AclView, ("make_public", "make_private")),
    (_StatsView, ("stats",)),
)
