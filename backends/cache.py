"""What every expiring cache shares: timeouts, entries, and the capability a tier uses.

A cache is a backend whose entries expire. Two are built in:
:class:`~backends.filesystem.FileSystemCache` (``JsonCache``, ``TextCache``:
files in a folder, shared by every process) and
:class:`~backends.memory.MemoryCache` (in this process, bounded, LRU). Any
backend that also has the methods of :class:`ExpiringCache` takes part in a
:class:`~backends.tiered.TieredBackend` with expiry, revalidation by ETag
and stale-while-revalidate; the tier checks for the methods, never a class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Generic, Protocol, TypeVar, runtime_checkable

__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "Entry", "ExpiringCache", "check_timeout"]

V = TypeVar("V")

#: seconds an entry lives when neither the cache nor ``dump`` says otherwise
DEFAULT_TIMEOUT: Final = 300.0
#: the longest finite timeout (100 years); ``None`` or ``math.inf`` mean never
MAX_TIMEOUT: Final = 100 * 365.25 * 86_400


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """Return a valid timeout: None (never; also for ``math.inf``) or seconds in [0, MAX_TIMEOUT].

    Raises ValueError naming ``name`` and the range for anything else.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"{name} is None (never), math.inf or seconds, not {type(timeout).__name__}")
    if timeout == math.inf:
        return None
    if not 0 <= timeout <= MAX_TIMEOUT:
        raise ValueError(
            f"{name} is None or math.inf (never expires) or seconds from 0 to {MAX_TIMEOUT:.0f} "
            f"(100 years), not {timeout!r}"
        )
    return float(timeout)


@dataclass(frozen=True)
class Entry(Generic[V]):
    """A cache entry as :meth:`ExpiringCache.peek` shows it, expired or not."""

    #: the value (decoded: a new object for every peek of a cache that stores bytes)
    value: V
    #: when it expires, in seconds on the cache's clock; None for never
    deadline: float | None
    #: whether it has not expired yet
    fresh: bool
    #: the origin's version tag (ETag) it was filled with; a cache may leave
    #: it out (None) for a fresh entry, where a tier does not need it
    etag: str | None = None


@runtime_checkable
class ExpiringCache(Protocol[V]):
    """The capability a cache needs to take part in a tier with expiry and revalidation.

    Besides being a backend (``load``, ``dump``, ``delete``, ``lock``...), a
    cache has:

    - ``clock``: the wall clock of its deadlines (seconds since the epoch);
    - ``peek(key)``: the entry, expired or not, without removing it; None if none;
    - ``fill(key, value, etag=...)``: store a value loaded from the origin with
      the cache's default timeout, keeping the origin's ETag with it;
    - ``renew(key, etag)``: restart the timeout of the entry if it still holds
      the value of that ETag (the origin answered "unchanged"), else False;
    - ``purge()`` and ``expires(key)``: as for every cache.

    Every method validates its key and raises only errors of the tree.
    """

    clock: Callable[[], float]

    def peek(self, key: str) -> Entry[V] | None: ...

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None: ...

    def renew(self, key: str, etag: str) -> bool: ...

    def purge(self) -> int: ...

    def expires(self, key: str) -> datetime | None: ...
