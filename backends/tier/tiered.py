"""TieredBackend: any backend used as a cache in front of any other.

Reads (README.rst, "Tiers"): a fresh cache entry is served with no request
to the origin; a miss takes the key's lock *on the cache* (a lease file, for
a cache on disk, so every process sharing the folder waits for one loader),
looks again, then loads from the origin once and fills the cache. An
expired entry of a cache on disk keeps its origin ETag, so the refresh is a
conditional GET: 304 renews the entry without a body.

Writes take the same key lock, write the origin, then the cache. Every
change to the cache is made only while the changer's lease is still valid
(:meth:`~backends.locks.Lock.while_held`), so a loader whose lease ran out
never puts a value it read before a write back over that write; a writer
whose lease ran out takes the lock again and drops the entry. A failed
origin write drops the entry too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from functools import partial
from typing import Any, Final

from ..base import MISSING, UNCHANGED, BaseBackend, Missing
from ..cache import Entry, check_timeout, uncounted
from ..core import encode_value
from ..errors import BackendError, LockTimeoutError, StoreError, check_flag
from ..events import HUB, observed
from ..locks import Lock
from .base import TierBase, TierStats, release_lock

__all__ = ["TierStats", "TieredBackend"]

_ABSENT: Final = object()  # pop()'s default meaning "absent" (MISSING there means "no default")


class TieredBackend(TierBase):
    """``cache`` in front of ``origin``; the origin is the source of truth.

    ``lease``: how long a loader or writer holds a key's lock; readers give
    up waiting after it and load without filling the cache, writers wait
    twice as long (at least 10 s), then raise LockTimeoutError (nothing written).
    ``stale_while_revalidate``: for that many seconds after an entry
    expires, callers get the expired value at once while one of them
    refreshes it. Expiry, revalidation and stale serving need a cache with
    the :class:`~backends.cache.ExpiringCache` methods (every built-in
    cache); any other backend is a cache that never expires.
    """

    # -- reading --------------------------------------------------------------------

    def _load(self, key: str) -> Any:
        if self._entries is None:
            return self._load_plain(key)
        entry = self._peek(key)
        if entry is not None and entry.fresh:
            return self._serve(key, entry, "hits")
        if entry is not None and HUB.on:
            HUB.emit(self, "cache", key, "expired")
        if entry is not None and self._servable_stale(entry):
            with self._flight(key, wait=0) as lock:
                return self._refresh_entry(key, lock) if lock else self._serve(key, entry, "stale")
        with self._flight(key) as lock:
            return self._refresh_entry(key, lock)

    def _load_plain(self, key: str) -> Any:
        """A load through a cache without entries (no expiry, no ETags): look, lock, look, load."""
        value = self.cache.load(key, MISSING)
        if value is MISSING:
            with self._flight(key) as lock:
                value = self.cache.load(key, MISSING)
                if value is MISSING:
                    return self._refresh(key, None, lock)
        self._tally("hits", (key,))
        return value

    def _serve(self, key: str, entry: Entry[Any], counter: str) -> Any:
        """The value of a cache entry, counted as ``counter``."""
        self._tally(counter, (key,))
        return entry.value

    def _peek(self, key: str) -> Entry[Any] | None:
        assert self._entries is not None
        return self._entries.peek(key)

    def _servable_stale(self, entry: Entry[Any]) -> bool:
        assert self._entries is not None and entry.deadline is not None
        # Asked only when stale values are allowed: a clock may cost a request (Redis' TIME).
        return self.stale_while_revalidate > 0 and (
            self._entries.clock() - entry.deadline < self.stale_while_revalidate
        )

    def _refresh_entry(self, key: str, lock: Lock | None) -> Any:
        """Under the key's lock (if had): look again, then revalidate or load from the origin."""
        entry = self._peek(key)
        if entry is not None and entry.fresh:
            return self._serve(key, entry, "hits")  # another loader filled it while we waited
        return self._refresh(key, entry, lock)

    def _refresh(self, key: str, entry: Entry[Any] | None, lock: Lock | None) -> Any:
        etag = entry.etag if entry is not None else None
        self._count("origin_requests")
        loaded = self.origin.load_if_changed(key, etag)
        if loaded is UNCHANGED:
            assert entry is not None and etag is not None and self._entries is not None
            # Only the entry holding that very ETag is renewed: no lease needed.
            self._entries.renew(key, etag)
            return self._serve(key, entry, "revalidations")
        self._tally("misses", (key,))
        if loaded is MISSING:
            if entry is not None and lock is not None:
                lock.while_held(lambda: self.cache.delete(key))  # deleted at the origin: drop our copy
            return MISSING
        if lock is not None:
            lock.while_held(lambda: self._fill(key, loaded.value, loaded.etag))
        return loaded.value

    def _fill(self, key: str, value: Any, etag: str | None) -> None:
        """Put a value loaded from the origin (with its ETag, if known) in the cache."""
        if HUB.on:
            HUB.emit(self, "cache", key, "filled")
        if self._entries is None:
            self.cache.dump(key, value)
        else:
            self._entries.fill(key, value, etag=etag)

    def _contains(self, key: str) -> bool:
        # A fresh cache entry answers; otherwise the origin does (not filled).
        return key in self.cache or key in self.origin

    def _load_many(self, keys: list[str]) -> dict[str, Any]:
        with uncounted():  # the tier's hits and misses, told once below
            found = self.cache.load_many(keys)
        self._tally("hits", list(found))
        missing = [key for key in keys if key not in found]
        if not missing:
            return found
        self._tally("misses", missing)
        self._count("origin_requests", len(missing))
        with ExitStack() as held:
            # A key whose lock is busy (another loader or a writer) is
            # loaded but not put in the cache: only a lease holder fills.
            locks: dict[str, Lock] = {}
            for key in missing:
                lock = self._lock_of(key, 0)
                try:
                    lock.acquire()
                except LockTimeoutError:
                    continue
                held.callback(release_lock, lock)
                locks[key] = lock
            loaded = self.origin.load_many(missing)
            for key, lock in locks.items():
                if key in loaded:
                    lock.while_held(partial(self._fill, key, loaded[key], None))
        found.update(loaded)
        return found

    # -- writing --------------------------------------------------------------------

    def _check_value(self, key: str, value: Any, operation: str) -> None:
        """Raise SerializationError unless both the cache and the origin can store ``value``."""
        encode_value(self.cache, value, key, operation)
        encode_value(self.origin, value, key, operation)

    @observed("dump")
    def dump(
        self, key: str, value: Any, *, if_absent: bool = False, timeout: float | Missing | None = MISSING
    ) -> bool:
        """Store in the origin, then in the cache (under the key's lock); True, or False with ``if_absent``.

        ``timeout`` is the cache entry's (default: the cache's own), as for a
        cache's ``dump``; the origin keeps the value as it keeps every value,
        so an expired entry is loaded (or revalidated) from it again. The
        value is checked against both codecs first (SerializationError,
        nothing written), and the timeout too (ValueError; TypeError if the
        cache keeps no per-entry timeouts). The cache entry is dropped before
        the origin is written, so neither a failed origin write nor a writer
        killed in between leaves the old value cached; if the cache write
        fails after the origin took the value, the cache's error is raised.
        """
        key = self._check(key, "dump")
        check_flag(if_absent, "if_absent")
        fill = partial(self._fill, key, value, None)
        if timeout is not MISSING:
            fill = partial(self._cache_dump, key, value, self._check_timeout(timeout))
        self._check_value(key, value, "dump")
        with self._writing([key]) as locks:
            if not self._origin_write(locks, lambda: self.origin.dump(key, value, if_absent=if_absent)):
                return False
            self._cache_write(key, locks[key], fill)
            return True

    def _check_timeout(self, timeout: object) -> float | None:
        seconds = check_timeout(timeout)
        if self._entries is None:
            raise TypeError(
                f"timeout: the tier's cache {self.cache!r} keeps no per-entry timeouts "
                "(JsonCache, MemoryCache, or a SQLite or Redis store made with a timeout does)"
            )
        return seconds

    def _cache_dump(self, key: str, value: Any, timeout: float | None) -> None:
        if HUB.on:
            HUB.emit(self, "cache", key, "filled")
        self.cache.dump(key, value, timeout=timeout)  # type: ignore[call-arg]

    def _dump(self, key: str, data: Any, if_absent: bool) -> bool:
        return self.dump(key, data, if_absent=if_absent)

    def _origin_write(self, locks: dict[str, Lock], write: Callable[[], Any]) -> Any:
        """Drop the cache entries of ``locks``, then run an origin write.

        Dropped first, so that a writer killed between the two writes leaves
        a cache that misses, never one that serves the value it replaced.
        If the write fails (it may still have been applied: a lost
        response), they are dropped again in case a loader whose lease
        outlived ours filled one meanwhile, and the write's error is raised.
        """
        self._drop_all(locks)
        try:
            return write()
        except BackendError as failed:
            try:
                self._drop_all(locks)
            except BackendError as also:
                if sys.version_info >= (3, 11):
                    failed.add_note(f"the cache entries could not be dropped either: {also}")
            raise

    def _drop_all(self, locks: dict[str, Lock]) -> None:
        for key, lock in locks.items():
            self._cache_write(key, lock, partial(self.cache.delete, key))

    def _cache_write(self, key: str, lock: Lock, write: Callable[[], object]) -> None:
        """Change the cache entry of ``key`` while our lease holds; else take the lock again and drop it.

        If the cache write fails, the entry is dropped and the cache's error raised.
        """
        try:
            if lock.while_held(write):
                return
        except StoreError as failed:
            self._drop(key, failed)
            raise
        # Our lease ran out while the origin was written: another loader
        # may have filled the cache with what the origin held before.
        with self._writing([key]):
            self.cache.delete(key)

    def _drop(self, key: str, failed: StoreError) -> None:
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

    def _delete(self, key: str) -> bool:
        with self._writing([key]) as locks:
            existed = self._origin_write(locks, lambda: self.origin.delete(key))
            self._cache_write(key, locks[key], lambda: self.cache.delete(key))
            return bool(existed)

    def _pop(self, key: str) -> Any:
        with self._writing([key]) as locks:
            value = self._origin_write(locks, lambda: self.origin.pop(key, _ABSENT))
            self._cache_write(key, locks[key], lambda: self.cache.delete(key))
            return MISSING if value is _ABSENT else value

    @observed("dump_many", keyed=False)
    def dump_many(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """Store every pair in the origin, then in the cache, under the keys' locks.

        Every key and value is checked (against both codecs) before the
        first write, so a bad one writes nothing anywhere.
        """
        pairs: dict[str, Any] = {}
        for raw_key, value in items.items() if isinstance(items, Mapping) else items:
            key = self._check(raw_key, "dump_many")
            self._check_value(key, value, "dump_many")
            pairs[key] = value
        with self._writing(pairs) as locks:
            self._origin_write(locks, lambda: self.origin.dump_many(pairs))
            for key, value in pairs.items():
                self._cache_write(key, locks[key], partial(self._fill, key, value, None))

    def _delete_many(self, keys: list[str]) -> int:
        with self._writing(keys) as locks:
            existed: int = self._origin_write(locks, lambda: self.origin.delete_many(keys))
            for key in keys:
                self._cache_write(key, locks[key], partial(self.cache.delete, key))
            return existed

    def _clear(self) -> None:
        # Key by key under their locks (the default: batches of delete_many),
        # then whatever else the cache holds.
        super()._clear()
        self.cache.clear()

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy for another process: the parts pickle themselves (an S3
        # origin refuses: build the tier in each process); counters restart.
        options = {"lease": self.lease, "stale_while_revalidate": self.stale_while_revalidate}
        return (_rebuild, (self.cache, self.origin, options))


def _rebuild(
    cache: BaseBackend[Any, Any], origin: BaseBackend[Any, Any], options: dict[str, Any]
) -> TieredBackend:
    return TieredBackend(cache, origin, **options)
