"""The locks a call holds, and whether its lease still covers a write.

A caller that computes under a key's lock stores the result while the lease
is still its own: a holder whose body outlived its lease (another caller
took the key meanwhile, computed and stored a newer value) must not write
its older result over that one. The check costs nothing while the body took
less than half the lease by the decorator's clock (the common case); past
that, the write goes through the lock's ``while_held`` (sync: checked under
the lease, or renewed first) or a ``renew()`` first (async), one more lock
request on a remote store; a lease found lost skips the write.

What is held is kept per thread and per asyncio task (a ``ContextVar``),
innermost last, so a cached function called from another keeps each
holder's own lock.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Holding", "forget", "hold", "holding_of"]


@dataclass
class Holding:
    """A lock this call took for ``key`` at ``since`` (the decorator's clock)."""

    key: str
    lock: Any  # a Lock, or the twin's AsyncLock
    since: float
    ttl: float
    lost: bool = field(default=False)

    def covers(self, now: float) -> bool:
        """Whether the lease surely still runs: less than half of it has passed since it was asked for."""
        return now - self.since < self.ttl / 2


_HELD: ContextVar[tuple[Holding, ...]] = ContextVar("backends_cached_held", default=())


def hold(key: str, lock: Any, since: float, ttl: float) -> Holding:
    """Note that this call holds ``lock`` for ``key``, asked for at ``since``."""
    holding = Holding(key, lock, since, ttl)
    _HELD.set((*_HELD.get(), holding))
    return holding


def forget(lock: Any) -> Holding | None:
    """Drop ``lock`` from what this call holds; what was noted of it (None if nothing)."""
    held = _HELD.get()
    found = next((h for h in held if h.lock is lock), None)
    if found is not None:
        _HELD.set(tuple(h for h in held if h is not found))
    return found


def holding_of(key: str) -> Holding | None:
    """The innermost lock this call holds for ``key``, if any."""
    return next((h for h in reversed(_HELD.get()) if h.key == key), None)
