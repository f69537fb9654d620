"""What each entry of a folder of keys is, and what a layout says to tell it.

A walk (:mod:`.walks`) or a listing (:mod:`.listing`) classifies every entry
once, the same way for clearing, listing and reporting: a key's file
(:class:`KeyFile`), a folder to descend (:class:`SubFolder`), this library's
own file (None), or a :class:`Stray`. How a name maps to a key is the
layout's (:class:`Naming`, implemented by the two layouts of :mod:`.tree`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple, TypeAlias

__all__ = ["Keep", "KeyFile", "Kind", "Naming", "Stray", "Strays", "SubFolder"]


class Stray(NamedTuple):
    """A thing in the folder that is not a key: its path below the root, and why."""

    path: str
    reason: str


#: called with each stray a walk meets
Strays = Callable[[Stray], None]
#: whether a key's file counts (a cache: not expired), given its folder and name
Keep = Callable[[int, str], bool]


class SubFolder(NamedTuple):
    """A folder of keys met by a walk: its name, the start of its keys, a cut segment's escaped text."""

    name: str
    prefix: str  # the keys below start with this
    pending: str  # escaped text of a segment cut into pieces (escaped layout)


class KeyFile(NamedTuple):
    """A key's file met by a walk: its name and its key."""

    name: str
    key: str


#: what an entry is: a folder of keys, a key's file, a stray, or None (this library's own)
Kind: TypeAlias = SubFolder | KeyFile | Stray | None


class Naming:
    """How keys map to names in a folder: what a layout implements (the walks and listings build on it)."""

    name = ""

    def parts(self, key: str) -> tuple[tuple[str, ...], str]:
        """The folder names and the file name of a valid key, relative to the root."""
        raise NotImplementedError

    def problem(self, key: str) -> str | None:
        """Why this layout cannot hold the valid ``key``, or None if it can."""
        return None

    def classify(self, entry: os.DirEntry[str], prefix: str, pending: str) -> Kind:
        """What an entry is: a folder of keys, a key's file, a stray, or None (our own file)."""
        raise NotImplementedError

    def file_key(self, name: str, prefix: str, pending: str) -> str | None:
        """The key stored in the regular file ``name`` (not a ``~`` name), or None."""
        raise NotImplementedError

    def file_keys(self, names: list[str], prefix: str, pending: str) -> list[str] | None:
        """The keys stored in the regular files ``names`` if every one holds a key, else None."""
        raise NotImplementedError

    def file_kind(self, name: str, prefix: str, pending: str) -> KeyFile | Stray | None:
        """What the regular file ``name`` is: a key's file, a stray, or None (our own file)."""
        raise NotImplementedError

    #: why a regular file is not a key's
    not_a_key = ""

    def __repr__(self) -> str:
        return f"<{self.name} layout>"
