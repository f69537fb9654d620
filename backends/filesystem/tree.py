"""The two layouts of keys in a folder, and the names that are this library's own.

- :data:`ESCAPED` (:mod:`.layout`): every valid key fits; folders carry a
  ``+``, names are percent-escaped. A folder this library creates uses it
  and records it in a :data:`MARKER` file.
- :data:`PLAIN`: key ``a/b`` is the file ``root/a/b``, an ordinary tree (a
  website, a build). It cannot hold a key and a folder of the same name
  (``a`` and ``a/b``), nor a segment of over 255 bytes or starting with ``~``.

Every entry of a folder is classified once, the same way for clearing,
listing and reporting (:mod:`.naming`): a key's file, a folder to descend,
this library's own file (temporary files, locks, the marker: :func:`is_own`),
or a *stray* (anything else, reported by the walk's ``strays`` callback,
never dropped silently). Each layout is a :class:`~.listing.Layout`: the
walks (:mod:`.walks`) and the sorted listings (:mod:`.listing`) over its naming.
"""

from __future__ import annotations

import os
import re
from typing import Final

from ..keys import MAX_KEY_BYTES, all_valid, is_valid_key
from .bound import BOUND_FILE
from .layout import (
    CHUNK,
    DIR_MARK,
    PART_MARK,
    TEMP_MARK,
    decode_segment,
    is_temp,
    key_of,
    key_parts,
    piece_ok,
)
from .listing import Layout
from .lock import LOCK_FOLDER
from .naming import KeyFile, Kind, Stray, SubFolder

__all__ = ["ESCAPED", "LAYOUTS", "MARKER", "PLAIN", "is_own"]

#: the file recording that a folder uses the escaped layout (a reserved name: never a key)
MARKER: Final = f"{TEMP_MARK}backends-layout"
NAME_MAX: Final = 255  # bytes in one file name (ext4, APFS, XFS...)
#: a name made only of characters the escaped layout keeps as they are: the name of itself
_plain_name = re.compile(rf"[A-Za-z0-9._-]{{1,{CHUNK}}}").fullmatch
#: names of that kind joined by "/" (lengths checked apart)
_plain_names = re.compile(r"[A-Za-z0-9._/-]*").fullmatch


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "a symlink (never followed)"
    if entry.is_dir(follow_symlinks=False):
        return "a folder"
    if entry.is_file(follow_symlinks=False):
        return "a file"
    return "not a file (a FIFO, socket or device)"


def is_own(name: str, top: bool = True, folder: bool = False) -> bool:
    """Whether the file (or with ``folder``, the folder) ``name`` is one this library made.

    Exactly: a temporary file (:func:`.layout.is_temp`: ``~backends-`` and 32
    hex digits, ``.tmp``) anywhere, and at the root (``top``) the layout
    marker file, a bounded cache's tally file and the lock folder. Any other name, ``~notes.tmp`` or
    ``~WRL0001.tmp`` included, is a user's: a key or a stray, never hidden.
    """
    if folder:
        return top and name == LOCK_FOLDER
    return is_temp(name) or (top and name in (MARKER, BOUND_FILE))


class _Named(Layout):
    """What the two layouts share: the ``~`` names that are this library's own."""

    def file_kind(self, name: str, prefix: str, pending: str) -> KeyFile | Stray | None:
        """What the regular file ``name`` is: a key's file, a stray, or None (our own file)."""
        if name.startswith(TEMP_MARK):
            return None if is_own(name, not prefix and not pending) else Stray(name, _RESERVED)
        key = self.file_key(name, prefix, pending)
        return Stray(name, self.not_a_key) if key is None else KeyFile(name, key)


#: why a "~" name that is not this library's own is a stray
_RESERVED = "a name starting with '~' (reserved in a folder of keys) that this library did not make"


def _tilde_entry(entry: os.DirEntry[str], prefix: str, pending: str) -> Stray | None:
    """A ``~`` entry: None if this library made it (:func:`is_own`), else a stray."""
    top = not prefix and not pending
    if entry.is_dir(follow_symlinks=False):
        return None if is_own(entry.name, top, folder=True) else Stray(entry.name, _RESERVED)
    if entry.is_file(follow_symlinks=False) and is_own(entry.name, top):
        return None
    return Stray(entry.name, _RESERVED if entry.is_file(follow_symlinks=False) else _kind(entry))


