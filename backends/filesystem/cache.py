"""Expiring caches on local disk: JsonCache, TextCache and RawCache, bounded or not.

A cache is a filesystem backend whose entries expire. An entry's deadline is
its file's mtime (nanoseconds, on the cache's clock; 0 for "never"), set on
the temporary file before it is moved into place, so the value and its
deadline appear together. The class is built in three layers, one module each:

- :mod:`.expiry` (:class:`~.expiry.ExpiringFolder`): the deadlines, reads
  through the in-process memo of hits, ``len``/``in``/``keys``, and the
  removal of expired entries under an exclusive ``flock`` of their folder;
- :mod:`.evict` (:class:`~.evict.CountedFolder`): every change placed under
  a shared ``flock``, counted in a bounded folder's tally and told to the
  ``len`` memo, and the eviction past the bound;
- this module: the writes (``dump``, with the atime's random nanoseconds
  that tell a rewritten value from the memoised one), a tier's entries
  (``peek``, ``fill``, ``renew``), the value families and ``cache://`` URLs.

With ``maxbytes`` or ``maxsize``, every write and removal is counted in the
folder's shared tally and every hit stamped, and a write past the bound
evicts (:mod:`.bound`); without them, none of that costs anything.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from ..base import MISSING, Missing
from ..bounds import as_bound, check_bound
from ..cache import DEFAULT_TIMEOUT, Entry, check_clock, check_entry_etag, check_timeout, to_ns
from ..codecs import JsonCodec, RawCodec, TextCodec
from ..codecs.layers import CodecOption
from ..errors import BackendError, SerializationError, StoreError, check_flag
from ..events import observed
from ..info import utc
from ..schemes import as_bool, as_seconds_or_none, local_path, parse_query, register_scheme
from .bound import BOUND_FILE, Pool
from .counts import CountMemo, changed
from .entries import deadline_of, get_tag, set_deadline, set_tag
from .evict import EVICT_TRIES, CountedFolder
from .expiry import guarded
from .files import At, lstat_file, open_file, prune_folders, write_all
from .guards import GuardPool
from .store import WRITE_RETRIES

__all__ = ["EVICT_TRIES", "FileSystemCache", "JsonCache", "RawCache", "TextCache"]

V = TypeVar("V")


class FileSystemCache(CountedFolder[V]):
    """A filesystem backend whose entries expire ``timeout`` seconds after they are written.

    ``timeout=None`` keeps entries until deleted. ``clock`` (default
    ``time.time``) must be a wall clock shared by every process using the
    folder. Safe across threads and processes, like every filesystem backend.

    ``maxbytes`` (bytes of value files) and ``maxsize`` (entries) bound the
    folder for every process that opens it with them: past either, the
    least recently used entries are removed, expired ones first (README.rst,
    "Size bounds"). TypeError or ValueError naming the argument for a bound
    that is not None or an int from 1 to 2**62, before anything is done.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        clock: Callable[[], float] | None = None,
        durable: bool = False,
        codec: CodecOption[V] = None,
        maxbytes: int | None = None,
        maxsize: int | None = None,
    ) -> None:
        self.maxbytes = check_bound("maxbytes", maxbytes)
        self.maxsize = check_bound("maxsize", maxsize)
        self.timeout = check_timeout(timeout)
        if (checked := check_clock(clock)) is not None:
            self.clock = checked
        # the layers' state: the memo of hits and of len (.expiry), the bound's
        # pool, the flag of a write past it and the root's lent descriptors (.evict)
        self._memo = {}
        self._memo_bytes = 0
        self._memo_lock = threading.Lock()
        self._start_counting()
        bounded = self.maxbytes is not None or self.maxsize is not None
        self._pool = Pool(self.maxsize, self.maxbytes) if bounded else None
        self._placing = threading.local()
        self._counts = CountMemo()
        self._guards = GuardPool()
        super().__init__(root, durable=durable, layout="escaped", codec=codec)

    # -- writing --------------------------------------------------------------------

    @observed("dump")
    def dump(
        self, key: str, value: V, *, if_absent: bool = False, timeout: float | Missing | None = MISSING
    ) -> bool:
        """Store ``value`` under ``key``, expiring after ``timeout`` seconds (default: the cache's).

        ``timeout=None`` (or ``math.inf``): never expires; ``timeout=0``:
        already expired, so the key reads as absent. ``if_absent`` treats an
        expired entry as absent. Atomic, like every write. Raises ValueError
        for a timeout out of range, before anything is written.
        """
        check_flag(if_absent, "if_absent")
        deadline = self._deadline(timeout)
        return self._write_value(
            key,
            value,
            "dump",
            lambda key, data: self._put(key, self._fits(key, data, "dump"), deadline, if_absent),
        )

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._put(key, self._fits(key, data, "dump"), self._deadline(MISSING), if_absent)

    def _fits(self, key: str, data: bytes, operation: str) -> bytes:
        """``data``, if a value of its size fits in ``maxbytes``; else SerializationError, nothing written."""
        if self.maxbytes is not None and len(data) > self.maxbytes:
            raise SerializationError(
                f"the value is {len(data)} bytes; this cache keeps at most maxbytes={self.maxbytes}",
                backend=repr(self),
                operation=operation,
                key=key,
            )
        return data

    def _put(self, key: str, data: bytes, deadline: int, if_absent: bool, tag: str | None = None) -> bool:
        def fill(fd: int) -> None:
            write_all(fd, data)
            if tag is not None:
                set_tag(fd, tag)
            set_deadline(fd, deadline)

        self._placing.deadline = deadline  # for the len memo (evict.CountedFolder._count_placed)
        if self._pool is not None:
            # Stamped before it is placed too: a new entry never ranks as the
            # least recently used in another process's scan, between its
            # placing and its stamp (the first write of all has no file to stamp yet).
            self._pool.stamp(self._root_fd, key, to_ns(self.clock()))
        for _ in range(WRITE_RETRIES):
            # The root before this write (its temporary file, its new folder) changes it:
            # a remembered len takes the root as the write leaves it only if it was as counted.
            self._placing.root = self._root_before()
            if self._write(key, fill, if_absent):
                self._written_now(key, deadline)
                return True
            # An expired entry is absent: clearing it away, try again. A writer waits
            # for the tally to count that removal (a read that meets one does not:
            # another writer holding the tally would make this write lose to nobody).
            if self._at_live_key(key, self._fresh_or_removed):
                return False
        return False

    def _root_before(self) -> os.stat_result | None:
        """The root's status before a write, if a len is remembered (:mod:`.counts`)."""
        if self._counts.kept is None:
            return None
        try:
            return os.fstat(self._root_fd)
        except OSError:
            return None  # closed or gone: the write says so, and nothing is counted

    def _fresh_or_removed(self, at: At) -> bool:
        """Whether the entry is fresh; an expired one is removed, waiting for the tally if bounded."""
        if not self._expired(at.status.st_mtime_ns):
            return True
        if self._discard_at(at.folder, at.name) and at.folders:
            prune_folders(at.fds, at.folders)
        return False

    def _written_now(self, key: str, deadline: int) -> None:
        """After a write of a bounded cache: a write is a use; past the bound, evict."""
        if self._pool is None:
            return
        self._pool.stamp(self._root_fd, key, to_ns(self.clock()))
        self._pool.written(deadline)
        if getattr(self._placing, "over", False):
            self._placing.over = False
            self._shrink(key)

    # -- expiry ---------------------------------------------------------------------

    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """Remove every expired entry; return how many were removed.

        One lstat per entry; values are not read. Emptied folders are
        removed, and so are temporary files of writers killed over an hour ago.
        """
        with self._translating("purge", None):
            removed = 0
            for folder, name, _ in self._walk(tidy=True):
                self._still_open()
                status = lstat_file(folder, name)
                if status is not None and self._expired(status.st_mtime_ns):
                    removed += self._discard_at(folder, name)
            return removed

    def expires(self, key: str) -> datetime | None:
        """When the entry of ``key`` expires (a UTC datetime, by the cache's clock); None if never.

        Raises KeyError if the key is absent (or expired).
        """
        key = self._check(key, "expires")
        with self._translating("expires", key):
            found = self._read_stored(key, read=False)
        if found is None or self._expired(found[1]):
            raise KeyError(key)
        deadline = deadline_of(found[1])
        return None if deadline is None else utc(deadline)

    # -- entries, for a tier (the ExpiringCache capability) -----------------------------

    def peek(self, key: str) -> Entry[V] | None:
        """The entry of ``key``, expired or not (nothing is removed); None if there is none.

        An expired entry carries the ETag it was filled with; one whose
        data no longer decodes is no entry (a tier then loads it afresh),
        while a fresh one raises CorruptValueError like ``load``.
        """
        key = self._check(key, "peek")
        try:  # inline, not _translating: a tier's hit path
            found = self._read_stored(key, read=True)
        except self._native_errors as exc:
            self._reraise(exc, "peek", key)
        if found is None:
            return None
        data, deadline, tag = found
        fresh = not self._expired(deadline)
        if fresh:
            self._used(key)  # a tier's hit
        return self._entry(data, key, deadline_of(deadline), fresh, tag)

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``.

        A value larger than ``maxbytes`` is not kept (and the key's older entry is removed).
        """
        check_entry_etag(etag, "fill", optional=True)
        deadline = self._deadline(MISSING)
        self._write_value(key, value, "fill", lambda key, data: self._fill(key, data, deadline, etag))

    def _fill(self, key: str, data: bytes, deadline: int, etag: str | None) -> bool:
        if self.maxbytes is not None and len(data) > self.maxbytes:
            return bool(self._at_live_key(key, self._remove))  # served by the tier, not kept
        return self._put(key, data, deadline, False, etag)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value of ``etag``; else False."""
        key = self._check(key, "renew")
        check_entry_etag(etag, "renew")
        with self._translating("renew", key):
            return bool(self._at_key(key, lambda at: self._renew_at(at, etag)))

    def _renew_at(self, at: At, tag: str) -> bool:
        # Under the shared flock, like a write: a remover cannot unlink the
        # entry between our renewal and its look.
        with guarded(at.folder, fcntl.LOCK_SH):
            opened = open_file(at.folder, at.name)
            if opened is None:
                return False
            fd = opened[0]
            try:
                if get_tag(fd) != tag:
                    return False  # replaced since we looked: that value is not the one revalidated
                deadline = self._deadline(MISSING)
                if self._pool is None:
                    set_deadline(fd, deadline)
                    changed()
                    return True
                # A bounded cache notes the new deadline (it can be sooner than the old)
                # under the tally's lock, as a write does, for other processes' evictions.
                with self._pool.counting(self._root_fd, self._scan) as tally:
                    assert tally is not None
                    set_deadline(fd, deadline)
                    tally.note(deadline)
                changed()
                return True
            finally:
                os.close(fd)

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if (
            not self._closed
            and isinstance(exc, OSError)
            and not isinstance(exc, PermissionError)
            and exc.filename == BOUND_FILE
        ):
            return StoreError, (
                f"something that is not a file (another tool's folder, symlink or FIFO) is at the "
                f"bound's tally {BOUND_FILE!r}; it is left alone, and nothing is written"
            )
        return super()._translate(exc)

    def _describe(self) -> str:
        timeout = "None" if self.timeout is None else f"{self.timeout:g}"
        bounds = "".join(
            f", {name}={bound}"
            for name, bound in (("maxbytes", self.maxbytes), ("maxsize", self.maxsize))
            if bound
        )
        return f"{super()._describe()}, timeout={timeout}{bounds}"

    def __reduce__(self) -> tuple[Any, ...]:
        # The root descriptor cannot cross processes; a copy reopens the root.
        settings = {
            "clock": self.clock,
            "durable": self.durable,
            "maxbytes": self.maxbytes,
            "maxsize": self.maxsize,
            **self._codec_option(),
        }
        return (_rebuild, (type(self), str(self.root), self.timeout, settings))


def _rebuild(
    cls: type[FileSystemCache[Any]], root: str, timeout: float | None, settings: dict[str, Any]
) -> FileSystemCache[Any]:
    cache = cls.__new__(cls)
    FileSystemCache.__init__(cache, root, timeout, **settings)
    return cache


class JsonCache(FileSystemCache[Any]):
    """JSON values on local disk that expire after ``timeout`` seconds (None: never)."""

    codec = JsonCodec()


class TextCache(FileSystemCache[str]):
    """``str`` values on local disk that expire by their age: ``timeout`` seconds after written."""

    codec = TextCodec()


class RawCache(FileSystemCache[bytes]):
    """``bytes`` values on local disk that expire after ``timeout`` seconds (None: never)."""

    codec = RawCodec()


def _open_url(url: str, options: dict[str, Any]) -> FileSystemCache[Any]:
    """``cache:///path?timeout=300&format=json|text|raw&maxbytes=N&maxsize=N``."""
    allowed: dict[str, Callable[[str], Any]] = {
        "durable": as_bool,
        "timeout": as_seconds_or_none,
        "maxbytes": as_bound,
        "maxsize": as_bound,
    }
    fmt, kwargs = parse_query(url, allowed, options)
    families: dict[str, type[FileSystemCache[Any]]] = {"json": JsonCache, "text": TextCache, "raw": RawCache}
    return families[fmt](local_path(url), **kwargs)


register_scheme("cache", _open_url)
