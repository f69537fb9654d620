"""What ``@cached`` stores under a key: the value (or a cached error) and when it was computed.

The decorator keeps its own freshness next to the value, so that stores
without expiry (S3, a plain folder) serve stale values too. An entry is a
JSON object, in the store's own codec::

    {"backends.cached": 1, "at": 1800000000.0, "ttl": 300.0, "v": <the value>}
    {"backends.cached": 1, "at": ..., "ttl": 30.0, "error": {"class": "builtins.KeyError", "message": "..."}}

``at`` is the clock's reading when the value was stored, ``ttl`` its
timeout (``null``: never stale). Anything else found under a key (another
program's value, an entry of another shape) is foreign: a miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MARK", "Found", "error_entry", "read_entry", "value_entry"]

#: the field that tells an entry of ``@cached`` from any other value
MARK: Final = "backends.cached"


@dataclass(frozen=True)
class Found:
    """An entry read back: a value, or a cached error (its class's qualified name and message)."""

    at: float
    ttl: float | None
    value: Any = None
    error: tuple[str, str] | None = None

    def fresh(self, now: float) -> bool:
        return self.ttl is None or now < self.at + self.ttl

    def stale_for(self, now: float) -> float:
        """Seconds since the entry went stale (0 or less: still fresh)."""
        return -math.inf if self.ttl is None else now - (self.at + self.ttl)


def value_entry(value: Any, at: float, ttl: float | None) -> dict[str, Any]:
    return {MARK: 1, "at": at, "ttl": ttl, "v": value}


def error_entry(error: BaseException, at: float, ttl: float | None) -> dict[str, Any]:
    kind = type(error)
    return {
        MARK: 1,
        "at": at,
        "ttl": ttl,
        "error": {"class": f"{kind.__module__}.{kind.__qualname__}", "message": _message(error)},
    }


def _message(error: BaseException) -> str:
    """What rebuilds ``error``: its one str argument if it has just that (``str(KeyError("k"))`` is
    ``"'k'"``, which would come back quoted once more), else its text."""
    if len(error.args) == 1 and isinstance(error.args[0], str):
        return str(error.args[0])
    return str(error)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_entry(stored: Any) -> Found | None:
    """The entry in ``stored``, or None if it is no entry of ``@cached`` (foreign data)."""
    if not isinstance(stored, dict) or stored.get(MARK) != 1 or not _number(stored.get("at")):
        return None
    ttl = stored.get("ttl")
    if ttl is not None and not (_number(ttl) and ttl >= 0):
        return None
    if "v" in stored and "error" not in stored:
        return Found(float(stored["at"]), None if ttl is None else float(ttl), value=stored["v"])
    error = stored.get("error")
    if "v" in stored or not isinstance(error, dict):
        return None
    kind, message = error.get("class"), error.get("message")
    if not isinstance(kind, str) or not isinstance(message, str):
        return None
    return Found(float(stored["at"]), None if ttl is None else float(ttl), error=(kind, message))
