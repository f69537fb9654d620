"""TieredBackend: any backend used as a cache in front of any other.

Reads (README.rst, "Tiers"): a fresh cache entry is served with no request
to the origin; a miss takes the key's lock *on the cache* (a lease file, for
a cache on disk, so every process sharing the folder waits for one loader),
looks again, then loads from the origin once and fills the cache. An
expired entry of a cache on disk keeps its origin ETag, so the refresh is a
conditional GET: 304 renews the entry without a body.

Writes go to the origin first, then the cache, under the same key lock, so
a failed origin write never leaves the cache claiming a value the origin
lacks, and a slow reader never puts an older value back over a newer write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from .base import MISSING, UNCHANGED, BaseBackend
from .cache import Entry, FileSystemCache
from .codecs import IdentityCodec
from .errors import LockError, LockTimeoutError, StoreError
from .locks import Lock

__all__ = ["TierStats", "TieredBackend"]

log = logging.getLogger("backends.tiered")

#: seconds a loader's lease lasts: a killed loader delays the others this long at most
DEFAULT_LEASE: Final = 30.0


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


class TieredBackend(BaseBackend[Any, Any]):
    """``cache`` in front of ``origin``; the origin is the source of truth.

    ``lease``: how long a loader holds a key's lock; waiters give up waiting
    after it and load themselves. ``stale_while_revalidate``: for that many
    seconds after an entry expires, callers get the expired value at once
    while one of them refreshes it (caches on disk only).
    """

    def __init__(
        self,
        cache: BaseBackend[Any, Any],
        origin: BaseBackend[Any, Any],
        *,
        lease: float = DEFAULT_LEASE,
        stale_while_revalidate: float = 0.0,
    ) -> None:
        if not lease > 0:
            raise ValueError("lease is > 0 seconds")
        if not (isinstance(stale_while_revalidate, (int, float)) and stale_while_revalidate >= 0):
            raise ValueError("stale_while_revalidate is seconds >= 0")
        self.codec = IdentityCodec()
        self.cache = cache
        self.origin = origin
        self.lease = lease
        self.stale_while_revalidate = stale_while_revalidate
        self._entries = cache if isinstance(cache, FileSystemCache) else None
        # Origin bytes go to the cache as they are when both use one codec.
        self._same_codec = type(cache.codec) is type(origin.codec) and not isinstance(
            cache.codec, IdentityCodec
        )
        self._counts = dict.fromkeys(("hits", "misses", "revalidations", "stale", "origin_requests"), 0)
        self._counts_lock = threading.Lock()
        self._max_key_bytes = min(cache.max_key_bytes, origin.max_key_bytes)
        # The parts raise their own translated errors; nothing is left to translate.
        self._native_errors = ()

    # -- counters -------------------------------------------------------------------

    @property
    def stats(self) -> TierStats:
        """A snapshot of the counters."""
        with self._counts_lock:
            return TierStats(**self._counts)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += amount

    # -- single flight --------------------------------------------------------------

    @contextmanager
    def _flight(self, key: str, wait: float | None = None) -> Iterator[bool]:
        """Hold the key's lock on the cache; yields False if it could not be had in time."""
        lock: Lock = self.cache.lock(key, timeout=self.lease if wait is None else wait, ttl=self.lease)
        try:
            lock.acquire()
        except LockTimeoutError:
            # The holder outlived the wait: go on without the lock rather
            # than fail a read; at worst the origin sees one more load.
            yield False
            return
        try:
            yield True
        finally:
            try:
                lock.release()
            except LockError as lost:
                # The work under the lock is done and correct; losing the
                # lease only means another loader may have run alongside.
                log.warning("%s", lost)

    # -- reading --------------------------------------------------------------------

    def _load(self, key: str) -> Any:
        if self._entries is None:
            return self._load_plain(key)
        entry = self._peek(key)
        if entry is not None and entry.fresh:
            return self._serve(key, entry, "hits")
        if entry is not None and self._servable_stale(entry):
            with self._flight(key, wait=0) as refreshing:
                return self._refresh_entry(key) if refreshing else self._serve(key, entry, "stale")
        with self._flight(key):
            return self._refresh_entry(key)

    def _load_plain(self, key: str) -> Any:
        """A load through a cache without entries (no expiry, no ETags): look, lock, look, load."""
        value = self.cache.load(key, MISSING)
        if value is MISSING:
            with self._flight(key):
                value = self.cache.load(key, MISSING)
                if value is MISSING:
                    return self._refresh(key, None)
        self._count("hits")
        return value

    def _serve(self, key: str, entry: Entry, counter: str) -> Any:
        """The value of a cache entry, counted as ``counter``."""
        assert self._entries is not None
        self._count(counter)
        return self._entries._decode(entry.data, key, "load")

    def _peek(self, key: str) -> Entry | None:
        assert self._entries is not None
        entries = self._entries
        return entries._guarded("load", key, lambda: entries._peek(key))

    def _servable_stale(self, entry: Entry) -> bool:
        assert self._entries is not None and entry.deadline_ns is not None
        overdue = self._entries.clock() - entry.deadline_ns / 1e9
        return overdue < self.stale_while_revalidate

    def _refresh_entry(self, key: str) -> Any:
        """Under the key's lock: look again, then revalidate or load from the origin."""
        entry = self._peek(key)
        if entry is not None and entry.fresh:
            return self._serve(key, entry, "hits")  # another loader filled it while we waited
        return self._refresh(key, entry)

    def _refresh(self, key: str, entry: Entry | None) -> Any:
        tag = entry.tag if entry is not None else None
        origin = self.origin
        self._count("origin_requests")
        loaded = origin._guarded("load", key, lambda: origin._load_tagged(key, tag))
        if loaded is UNCHANGED:
            assert entry is not None and tag is not None and self._entries is not None
            entries = self._entries
            entries._guarded("load", key, lambda: entries._renew(key, tag))
            return self._serve(key, entry, "revalidations")
        self._count("misses")
        if loaded is MISSING:
            if entry is not None:
                self.cache.delete(key)  # deleted at the origin: drop our copy too
            return MISSING
        data, etag = loaded
        value = origin._decode(data, key, "load")
        self._fill(key, value, data, etag)
        return value

    def _fill(self, key: str, value: Any, data: Any, etag: str | None) -> None:
        if self._entries is None:
            self.cache.dump(key, value)
            return
        entries = self._entries
        stored = data if self._same_codec else entries._encode(value, key, "load")
        entries._guarded("load", key, lambda: entries._fill(key, stored, etag))

    def _contains(self, key: str) -> bool:
        # A fresh cache entry answers; otherwise the origin does (not filled).
        return key in self.cache or key in self.origin

    def _load_many(self, keys: list[str]) -> dict[str, Any]:
        found = self.cache.load_many(keys)
        self._count("hits", len(found))
        missing = [key for key in keys if key not in found]
        if missing:
            self._count("misses", len(missing))
            self._count("origin_requests", len(missing))
            loaded = self.origin.load_many(missing)
            self.cache.dump_many(loaded)
            found.update(loaded)
        return found

    # -- writing --------------------------------------------------------------------

    def dump(self, key: str, value: Any, *, if_absent: bool = False) -> bool:
        """Store in the origin, then in the cache (under the key's lock); True, or False with ``if_absent``.

        If the cache write fails after the origin took the value, the cache
        entry is removed and the cache's error raised: the origin holds the
        new value, the cache nothing stale.
        """
        key = self._check(key, "dump")
        with self._flight(key):
            if not self.origin.dump(key, value, if_absent=if_absent):
                return False
            self._cache_write(key, lambda: self.cache.dump(key, value))
            return True

    def _dump(self, key: str, data: Any, if_absent: bool) -> bool:
        return self.dump(key, data, if_absent=if_absent)

    def _cache_write(self, key: str, write: Callable[[], object]) -> None:
        try:
            write()
        except StoreError as failed:
            try:
                self.cache.delete(key)
            except StoreError as also:
                raise StoreError(
                    "the origin was written but the cache could neither be written nor cleared: "
                    f"it may serve the old value until it expires ({also.reason})",
                    backend=repr(self),
                    operation="dump",
                    key=key,
                ) from failed
            raise

    def _delete(self, key: str) -> bool:
        with self._flight(key):
            existed = self.origin.delete(key)
            self.cache.delete(key)  # whatever the origin said: no stale copy stays
            return existed

    def dump_many(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Store every pair in the origin, then in the cache.

        The origin checks every key and value before its first write, so a
        bad one writes nothing anywhere.
        """
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        self.origin.dump_many(pairs)
        self.cache.dump_many(pairs)

    def _delete_many(self, keys: list[str]) -> int:
        existed = self.origin.delete_many(keys)
        self.cache.delete_many(keys)
        return existed

    def _clear(self) -> None:
        self.origin.clear()
        self.cache.clear()

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

    def purge(self) -> int:
        """Remove the cache's expired entries; return how many (0 if the cache does not expire)."""
        return self._entries.purge() if self._entries is not None else 0

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        # User locks live on the origin, the store every machine shares.
        return self.origin.lock(key, timeout=timeout, ttl=ttl)

    def _describe(self) -> str:
        return f"cache={self.cache!r}, origin={self.origin!r}"

    def _identity(self) -> tuple[object, ...]:
        return (self.cache, self.origin)

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy for another process: the parts pickle themselves (an S3
        # origin refuses: build the tier in each process); counters restart.
        options = {"lease": self.lease, "stale_while_revalidate": self.stale_while_revalidate}
        return (_rebuild, (self.cache, self.origin, options))

    def close(self) -> None:
        """Close the cache and the origin."""
        self.cache.close()
        self.origin.close()


def _rebuild(
    cache: BaseBackend[Any, Any], origin: BaseBackend[Any, Any], options: dict[str, Any]
) -> TieredBackend:
    return TieredBackend(cache, origin, **options)
