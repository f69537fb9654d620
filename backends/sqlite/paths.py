"""What a SQLite store's path and keys may be: checked before any I/O."""

from __future__ import annotations

import os

__all__ = ["encodable", "file_path"]


def encodable(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (no lone surrogate): what SQLite can be asked about."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_path(path: object) -> str:
    """The absolute path of the database file; ValueError or TypeError naming ``path`` before any I/O."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path is a str or os.PathLike naming a file, not {type(path).__name__}")
    given = os.fspath(path)
    if not isinstance(given, str):
        raise TypeError(f"path is a str or os.PathLike of str, not {type(given).__name__}")
    if given in ("", ":memory:"):
        raise ValueError(
            f"path {given!r} names no file (SQLite's private in-memory or temporary database is not "
            "shared by threads or processes): use VolatileBackend, or a file under tempfile.mkdtemp()"
        )
    if "\x00" in given:
        raise ValueError("path holds a NUL character")
    if not encodable(given):
        raise ValueError(f"path {given!r} is not valid UTF-8 (SQLite takes UTF-8 paths)")
    return os.path.abspath(given)
