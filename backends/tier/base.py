"""TierBase: a cache and an origin held together, under TieredBackend's reads and writes.

What the tier is besides its read and write paths: its parts, its counters,
the key locks readers and writers take on the cache, listings (the
origin's), capabilities (stat and url are the origin's, expiry the cache's)
and lifetime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ..base import BaseBackend
from ..cache import ExpiringCache
from ..codecs import IdentityCodec
from ..errors import LockError, LockTimeoutError
from ..events import HUB, Counters, observed
from ..info import Stat, SupportsStat, SupportsUrl
from ..locks import Lock, check_lease, check_wait

__all__ = ["DEFAULT_LEASE", "WRITER_WAIT", "TierBase", "TierStats", "release_lock"]

log = logging.getLogger("backends.tiered")

#: where each field of TierStats is counted in ``tier.counters`` (a cache outcome is also an event)
_SLOTS: Final = {
    "hits": ("cache", "hit"),
    "misses": ("cache", "miss"),
    "revalidations": ("cache", "revalidated"),
    "stale": ("cache", "stale"),
    "origin_requests": ("origin", "requested"),
}

#: seconds a loader's lease lasts: a killed loader delays the others this long at most
DEFAULT_LEASE: Final = 30.0
#: the shortest wait of a writer for a key's lock (it waits twice the lease when longer)
WRITER_WAIT: Final = 10.0


@dataclass(frozen=True)
class TierStats:
    """What a tier has done since it was made (in this process)."""

    #: loads served from the cache, including after waiting for another loader
    hits: int = 0
    #: loads the cache could not serve: each sent one load to the origin
    misses: int = 0
    #: expired entries the origin confirmed unchanged (a 304, no body)
    revalidations: int = 0
    #: expired values served while another caller refreshed them
    stale: int = 0
    #: loads sent to the origin (one GET each on S3, conditional or not)
    origin_requests: int = 0


class TierBase(BaseBackend[Any, Any]):
    """The parts, counters, key locks, listings and lifetime of :class:`~backends.tier.TieredBackend`."""

    codec = IdentityCodec()

    def __init__(
        self,
        cache: BaseBackend[Any, Any],
        origin: BaseBackend[Any, Any],
        *,
        lease: float = DEFAULT_LEASE,
        stale_while_revalidate: float = 0.0,
    ) -> None:
        from ..views import refuses_writes

        if isinstance(cache, BaseBackend) and refuses_writes(cache):
            # Checked first: a tier writes its cache on every read and write, so each call would
            # fail, a write only after the origin was written (README.rst, "Views").
            raise ValueError(
                f"cache {cache!r} refuses every write (a read-only view): a tier writes its cache; "
                "make the origin read-only instead"
            )
        self.lease = check_lease(lease, "lease")
        self.stale_while_revalidate = check_wait(stale_while_revalidate, "stale_while_revalidate") or 0.0
        self.cache = cache
        self.origin = origin
        # The capability, not a class: any cache with these methods expires.
        self._entries: ExpiringCache[Any] | None = cache if isinstance(cache, ExpiringCache) else None
        #: what this tier did, in this process: its cache's outcomes (operation
        #: "cache") and its loads from the origin ("origin", "requested"); ``stats`` reads them
        self.counters = Counters()
        self._counters = {name: self.counters.counter("", *slot) for name, slot in _SLOTS.items()}
        self._max_key_bytes = min(cache.max_key_bytes, origin.max_key_bytes)
        # The parts raise their own translated errors; nothing is left to translate.
        self._native_errors = ()

    # -- counters -------------------------------------------------------------------

    @property
    def stats(self) -> TierStats:
        """A snapshot of the counters."""
        return TierStats(**{name: self.counters.get(*slot).count for name, slot in _SLOTS.items()})

    def _count(self, name: str, amount: int = 1) -> None:
        self._counters[name].add(amount)

    def _tally(self, name: str, keys: Sequence[str]) -> None:
        """Count ``name`` once per key, and tell subscribers (one cache event per key)."""
        self._counters[name].add(len(keys))
        if HUB.on:
            outcome = _SLOTS[name][1]
            for key in keys:
                HUB.emit(self, "cache", key, outcome)

    # -- the key locks --------------------------------------------------------------

    @contextmanager
    def _flight(self, key: str, wait: float | None = None) -> Iterator[Lock | None]:
        """Hold the key's lock on the cache, for a reader; yields None if it could not be had in time."""
        lock = self._lock_of(key, self.lease if wait is None else wait)
        try:
            lock.acquire()
        except LockTimeoutError:
            # The holder outlived the wait: go on without the lock rather
            # than fail a read; the value read is then not put in the cache.
            yield None
            return
        try:
            yield lock
        finally:
            release_lock(lock)

    @contextmanager
    def _writing(self, keys: Iterable[str]) -> Iterator[dict[str, Lock]]:
        """Hold the locks of ``keys`` for a writer (in sorted order, so writers never deadlock).

        Raises LockTimeoutError if one cannot be had within twice the lease
        (at least :data:`WRITER_WAIT` seconds): nothing is written then.
        """
        wait = max(2 * self.lease, WRITER_WAIT)
        with ExitStack() as held:
            locks: dict[str, Lock] = {}
            for key in sorted(set(keys)):
                lock = self._lock_of(key, wait).acquire()
                held.callback(release_lock, lock)
                locks[key] = lock
            yield locks

    def _lock_of(self, key: str, wait: float) -> Lock:
        return self.cache.lock(key, timeout=wait, ttl=self.lease)

    # -- listing: the origin is the source of truth ------------------------------------

    def _iter_keys(self) -> Iterator[str]:
        return iter(self.origin)

    def _len(self) -> int:
        return len(self.origin)

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        return self.origin.list(prefix, delimiter)

    def _iter_items(self) -> Iterator[tuple[str, Any]]:
        return iter(self.origin.items())

    # -- the rest -------------------------------------------------------------------

    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """Remove the cache's expired entries; return how many (0 if the cache does not expire)."""
        return self._entries.purge() if self._entries is not None else 0

    def expires(self, key: str) -> datetime | None:
        """When the cache's entry of ``key`` expires (None: never); KeyError if the cache has none."""
        if self._entries is not None:
            return self._entries.expires(key)
        if key not in self.cache:
            raise KeyError(key)
        return None

    def stat(self, key: str) -> Stat | None:
        """The origin's :class:`~backends.info.Stat` of ``key`` (the source of truth).

        Raises NotImplementedError if the origin has no ``stat`` (memory).
        """
        if not isinstance(self.origin, SupportsStat):
            raise NotImplementedError(f"{type(self.origin).__name__} has no stat()")
        return self.origin.stat(key)

    def url(self, key: str, expires: float | None = None) -> str:
        """The origin's URL of ``key``; NotImplementedError if the origin has none (memory)."""
        if not isinstance(self.origin, SupportsUrl):
            raise NotImplementedError(f"{type(self.origin).__name__} has no url()")
        return self.origin.url(key, expires)

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        # User locks live on the origin, the store every machine shares.
        return self.origin.lock(key, timeout=timeout, ttl=ttl)

    def _describe(self) -> str:
        return f"cache={self.cache!r}, origin={self.origin!r}"

    def _identity(self) -> tuple[object, ...]:
        return (self.cache, self.origin)

    @property
    def closed(self) -> bool:
        """Whether the cache or the origin was closed: the tier's calls then raise StoreError."""
        return self.cache.closed or self.origin.closed

    def close(self) -> None:
        """Close the cache and the origin (the origin too if the cache's close raised)."""
        try:
            self.cache.close()
        finally:
            self.origin.close()


def release_lock(lock: Lock) -> None:
    try:
        lock.release()
    except LockError as lost:
        # The work under the lock is done, and every cache change in it was
        # made only while the lease held; losing it only means another
        # holder may have run alongside.
        log.warning("%s", lost)
