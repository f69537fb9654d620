"""The layout of keys in a folder: a key's path, and the key of a path.

A key is split at ``/``; each segment is percent-escaped so that only
``[A-Za-z0-9._-]`` and ``%XX`` remain. The last segment names the value
file; every other segment names a folder with a ``+`` suffix, so ``a``
(file ``a``) and ``a/b`` (file ``a+/b``) coexist. An escaped segment longer
than 200 characters is cut into pieces, all but the last stored as folders
with a ``=`` suffix, so no name passes the 255-byte limit. The one rule for
everything else: a name starting with ``~`` is never a key (this
library's own files have such names; :mod:`.tree` tells them from a user's
by their exact form). The mapping is a bijection: a walk
(:mod:`.walks`) gives back exactly the keys written.
"""

from __future__ import annotations

import itertools
import os
import re
from functools import lru_cache
from typing import Final
from urllib.parse import quote, unquote

from ..keys import is_valid_key

__all__ = [
    "CHUNK",
    "DIR_MARK",
    "PART_MARK",
    "TEMP_MARK",
    "decode_segment",
    "is_reserved",
    "is_temp",
    "key_of",
    "key_parts",
    "key_path",
    "piece_ok",
    "temp_name",
]

DIR_MARK: Final = "+"  # suffix of a folder holding the keys below a segment
PART_MARK: Final = "="  # suffix of a folder holding the rest of a long segment
TEMP_MARK: Final = "~"  # prefix of names that are never keys (temporary files, locks)
CHUNK: Final = 200  # longest escaped piece of a segment in one name

_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_KEY = re.compile(rf"[A-Za-z0-9._-]{{1,{CHUNK}}}(?:/[A-Za-z0-9._-]{{1,{CHUNK}}})*")
_RESERVED = {".", ".."}  # names no file can have


def is_reserved(name: str) -> bool:
    """Whether ``name`` is never a key's file or folder: the one rule for ``~`` names."""
    return name.startswith(TEMP_MARK)


#: the names of this library's temporary files, exactly: ``~backends-`` and 32
#: lowercase hex digits (:func:`temp_name`), then ``.tmp``; and the older form
#: (``~`` and 16 hex digits, ``.tmp`` or ``.expired``) that a killed writer
#: of an earlier version may have left. A user's file named like a temporary
#: file (``~WRL0001.tmp``, ``~notes.tmp``) has no such name: it is never ours.
_TEMP = re.compile(r"~backends-[0-9a-f]{32}\.tmp|~[0-9a-f]{16}\.(?:tmp|expired)")


def _new_process() -> None:
    """A new source of temporary names: at import, and in the child of every fork."""
    global _TEMP_PREFIX, _TEMP_COUNTER  # noqa: PLW0603 - the process's one source
    # 48 random bits and the process id, then a counter: unique among the processes
    # sharing a folder (even a fork that bypassed os.register_at_fork has its own
    # pid), with no system call per name.
    _TEMP_PREFIX = f"{TEMP_MARK}backends-{os.urandom(6).hex()}{os.getpid() & 0xFFFFFFFF:08x}"
    _TEMP_COUNTER = itertools.count()


_TEMP_PREFIX = ""
_TEMP_COUNTER = itertools.count()
_new_process()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process)


def temp_name() -> str:
    """A fresh name for a temporary file, of the one form :func:`is_temp` recognises.

    Unique in the process (a counter, atomic under the GIL) and across
    processes (a random prefix with the process id, renewed in a forked
    child): ``pop`` renames a key's file to one, so two processes must never
    draw the same name. No ``getrandom`` per name.
    """
    return f"{_TEMP_PREFIX}{next(_TEMP_COUNTER) & 0xFFFFFFFFFFFF:012x}.tmp"


def is_temp(name: str) -> bool:
    """Whether ``name`` is one this library gives its temporary files (:func:`temp_name`, or older)."""
    return _TEMP.fullmatch(name) is not None


def _escape(segment: str) -> str:
    # quote() keeps "~" unescaped; "~" starts names that are never keys.
    return quote(segment, safe="").replace("~", "%7E")


def _escape_name(segment: str) -> str:
    """The escaped form of a key's last segment, which names the value file.

    As :func:`_escape`, except that when a long segment is cut, a last piece
    that would be ``.`` or ``..`` (names the filesystem reserves) has its
    dots escaped, so every valid key has a file name (``"x" * 200 + ".."``).
    """
    escaped = _escape(segment)
    cut = (len(escaped) - 1) // CHUNK * CHUNK
    if cut and escaped[cut:] in _RESERVED:
        return escaped[:cut] + escaped[cut:].replace(".", "%2E")
    return escaped


def _pieces(escaped: str) -> list[str]:
    return [escaped[i : i + CHUNK] for i in range(0, len(escaped), CHUNK)]


def key_parts(key: str) -> tuple[tuple[str, ...], str]:
    """Return the folder names and the file name of a valid key, relative to the root."""
    if _PLAIN_KEY.fullmatch(key):
        # The common case: every segment is its own name, no cache needed.
        if "/" not in key:
            return (), key
        *folders, name = key.split("/")
        return tuple(folder + DIR_MARK for folder in folders), name
    return _escaped_parts(key)


def key_path(key: str) -> str:
    """The path of a valid key's file relative to the root, as one string."""
    if _PLAIN_KEY.fullmatch(key):
        return key.replace("/", DIR_MARK + "/")
    folders, name = _escaped_parts(key)
    return "/".join((*folders, name))


@lru_cache(maxsize=8192)
def _escaped_parts(key: str) -> tuple[tuple[str, ...], str]:
    folders: list[str] = []
    segments = key.split("/")
    last_index = len(segments) - 1
    for index, segment in enumerate(segments):
        pieces = _pieces(_escape_name(segment) if index == last_index else _escape(segment))
        folders.extend(piece + PART_MARK for piece in pieces[:-1])
        last = pieces[-1]
        if index < last_index:
            folders.append(last + DIR_MARK)
        else:
            return tuple(folders), last
    raise AssertionError("unreachable: split() returns at least one segment")


def decode_segment(escaped: str, last: bool = False) -> str | None:
    """Return the segment that escapes exactly to ``escaped`` (as a last segment, with ``last``), or None."""
    if _PLAIN.fullmatch(escaped):
        return escaped
    if not escaped.isascii():
        return None  # escaped names are ASCII; this one may not even be UTF-8 (a surrogate)
    try:
        segment = unquote(escaped, errors="strict")
        canonical = _escape_name(segment) if last else _escape(segment)
    except UnicodeError:  # "%ff" unquoted, or a name of bytes that are not UTF-8: no key's
        return None
    return segment if canonical == escaped else None


def piece_ok(piece: str, full: bool) -> bool:
    # A canonical layout cuts at exactly CHUNK characters; any other cut
    # would be a second path for the same key.
    return len(piece) == CHUNK if full else 0 < len(piece) <= CHUNK


def key_of(prefix: str, pending: str, name: str) -> str | None:
    """Return the key stored in file ``name``, or None if it is not a key's file."""
    if not piece_ok(name, full=False):
        return None
    segment = decode_segment(pending + name, last=True)
    if segment is None:
        return None
    key = prefix + segment
    return key if is_valid_key(key) else None
