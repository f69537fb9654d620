"""The key rule of the contract, written once.

A valid key is a non-empty ``str`` of at most 1024 UTF-8 bytes, with no
control character (U+0000-U+001F, U+007F) and no empty, ``.`` or ``..``
segment between ``/`` separators. Keys are never normalised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from .errors import InvalidKeyError

__all__ = ["MAX_KEY_BYTES", "all_valid", "check_key", "is_valid_key", "key_problem"]

MAX_KEY_BYTES = 1024

# One pass finds a control character or an empty, "." or ".." segment.
_BAD = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.{0,2}(?:/|$)")


def key_problem(key: object, max_bytes: int = MAX_KEY_BYTES) -> str | None:
    """What is wrong with ``key``, in a few words, or None if it is valid."""
    if not isinstance(key, str):
        return f"keys are str, not {type(key).__name__}"
    if _BAD.search(key) is not None:
        return "empty, '.' or '..' segment, or a control character"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "not encodable as UTF-8 (lone surrogate)"
    if size > max_bytes:
        return f"{size} UTF-8 bytes, more than {max_bytes}"
    return None


def all_valid(keys: Sequence[object], max_bytes: int = MAX_KEY_BYTES) -> bool:
    """Say whether every key is valid, in one pass over them all (for bulk calls).

    Joined with ``/``, valid keys never make a bad segment and invalid ones
    always do (an empty key, a leading or trailing ``/``, a ``.`` or ``..``
    segment), so one search answers for all of them.
    """
    if not all(type(key) is str for key in keys):
        return False
    texts = cast("Sequence[str]", keys)
    if not texts:
        return True
    joined = "/".join(texts)
    if _BAD.search(joined) is not None:
        return False
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    # Only a key of more than max_bytes / 4 characters can be too long.
    longest = max_bytes // 4
    return all(len(key) <= longest or len(key.encode("utf-8")) <= max_bytes for key in texts)


def is_valid_key(key: object) -> bool:
    """Say whether ``key`` is a valid key."""
    return key_problem(key) is None


def check_key(
    key: object,
    *,
    backend: str | None = None,
    operation: str | None = None,
    max_bytes: int = MAX_KEY_BYTES,
) -> str:
    """Return ``key`` if it is valid (and at most ``max_bytes`` long).

    Raises:
        InvalidKeyError: naming what is wrong with the key.
    """
    problem = key_problem(key, max_bytes)
    if problem is not None:
        raise InvalidKeyError(f"invalid key: {problem}", backend=backend, operation=operation, key=key)
    return key  # type: ignore[return-value]  # key_problem() proved it is a str
