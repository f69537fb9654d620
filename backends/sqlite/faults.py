"""SQLite's errors (and the OS's, on the file) as the error tree's: a class and an honest message."""

from __future__ import annotations

import errno
import os
import sqlite3

from ..errors import BackendError, PermissionDeniedError, StoreError, StoreUnavailableError
from .schema import ForeignTableError

__all__ = ["translate"]


def translate(exc: BaseException, path: str, busy_timeout: float) -> tuple[type[BackendError], str]:
    """The error class and message of SQLite's (or the OS's) ``exc`` on the file ``path``."""
    text, name = str(exc), getattr(exc, "sqlite_errorname", "")
    if isinstance(exc, PermissionError) or name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return PermissionDeniedError, f"no permission to write {path!r}"
    if name == "SQLITE_CANTOPEN" and os.path.exists(path) and not os.access(os.path.dirname(path), os.W_OK):
        return PermissionDeniedError, (
            f"cannot read {path!r}: SQLite must make {os.path.basename(path)}-shm beside it "
            "(its write-ahead log's index) and the folder is read-only"
        )
    if name == "SQLITE_FULL" or getattr(exc, "errno", None) == errno.ENOSPC:
        return StoreError, f"the disk is full (nothing of this call written): {text}"
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return (
            StoreUnavailableError,
            f"the database stayed locked by another writer for busy_timeout={busy_timeout:g} s",
        )
    return StoreError, _file_problem(exc, path, text, name)


def _file_problem(exc: BaseException, path: str, text: str, name: str) -> str:
    """What is wrong with the file itself (never changed by this store), or SQLite's words."""
    if "file is not a database" in text:
        return f"{path!r} is not an SQLite database"
    if name == "SQLITE_CORRUPT" or "malformed" in text:
        return f"{path!r} is corrupt (SQLite: {text}); it was left as it is"
    if isinstance(exc, ForeignTableError):
        return f"{path!r} holds a {text}; it was left as it is"
    return f"SQLite: {text}" if isinstance(exc, sqlite3.Error) else text
