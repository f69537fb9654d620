"""The expiring caches in this process's memory: MemoryCache, MemoryTextCache, MemoryRawCache.

Bounded by entries and bytes, least recently used out first, each entry
with its deadline; what a tier needs of a cache (``peek``, ``fill``,
``renew``: :class:`~backends.cache.ExpiringCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..cache import (
    DEFAULT_TIMEOUT,
    CountedLookups,
    Entry,
    check_clock,
    check_entry_etag,
    check_timeout,
    deadline_ns,
    to_ns,
)
from ..codecs import JsonCodec, RawCodec, TextCodec
from ..codecs.layers import CodecOption
from ..errors import SerializationError, check_flag
from ..events import observed
from ..info import utc
from ..locks import Leases, Lock, MemoryLock
from .volatile import renew_at_fork

__all__ = [
    "DEFAULT_MAXBYTES",
    "DEFAULT_MAXSIZE",
    "MemoryCache",
    "MemoryCacheBase",
    "MemoryRawCache",
    "MemoryTextCache",
]

V = TypeVar("V")

#: entries a MemoryCache keeps when not told otherwise
DEFAULT_MAXSIZE: Final = 1024
#: bytes of values a MemoryCache keeps when not told otherwise (64 MiB)
DEFAULT_MAXBYTES: Final = 64 * 1024 * 1024


class _Slot(NamedTuple):
    data: Any
    #: nanoseconds on the cache's clock (exact: see backends.cache.deadline_ns), or None for never
    deadline: int | None
    etag: str | None
    size: int


class MemoryCacheBase(CountedLookups, BaseBackend[V, Any]):
    """An expiring cache in this process's memory, bounded, least recently used out first.

    Its families: ``MemoryCache`` (JSON), ``MemoryTextCache``,
    ``MemoryRawCache``. Values are kept in their stored form, so every hit returns a new
    object that the caller may change freely, and ``maxbytes`` counts real
    bytes. At most ``maxsize`` entries and ``maxbytes`` bytes of values are
    kept: past either, the least recently used entries are dropped (an
    evicted entry is absent, as if it had expired). Entries expire
    ``timeout`` seconds after they are written (None or ``math.inf``: never;
    per ``dump``, ``timeout=``), by ``clock`` (default ``time.time``).
    Safe across threads; gone when the process ends. A value larger than
    ``maxbytes`` raises SerializationError on ``dump`` (nothing changes) and
    is simply not kept by a tier's ``fill``.
    """

    _blocks = False  # in memory: its async twin calls it inline

    def __init__(
        self,
        maxsize: int = DEFAULT_MAXSIZE,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        maxbytes: int = DEFAULT_MAXBYTES,
        clock: Callable[[], float] | None = None,
        codec: CodecOption[V] = None,
    ) -> None:
        self._check_codec(codec)
        for name, bound in (("maxsize", maxsize), ("maxbytes", maxbytes)):
            if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
                raise ValueError(f"{name} is an int >= 1, not {bound!r}")
        self.maxsize = maxsize
        self.maxbytes = maxbytes
        self.timeout = check_timeout(timeout)
        if (checked := check_clock(clock)) is not None:
            self.clock = checked
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._bytes = 0
        #: no entry expires before this (ns; a lower bound): past it, a full cache looks for expired ones
        self._earliest: int | None = None
        self._lock = threading.Lock()
        self._leases = Leases()
        self._start_counting()
        renew_at_fork(self)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._leases.forked()
        self._start_counting()

    # -- deadlines ----------------------------------------------------------------

    def _seconds(self, timeout: float | Missing | None) -> float | None:
        """The timeout of a write: the cache's, or ``timeout`` checked (ValueError before anything)."""
        return self.timeout if timeout is MISSING else check_timeout(timeout)

    def _deadline(self, seconds: float | None) -> tuple[int | None, int]:
        """The deadline of an entry written now for ``seconds``, and now: one reading of the clock
        per call, as cachetools reads its timer once per operation."""
        now = self.clock()
        return (None if seconds is None else deadline_ns(now, seconds)), to_ns(now)

    def _now(self) -> int:
        return to_ns(self.clock())

    def _live(self, key: str, now: int) -> _Slot | None:
        """The slot of ``key`` if fresh; an expired one is dropped. Call under the lock."""
        slot = self._slots.get(key)
        if slot is None:
            return None
        if slot.deadline is not None and slot.deadline <= now:
            self._take_out(key)
            return None
        return slot

    def _take_out(self, key: str) -> _Slot:
        slot = self._slots.pop(key)
        self._bytes -= slot.size
        return slot

    def _put(self, key: str, slot: _Slot, now: int) -> None:
        """Store ``slot`` as the most recent entry, then drop the least recent ones past the bounds.

        An entry already expired (``timeout=0``) is not stored: it would be
        absent, yet evict a fresh entry (as cachetools' TLRUCache, it is
        skipped; an older value of the key is dropped).
        """
        if key in self._slots:
            self._take_out(key)
        if slot.deadline is not None and slot.deadline <= now:
            return
        self._slots[key] = slot
        self._bytes += slot.size
        if slot.deadline is not None and (self._earliest is None or slot.deadline < self._earliest):
            self._earliest = slot.deadline
        if self._full():
            self._drop_expired(now)  # as cachetools' TTLCache: expired entries go before any fresh one
        while self._full():
            self._take_out(next(iter(self._slots)))

    def _full(self) -> bool:
        return len(self._slots) > self.maxsize or self._bytes > self.maxbytes

    def _drop_expired(self, now: int, everywhere: bool = False) -> int:
        """Remove every expired entry; call under the lock.

        One scan of the entries, made (unless ``everywhere``) only once the
        earliest deadline has passed: a full cache of fresh entries pays nothing.
        """
        if not everywhere and (self._earliest is None or self._earliest > now):
            return 0
        expired = [
            key for key, slot in self._slots.items() if slot.deadline is not None and slot.deadline <= now
        ]
        for key in expired:
            self._take_out(key)
        deadlines = [slot.deadline for slot in self._slots.values() if slot.deadline is not None]
        self._earliest = min(deadlines, default=None)
        return len(expired)

    def _slot(self, data: Any, deadline: int | None, etag: str | None) -> _Slot | None:
        size = len(data) if isinstance(data, (bytes, str)) else 0
        return _Slot(data, deadline, etag, size) if size <= self.maxbytes else None

    # -- the store hooks -------------------------------------------------------------

    def _load(self, key: str) -> Any:
        with self._lock:
            slot = self._live(key, self._now())
            if slot is not None:
                self._slots.move_to_end(key)
        self._looked_up(key, slot is not None)
        return MISSING if slot is None else slot.data

    @observed("dump")
    def dump(
        self, key: str, value: V, *, if_absent: bool = False, timeout: float | Missing | None = MISSING
    ) -> bool:
        """Store ``value`` under ``key``, expiring after ``timeout`` seconds (default: the cache's).

        As :meth:`JsonCache.dump <backends.filesystem.FileSystemCache.dump>`;
        a value larger than ``maxbytes`` raises SerializationError.
        """
        check_flag(if_absent, "if_absent")
        seconds = self._seconds(timeout)
        return self._write_value(
            key, value, "dump", lambda key, data: self._store(key, data, seconds, if_absent)
        )

    def _dump(self, key: str, data: Any, if_absent: bool) -> bool:
        return self._store(key, data, self.timeout, if_absent)

    def _store(self, key: str, data: Any, seconds: float | None, if_absent: bool) -> bool:
        deadline, now = self._deadline(seconds)
        slot = self._slot(data, deadline, None)
        if slot is None:
            raise SerializationError(
                f"the value is {len(data)} bytes; this cache keeps at most maxbytes={self.maxbytes}",
                backend=repr(self),
                operation="dump",
                key=key,
            )
        with self._lock:
            if if_absent and self._live(key, now) is not None:
                return False
            self._put(key, slot, now)
            return True

    def _delete(self, key: str) -> bool:
        with self._lock:
            if self._live(key, self._now()) is None:
                return False
            self._take_out(key)
            return True

    def _pop(self, key: str) -> Any:
        with self._lock:
            if self._live(key, self._now()) is None:
                return MISSING
            return self._take_out(key).data

    def _contains(self, key: str) -> bool:
        with self._lock:
            return self._live(key, self._now()) is not None

    def _iter_keys(self) -> Iterator[str]:
        # A snapshot of the fresh keys, as for VolatileBackend: the values are in memory already.
        with self._lock:
            now = self._now()
            keys = [key for key, slot in self._slots.items() if slot.deadline is None or slot.deadline > now]
        return iter(keys)

    def _len(self) -> int:
        return sum(1 for _ in self._iter_keys())

    def _clear(self) -> None:
        with self._lock:
            self._slots.clear()
            self._bytes = 0
            self._earliest = None

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return MemoryLock(key, timeout, ttl, self._leases, **self._lock_context())

    # -- expiry ---------------------------------------------------------------------

    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """Remove every expired entry; return how many were removed."""
        with self._lock:
            now = self._now()
            return self._drop_expired(now, everywhere=True)

    def expires(self, key: str) -> datetime | None:
        """When the entry of ``key`` expires (a UTC datetime, by the cache's clock); None if never.

        Raises KeyError if the key is absent (or expired).
        """
        key = self._check(key, "expires")
        with self._lock:
            slot = self._live(key, self._now())
        if slot is None:
            raise KeyError(key)
        return None if slot.deadline is None else utc(slot.deadline / 1e9)

    # -- entries, for a tier (the ExpiringCache capability) -----------------------------

    def peek(self, key: str) -> Entry[V] | None:
        """The entry of ``key``, expired or not (nothing is removed, nothing moves in the LRU order)."""
        key = self._check(key, "peek")
        with self._lock:
            slot = self._slots.get(key)
            now = self._now()
        if slot is None:
            return None
        fresh = slot.deadline is None or slot.deadline > now
        deadline = None if slot.deadline is None else slot.deadline / 1e9
        entry = self._entry(slot.data, key, deadline, fresh, slot.etag)
        if entry is not None and fresh:
            with self._lock:
                if self._slots.get(key) is slot:
                    self._slots.move_to_end(key)
        return entry

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``.

        A value larger than ``maxbytes`` is not kept (and any older entry of the key is dropped).
        """
        key = self._check(key, "fill")
        check_entry_etag(etag, "fill", optional=True)
        data = self._encode(value, key, "fill")
        deadline, now = self._deadline(self.timeout)
        slot = self._slot(data, deadline, etag)
        with self._lock:
            if slot is not None:
                self._put(key, slot, now)
            elif key in self._slots:
                self._take_out(key)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value of ``etag``; else False."""
        key = self._check(key, "renew")
        check_entry_etag(etag, "renew")
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or slot.etag != etag:
                return False
            self._slots[key] = slot._replace(deadline=self._deadline(self.timeout)[0])
            self._slots.move_to_end(key)
            return True

    # -- the rest -------------------------------------------------------------------

    def _describe(self) -> str:
        timeout = "None" if self.timeout is None else f"{self.timeout:g}"
        return f"maxsize={self.maxsize}, maxbytes={self.maxbytes}, timeout={timeout}"

    def __getstate__(self) -> dict[str, Any]:
        # The locks cannot be pickled; a copy gets its own (and a snapshot).
        with self._lock:
            return {
                **self._counting_state(vars(self), "_lock", "_leases"),
                "_slots": self._slots.copy(),
            }

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()
        self._leases = Leases()
        self._start_counting()
        renew_at_fork(self)


class MemoryCache(MemoryCacheBase[Any]):
    """JSON values in memory that expire, kept as compact UTF-8 (see :class:`MemoryCacheBase`)."""

    codec = JsonCodec()


class MemoryTextCache(MemoryCacheBase[str]):
    """``str`` values in memory that expire, kept as UTF-8."""

    codec = TextCodec()


class MemoryRawCache(MemoryCacheBase[bytes]):
    """``bytes`` values in memory that expire."""

    codec = RawCodec()