class _Escaped(_Named):
    name = "escaped"

    def parts(self, key: str) -> tuple[tuple[str, ...], str]:
        return key_parts(key)

    def file_key(self, name: str, prefix: str, pending: str) -> str | None:
        if not pending and _plain_name(name):
            # The common case: a name that escapes to itself (scandir never gives "." or "..").
            key = prefix + name
            return key if len(key) <= MAX_KEY_BYTES // 4 or len(key.encode()) <= MAX_KEY_BYTES else None
        return key_of(prefix, pending, name)

    not_a_key = "a file whose name is not the escaped form of a key"

    def file_keys(self, names: list[str], prefix: str, pending: str) -> list[str] | None:
        # One match over the names joined by "/" (never in a name) tells that
        # each escapes to itself, as file_key's common case does name by name.
        if pending or not _plain_names("/".join(names)):
            return None
        longest = max(map(len, names), default=0)
        if longest > CHUNK or len(prefix.encode()) + longest > MAX_KEY_BYTES:
            return None
        return [prefix + name for name in names] if prefix else names

    def classify(self, entry: os.DirEntry[str], prefix: str, pending: str) -> Kind:
        name = entry.name
        if name.startswith(TEMP_MARK):
            return _tilde_entry(entry, prefix, pending)
        mark = name[-1]
        if mark in (DIR_MARK, PART_MARK) and entry.is_dir(follow_symlinks=False):
            piece = name[:-1]
            if mark == PART_MARK:
                if piece_ok(piece, full=True):
                    return SubFolder(name, prefix, pending + piece)
            elif (
                segment := decode_segment(pending + piece) if piece_ok(piece, full=False) else None
            ) is not None:
                return SubFolder(name, f"{prefix}{segment}/", "")
            return Stray(name, "a folder whose name is not the escaped form of a key's segment")
        if entry.is_file(follow_symlinks=False):
            return self.file_kind(name, prefix, pending)
        return Stray(name, _kind(entry))


class _Plain(_Named):
    name = "plain"

    def parts(self, key: str) -> tuple[tuple[str, ...], str]:
        if "/" not in key:
            return (), key
        *folders, name = key.split("/")
        return tuple(folders), name

    def file_key(self, name: str, prefix: str, pending: str) -> str | None:
        key = prefix + name
        return key if is_valid_key(key) else None

    not_a_key = "a file whose path is not a valid key (not UTF-8, a control character, too long)"

    def file_keys(self, names: list[str], prefix: str, pending: str) -> list[str] | None:
        if f"/{TEMP_MARK}" in "/" + "/".join(names):
            return None  # an own file or a stray among them
        if not all_valid(names, MAX_KEY_BYTES - len(prefix.encode())):
            return None
        return [prefix + name for name in names] if prefix else names

    def problem(self, key: str) -> str | None:
        for segment in key.split("/"):
            if segment.startswith(TEMP_MARK):
                return f"a segment starting with '~' ({segment[:40]!r}) is reserved for temporary files"
            if len(segment) * 4 > NAME_MAX and len(segment.encode("utf-8")) > NAME_MAX:
                return f"a segment of over {NAME_MAX} bytes cannot be a file name"
        return None

    def classify(self, entry: os.DirEntry[str], prefix: str, pending: str) -> Kind:
        name = entry.name
        if name.startswith(TEMP_MARK):
            return _tilde_entry(entry, prefix, pending)
        if entry.is_dir(follow_symlinks=False):
            if is_valid_key(f"{prefix}{name}/x"):
                return SubFolder(name, f"{prefix}{name}/", "")
            return Stray(name, "a folder whose name cannot be in a key (not UTF-8, or a control character)")
        if entry.is_file(follow_symlinks=False):
            return self.file_kind(name, prefix, pending)
        return Stray(name, _kind(entry))


ESCAPED: Final[Layout] = _Escaped()
PLAIN: Final[Layout] = _Plain()
LAYOUTS: Final = {"escaped": ESCAPED, "plain": PLAIN}
