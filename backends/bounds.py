"""The size bounds a store or cache on disk takes: ``maxbytes`` and ``maxsize``.

One rule for the folder caches and the SQLite store, as arguments and in URLs.
"""

from __future__ import annotations

from typing import Final

from .errors import shown

__all__ = ["MAX_BOUND", "as_bound", "check_bound"]

#: the largest bound (tallies are signed 64-bit integers)
MAX_BOUND: Final = 1 << 62


def check_bound(name: str, value: object) -> int | None:
    """``value`` as a bound: None (no bound) or an int from 1 to MAX_BOUND.

    TypeError for a bool, a float or any other type, ValueError out of range,
    each naming ``name``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is None (no bound) or a whole number, not {type(value).__name__}")
    if not 1 <= value <= MAX_BOUND:
        raise ValueError(f"{name} is None (no bound) or a whole number from 1 to 2**62, not {shown(value)}")
    return value


def as_bound(text: str) -> int | None:
    """A URL's ``maxbytes``/``maxsize``: ASCII digits, or ``none``; ValueError for anything else."""
    if text.lower() == "none":
        return None
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"not a whole number: {shown(text)}")
    if len(text.lstrip("0")) > len(str(MAX_BOUND)):
        raise ValueError(f"{shown(text)} is more than 2**62")  # int() of 4,301 digits raises
    return int(text)
