"""What an event is: :class:`Event`, one small frozen record of one thing a backend did, and
:func:`digest`, what a key becomes for a subscriber that asked for digests."""

from __future__ import annotations

import hashlib
import socket
from typing import Final, NamedTuple

__all__ = ["HOST", "Event", "digest"]

#: this machine's name, in every event
HOST: Final = socket.gethostname()


class Event(NamedTuple):
    """One thing a backend did. Never a value, never a secret.

    A named tuple: immutable, and built in a fraction of a frozen dataclass's time.
    """

    #: seconds since the epoch (``time.time()``)
    time: float
    host: str
    pid: int
    #: ``repr`` of the backend: its class, root or bucket and options, never a credential
    backend: str
    #: the public call (``load``, ``dump``...), or ``cache``, ``lock``, ``request``, ``purge``
    operation: str
    #: the key, or its digest for subscribers that asked for digests; None for whole-store calls
    key: str | None
    #: ``started``, ``finished``, ``failed``; ``hit``, ``miss``, ``expired``,
    #: ``revalidated``, ``stale``, ``filled``; ``attempted``, ``acquired``,
    #: ``renewed``, ``released``, ``timed out``, ``lost``; ``retried``; ``purged``
    outcome: str
    #: seconds the operation (or the wait for a lock) took
    duration: float | None = None
    #: bytes read or written
    bytes: int | None = None
    #: tries it took (locks, retried requests)
    attempts: int | None = None
    #: a few words more: the error's class and reason (never its value), a count
    detail: str = ""

    def describe(self) -> str:
        """One line, e.g. ``load users/42 finished in 0.012 s (974 bytes)``."""
        parts = [self.operation]
        if self.key is not None:
            parts.append(self.key)
        parts.append(self.outcome)
        if self.duration is not None:
            parts.append(f"in {self.duration:.3f} s")
        extra = []
        if self.bytes is not None:
            extra.append(f"{self.bytes} bytes")
        if self.attempts is not None:
            extra.append(f"{self.attempts} attempt{'' if self.attempts == 1 else 's'}")
        if self.detail:
            extra.append(self.detail)
        line = " ".join(parts)
        return f"{line} ({', '.join(extra)})" if extra else line


def digest(key: str) -> str:
    """What a subscriber that asked for digests sees instead of ``key``: 16 hex digits of its SHA-256."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
