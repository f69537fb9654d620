"""What every expiring cache shares: timeouts, entries, and the capability a tier uses.

A cache is a backend whose entries expire. Two are built in:
:class:`~backends.filesystem.FileSystemCache` (``JsonCache``, ``TextCache``:
files in a folder, shared by every process) and
:class:`~backends.memory.MemoryCache` (in this process, bounded, LRU). Any
backend that also has the methods of :class:`ExpiringCache` takes part in a
:class:`~backends.TieredBackend` with expiry, revalidation by ETag
and stale-while-revalidate; the tier checks for the methods, never a class.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic, Protocol, TypeVar, overload, runtime_checkable

from .events import HUB, Counters

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "CacheStats",
    "CountedLookups",
    "Entry",
    "ExpiringCache",
    "check_clock",
    "check_entry_etag",
    "check_timeout",
    "deadline_ns",
    "to_ns",
    "uncounted",
]

V = TypeVar("V")

#: seconds an entry lives when neither the cache nor ``dump`` says otherwise
DEFAULT_TIMEOUT: Final = 300.0
#: the longest finite timeout (100 years); ``None`` or ``math.inf`` mean never
MAX_TIMEOUT: Final = 100 * 365.25 * 86_400


@overload
def check_entry_etag(etag: object, operation: str) -> str: ...
@overload
def check_entry_etag(etag: object, operation: str, *, optional: bool) -> str | None: ...
def check_entry_etag(etag: object, operation: str, *, optional: bool = False) -> str | None:
    """The ``etag`` given to ``fill`` (a non-empty str, or None: none) or ``renew`` (a non-empty
    str); else TypeError naming it, before any I/O (a number was a raw AttributeError in a folder
    cache, False in memory; ``""`` passed for no ETag in Redis)."""
    if (type(etag) is str or isinstance(etag, str)) and etag:
        return etag
    if optional and etag is None:
        return None
    wanted = "a non-empty str or None" if optional else "a non-empty str"
    raise TypeError(f"{operation}'s etag is {wanted} (an origin's stat(key).etag), not {type(etag).__name__}")


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


def check_clock(clock: object) -> Callable[[], float] | None:
    """Return ``clock`` if it is None (the default, ``time.time``) or callable; else TypeError naming it."""
    if clock is not None and not callable(clock):
        raise TypeError(f"clock is a callable returning seconds since the epoch, not {type(clock).__name__}")
    return clock


def to_ns(seconds: float) -> int:
    """``seconds`` (a clock's reading or a timeout) in whole nanoseconds, as exactly as the float holds them.

    ``seconds * 1e9`` would round to 256 ns for a clock near 2026 (a float
    has 53 bits): the whole seconds are converted apart from the fraction.
    """
    whole = math.floor(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def deadline_ns(now: float, seconds: float) -> int:
    """The deadline, in nanoseconds, of an entry written at ``now`` (a clock's reading) for ``seconds``.

    The entry expires once the clock reads ``now + seconds`` (as the clock's
    floats add up, as cachetools and diskcache compare): exactly when its
    age reaches its timeout. A positive timeout is never expired as it is
    written: at least 1 ns, even where the float cannot tell ``now + 1e-7``
    from ``now``.
    """
    deadline = to_ns(now + seconds)
    return max(deadline, to_ns(now) + 1) if seconds > 0 else deadline


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


@dataclass(frozen=True)
class CacheStats:
    """What a cache's own loads found, in this process (``cache.stats``)."""

    #: keys a load, ``get``, ``[]`` or ``load_many`` found fresh
    hits: int = 0
    #: keys they found absent or expired
    misses: int = 0


_quiet = threading.local()


@contextmanager
def uncounted() -> Iterator[None]:
    """Loads of a cache made in this block (in this thread) are not counted by the cache.

    A tier's loads of its cache are the tier's hits and misses, counted and
    told once, by the tier.
    """
    _quiet.depth = getattr(_quiet, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet.depth -= 1


class CountedLookups:
    """Hits and misses of a cache's loads: counted in ``counters``, told as ``cache`` events.

    The same operation and outcomes as a tier's (``cache``/``hit``,
    ``cache``/``miss``, one per key), under the cache's own name: a cache used
    on its own shows its hit rate like a tier. Mixed into every built-in cache.
    """

    #: what this cache's loads found, in this process (operation "cache", outcomes "hit" and "miss")
    counters: Counters

    def _start_counting(self) -> None:
        self.counters = Counters()
        counter = self.counters.counter
        self._lookups = (counter("", "cache", "miss"), counter("", "cache", "hit"))

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counts of hits and misses."""
        return CacheStats(self.counters.get("cache", "hit").count, self.counters.get("cache", "miss").count)

    def _looked_up(self, key: str, hit: bool) -> None:
        """Count one load of ``key`` and tell subscribers (unless a tier is loading: :func:`uncounted`)."""
        if getattr(_quiet, "depth", 0):
            return
        self._lookups[hit].add()
        if HUB.on:
            HUB.emit(self, "cache", key, "hit" if hit else "miss")

    def _looked_up_all(self, keys: Iterable[str], found: Container[str]) -> None:
        """Count each of ``keys`` a hit where ``found`` has it, else a miss."""
        if getattr(_quiet, "depth", 0):
            return
        for key in keys:
            self._looked_up(key, key in found)

    def _counting_state(self, state: dict[str, Any], *others: str) -> dict[str, Any]:
        """``state`` without the counters (they hold a lock: a copy starts its own at zero) and ``others``."""
        left_out = {"counters", "_lookups", *others}
        return {name: value for name, value in state.items() if name not in left_out}
