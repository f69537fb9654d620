"""Expiring caches on local disk: JsonCache, TextCache and RawCache, bounded or not.

A cache is a filesystem backend whose entries expire. An entry's deadline is
its file's mtime (nanoseconds, on the cache's clock; 0 for "never"), set on
the temporary file before it is moved into place, so the value and its
deadline appear together. Telling whether an entry expired costs one
``fstat`` of a file already open (``load``) or one ``lstat`` (``in``,
``len``, ``keys``); no value is read for it.

An expired entry is absent for every call, and removed when met: the look
and the unlink happen under an exclusive ``flock`` of its folder, which
every writer takes shared to place an entry, so a fresh value written
meanwhile is never removed.

Hits are served from a memo in the process (the stored bytes of recently
read entries) after one ``stat`` shows the file is still the one read: same
inode, size, ctime, mtime and atime. Every write makes a new file, and its
atime (set a day past the deadline, so reads leave it alone) carries random
nanoseconds, so a rewritten value never passes for the memoised one, even
in a reused inode with the same deadline. The deadline itself is exact: an
entry expires once its age reaches its timeout, to the nanosecond.

With ``maxbytes`` or ``maxsize``, every write and removal is counted in the
folder's shared tally and every hit stamped, and a write past the bound
evicts (:mod:`.bound`); without them, none of that costs anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final, TypeVar

from ..base import MISSING, Missing
from ..bounds import as_bound, check_bound
from ..cache import DEFAULT_TIMEOUT, CountedLookups, Entry, check_clock, check_timeout, deadline_ns, to_ns
from ..codecs import JsonCodec, RawCodec, TextCodec
from ..codecs.layers import CodecOption
from ..errors import BackendError, SerializationError, StoreError
from ..events import observed
from ..info import utc
from ..schemes import as_bool, as_seconds_or_none, local_path, parse_query, register_scheme
from .bound import BOUND_FILE, FLOCKS, Candidate, Pool, Tally, slot_of
from .counts import Counted, CountMemo, changed, identity, last_change
from .entries import NEVER_BELOW, deadline_of, file_identity, get_tag, set_deadline, set_tag
from .files import BLOCKED_ERRNOS, lstat_file, open_file, open_guard, prune_folders, read_all, write_all
from .guards import GuardPool
from .layout import key_parts, key_path
from .store import WRITE_RETRIES, At, FileSystemBackend

__all__ = ["EVICT_TRIES", "FileSystemCache", "JsonCache", "RawCache", "TextCache"]

V = TypeVar("V")

#: bytes of values the memo of one cache keeps, and the largest value it keeps
MEMO_BUDGET: Final = 64 * 1024 * 1024
MEMO_VALUE: Final = 64 * 1024
#: candidates one write of a bounded cache looks at, at most, to get back within the bound
EVICT_TRIES: Final = 1024
#: later than any deadline
_NO_DEADLINE: Final = 1 << 63


class FileSystemCache(CountedLookups, FileSystemBackend[V]):
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
        # key -> (identity of the file read, its bytes): see the module docstring
        self._memo: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self._memo_bytes = 0
        self._memo_lock = threading.Lock()
        self._start_counting()
        bounded = self.maxbytes is not None or self.maxsize is not None
        self._pool = Pool(self.maxsize, self.maxbytes) if bounded else None
        self._placing = threading.local()  # whether this thread's last counted write went past the bound
        self._counts = CountMemo()  # the last len's walk, while it holds
        self._guards = GuardPool()  # descriptors of the root, to hold a writer's flock on
        super().__init__(root, durable=durable, layout="escaped", codec=codec)

    # -- deadlines ----------------------------------------------------------------

    def _deadline(self, timeout: float | Missing | None) -> int:
        """The mtime to give an entry written now with ``timeout``, with random nanoseconds."""
        seconds = self.timeout if timeout is MISSING else check_timeout(timeout)
        if seconds is None:
            return 1 + random.getrandbits(30) % (NEVER_BELOW - 1)
        # Exact: the entry expires once its age reaches its timeout. What
        # tells a rewrite from the memoised file is the atime's random
        # nanoseconds (set_deadline), never the deadline.
        return max(deadline_ns(self.clock(), seconds), NEVER_BELOW)

    def _expired(self, deadline: int) -> bool:
        return deadline >= NEVER_BELOW and deadline <= to_ns(self.clock())

    def _live(self, status: os.stat_result) -> bool:
        return not self._expired(status.st_mtime_ns)

    def _written(self, status: os.stat_result) -> float:
        # The mtime is the deadline; the ctime is when the entry was moved into place.
        return status.st_ctime

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

        if self._pool is not None:
            # Stamped before it is placed too: a new entry never ranks as the
            # least recently used in another process's scan, between its
            # placing and its stamp (the first write of all has no file to stamp yet).
            self._pool.stamp(self._root_fd, key, to_ns(self.clock()))
        for _ in range(WRITE_RETRIES):
            if self._write(key, fill, if_absent):
                self._written_now(key, deadline)
                return True
            # An expired entry is absent: clearing it away, try again. A writer waits
            # for the tally to count that removal (a read that meets one does not:
            # another writer holding the tally would make this write lose to nobody).
            if self._at_live_key(key, self._fresh_or_removed):
                return False
        return False

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

    def _place(self, folder: int, temp_name: str, name: str, if_absent: bool) -> bool:
        # Entries are placed under a shared flock of their folder; a remover
        # of expired entries holds it exclusively from its look to its unlink
        # (see _discard_at), so it never removes an entry placed meanwhile.
        # The shared flock is held on an open file description of this caller's
        # own (:mod:`.guards`): a nested folder's, opened by this call's walk, or
        # one of the root's lent by the pool; no descriptor opened per write.
        with FLOCKS:
            own = folder != self._root_fd
            era, guard = (None, folder) if own else self._guards.borrow(folder)
            try:
                fcntl.flock(guard, fcntl.LOCK_SH)
                try:
                    if self._pool is None:
                        return super()._place(folder, temp_name, name, if_absent)
                    return self._place_counted(folder, temp_name, name, if_absent)
                finally:
                    fcntl.flock(guard, fcntl.LOCK_UN)
            finally:
                if era is not None:
                    self._guards.give_back(era, guard)

    def _place_counted(self, folder: int, temp_name: str, name: str, if_absent: bool) -> bool:
        # The tally's lock is held from the look at the old file to the
        # count: every counted change of the folder is serialised, so the
        # tally is exact however writers race on one key.
        assert self._pool is not None
        temp = os.stat(temp_name, dir_fd=folder, follow_symlinks=False)
        with self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None  # waited for
            old = lstat_file(folder, name)
            placed = super()._place(folder, temp_name, name, if_absent)
            if placed:  # the temp file's mtime is the entry's deadline
                tally.add(temp.st_size - (old.st_size if old else 0), 0 if old else 1, temp.st_mtime_ns)
            self._placing.over = placed and tally.over
        return placed

    # -- reading --------------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        hit = self._memoised(key)
        if hit is not None:
            self._looked_up(key, True)
            self._used(key)
            return hit[1]
        data = self._read_entry(key)
        if data is MISSING and self._root_gone(create=False):
            data = self._read_entry(key)
        self._looked_up(key, data is not MISSING)
        if data is not MISSING:
            self._used(key)
        return data

    def _used(self, key: str) -> None:
        """Record a hit of a bounded cache (one ``pwrite``, no lock); nothing for an unbounded one."""
        if self._pool is not None:
            self._pool.stamp(self._root_fd, key, to_ns(self.clock()))

    def _read_entry(self, key: str) -> bytes | Missing:
        folders, name = key_parts(key)
        fds = self._open_folders(folders, create=False) if folders else [self._root_fd]
        if fds is None:
            return MISSING
        try:
            opened = open_file(fds[-1], name)
            if opened is None:
                return MISSING
            fd, status = opened
            try:
                if not self._expired(status.st_mtime_ns):
                    data = read_all(fd, status.st_size)
                    self._remember(key, status, data)
                    return data
            finally:
                os.close(fd)
            self._discard(At(fds, folders, name, status))
            return MISSING
        finally:
            self._close(fds)

    def _memoised(self, key: str) -> tuple[os.stat_result, bytes] | None:
        """The remembered bytes of a fresh entry still in the file read, with its stat; else None."""
        memo = self._memo.get(key)
        if memo is None:
            return None
        status = self._stat_key(key)
        if status is None or file_identity(status) != memo[0] or self._expired(status.st_mtime_ns):
            return None
        return status, memo[1]

    def _stat_key(self, key: str) -> os.stat_result | None:
        """One stat of the key's file; the kernel walks the path (a symlinked folder
        leads to another inode, which no memo entry matches)."""
        try:
            return os.stat(key_path(key), dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in BLOCKED_ERRNOS:
                return None
            raise

    def _remember(self, key: str, status: os.stat_result, data: bytes) -> None:
        if len(data) > MEMO_VALUE:
            return
        with self._memo_lock:
            memo = self._memo
            old = memo.pop(key, None)
            self._memo_bytes += len(data) - (len(old[1]) if old else 0)
            while self._memo_bytes > MEMO_BUDGET and memo:
                self._memo_bytes -= len(memo.pop(next(iter(memo)))[1])  # the oldest first
            memo[key] = (file_identity(status), data)

    def _contains(self, key: str) -> bool:
        return bool(self._at_live_key(key, self._fresh))

    def _fresh(self, at: At) -> bool:
        """Whether the entry is fresh; an expired one met here is removed."""
        if not self._expired(at.status.st_mtime_ns):
            return True
        self._discard(at)
        return False

    def _iter_keys(self) -> Iterator[str]:
        # One lstat per file for its deadline; values are never read.
        keep = self._keep()
        return (key for folder, name, key in self._walk(tidy=False) if keep(folder, name))

    def _len(self) -> int:
        # The fresh entries only: an lstat each, or the count of the last walk
        # while it holds (:mod:`.counts`).
        self._root_gone(create=False)
        root = os.fstat(self._root_fd)
        now = to_ns(self.clock())
        found = self._counts.get(root, now)
        if found is not None:
            return found
        change, at, started = last_change(), time.monotonic(), time.time_ns()
        count, soonest = self._count_fresh(now)
        self._counts.keep(Counted(count, change, identity(root), at, now, soonest), started)
        return count

    def _count_fresh(self, now: int) -> tuple[int, int]:
        """The fresh entries at ``now`` (expired ones met are removed), and their earliest deadline."""
        count, soonest = 0, _NO_DEADLINE
        for folder, names in self.layout.named_files(self._root_fd):
            for name in names:
                status = lstat_file(folder, name)
                if status is None:
                    continue  # removed since it was listed, or not a file
                deadline = status.st_mtime_ns
                if deadline < NEVER_BELOW:
                    count += 1
                elif deadline > now:
                    count += 1
                    soonest = min(soonest, deadline)
                else:
                    self._discard_met(folder, name)
        return count, soonest

    def _keep(self) -> Callable[[int, str], bool]:
        """A listing keeps the fresh entries; an expired one met is removed."""

        def fresh(folder: int, name: str) -> bool:
            status = lstat_file(folder, name)
            if status is None:
                return False
            if not self._expired(status.st_mtime_ns):
                return True
            self._discard_met(folder, name)
            return False

        return fresh

    def _delete(self, key: str) -> bool:
        # An expired entry was already absent: it is removed, and False returned.
        return bool(self._at_live_key(key, self._remove_fresh))

    # Every change of the folder is recorded after it is made (counts.changed):
    # a remembered len never outlives one of this process's changes.

    def _write(self, key: str, fill: Callable[[int], None], if_absent: bool) -> bool:
        try:
            return super()._write(key, fill, if_absent)
        finally:
            changed()

    def _unlink_entry(self, folder: int, name: str) -> bool:
        try:
            return self._unlink_counted(folder, name)
        finally:
            changed()

    def _unlink_counted(self, folder: int, name: str) -> bool:
        # A bounded cache counts the removal under the tally's lock (see _place_counted).
        if self._pool is None:
            return super()._unlink_entry(folder, name)
        with self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None
            status = lstat_file(folder, name)
            if status is None or not super()._unlink_entry(folder, name):
                return False
            tally.remove(status.st_size)
            return True

    def _rename_aside(self, folder: int, name: str, aside: str) -> bool:
        try:
            return self._rename_counted(folder, name, aside)
        finally:
            changed()

    def _rename_counted(self, folder: int, name: str, aside: str) -> bool:
        if self._pool is None:
            return super()._rename_aside(folder, name, aside)
        with self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None
            status = lstat_file(folder, name)
            if status is None or not super()._rename_aside(folder, name, aside):
                return False
            tally.remove(status.st_size)
            return True

    def _clear(self) -> None:
        try:
            super()._clear()
        finally:
            changed()
        if self._pool is not None:
            # Recounted under the tally's lock: what writers placed meanwhile stays counted.
            with self._pool.counting(self._root_fd, self._scan, recount=True):
                pass

    def _scan(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every key's file with its lstat (expired ones too), for a recount."""
        for folder, name, key in self._walk(tidy=False):
            status = lstat_file(folder, name)
            if status is not None:
                yield key, status

    def _remove_fresh(self, at: At) -> bool:
        return self._remove(at) if self._fresh(at) else False

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

    def _discard(self, at: At) -> None:
        if self._discard_met(at.folder, at.name) and at.folders:
            prune_folders(at.fds, at.folders)

    def _discard_met(self, folder: int, name: str) -> bool:
        """:meth:`_discard_at` for an expired entry a call met: a folder that may not be
        changed (read-only, or not ours to write) leaves it in place, still absent.

        The call's answer (absent) stands; removing the entry is tidying, which
        ``purge()`` does, and which raises there.
        """
        try:
            return self._discard_at(folder, name, wait=False)
        except OSError as exc:
            if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
                return False
            raise

    def _discard_at(self, folder: int, name: str, wait: bool = True) -> bool:
        """Remove the file ``name`` if it is (still) an expired entry; say whether it was removed.

        The look and the unlink happen under an exclusive flock of the
        folder, and every writer places its entry under a shared one: no
        fresh entry can replace the expired one between the two, so none is
        ever hidden, dropped or left aside, even if a process is killed
        (the kernel drops its flock). A bounded cache counts the removal;
        without ``wait`` (a read that met the entry), an entry whose tally is
        being changed by another holder is left in place: reads never wait.
        """
        try:
            with _guarded(folder, fcntl.LOCK_EX):
                if self._pool is None:
                    return self._unlink_expired(folder, name, None)
                with self._pool.counting(self._root_fd, self._scan, wait=wait) as tally:
                    return tally is not None and self._unlink_expired(folder, name, tally)
        except FileNotFoundError:
            return False

    def _unlink_expired(self, folder: int, name: str, tally: Tally | None) -> bool:
        status = lstat_file(folder, name)
        if status is None or not self._expired(status.st_mtime_ns):
            return False
        os.unlink(name, dir_fd=folder)
        changed()
        if tally is not None:
            tally.remove(status.st_size)
        return True

    # -- the size bound -------------------------------------------------------------

    def _shrink(self, written: str) -> None:
        """Remove least recently used entries (expired ones first) until the folder is within its bound.

        Never the entry of ``written``, the key this write placed (its stamp
        can rank it oldest: a clock stepped back in another process, or every
        other entry used since). Each removal is checked under the tally's
        lock: never more than needed, whichever processes evict at once. At
        most :data:`EVICT_TRIES` candidates and two scans per call; the
        second scan's candidates go even if used since it, so that the write
        returns within the bound however hot the other entries are.
        """
        assert self._pool is not None
        scans = 0
        for _ in range(EVICT_TRIES):
            self._still_open()
            candidate = self._pool.next(to_ns(self.clock()))
            if candidate is None:
                scans += 1
                if scans > 2 or not self._rescan():
                    return
                continue
            # The last scan's ranking is the last there is: its candidates go even if
            # used since (else readers hitting every entry would keep the folder past it).
            if candidate.key == written:
                continue
            outcome = self._evict(candidate, strict=scans < 2)
            if outcome is _DONE:
                return
            if outcome is _RESCAN:
                scans += 1
                if scans > 2 or not self._rescan():
                    return

    def _rescan(self) -> bool:
        """Rank every entry and recount, under the tally's lock; False if within the bound (or empty)."""
        assert self._pool is not None
        stamps = self._pool.stamps(self._root_fd)
        now = to_ns(self.clock())
        found: list[Candidate] = []

        def scan() -> Iterator[tuple[str, os.stat_result]]:
            for key, status in self._scan():
                deadline = status.st_mtime_ns
                fresh = not (NEVER_BELOW <= deadline <= now)
                found.append(
                    Candidate(fresh, stamps[slot_of(key)], status.st_ctime_ns, key, status.st_ino, deadline)
                )
                yield key, status

        with self._pool.counting(self._root_fd, scan, recount=True) as tally:
            assert tally is not None
            over, entries = tally.over, tally.entries
            generation = tally.next_generation()  # what others write from now on is in its slot
        if over:
            self._pool.fill(found, entries, generation)
        return over and bool(found)

    def _evict(self, candidate: Candidate, strict: bool = True) -> object:
        """Remove the candidate if it is still the file scanned (and, ``strict``, unused since):
        _DONE once within the bound."""
        done = self._at_key(candidate.key, lambda at: self._evict_at(at, candidate, strict))
        return _SKIPPED if done is None else done

    def _evict_at(self, at: At, candidate: Candidate, strict: bool) -> object:
        assert self._pool is not None
        # Under the folder's exclusive flock, like removing an expired entry:
        # no writer can place a new value between the look and the unlink.
        with _guarded(at.folder, fcntl.LOCK_EX), self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None
            if not tally.over:
                return _DONE
            status = lstat_file(at.folder, at.name)
            if status is None or (status.st_ino, status.st_ctime_ns) != (
                candidate.ino,
                candidate.ctime_ns,
            ):
                return _SKIPPED  # removed, rewritten or renewed since the scan
            if strict and not self._expired(status.st_mtime_ns):
                if self._pool.stamp_of(self._root_fd, candidate.key) > candidate.stamp:
                    return _SKIPPED  # used since the scan: no longer among the least recent
                if self._pool.outdated(tally, to_ns(self.clock())):
                    return _RESCAN  # an entry written since the scan (by another process) has expired
            os.unlink(at.name, dir_fd=at.folder)
            changed()
            tally.remove(status.st_size)
            outcome = _MORE if tally.over else _DONE
        with self._memo_lock:
            memo = self._memo.pop(candidate.key, None)
            if memo is not None:
                self._memo_bytes -= len(memo[1])
        if at.folders:
            prune_folders(at.fds, at.folders)
        return outcome

    def _open_root(self, create: bool = True) -> None:
        super()._open_root(create)
        changed()
        if hasattr(self, "_guards"):
            self._guards.reopened()
        if self._pool is not None:
            self._pool.forget()  # the tally file kept for hits was the old folder's

    def close(self) -> None:
        super().close()
        self._guards.close()
        if self._pool is not None:
            self._pool.forget()

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

    def _read_stored(self, key: str, read: bool) -> tuple[bytes, int, str | None] | None:
        """The stored data (``b""`` unless ``read``), mtime deadline and, if expired, tag of ``key``."""
        hit = self._memoised(key) if read else None
        if hit is not None:
            return hit[1], hit[0].st_mtime_ns, None
        opened = self._open_value(key)
        if opened is None:
            return None
        fd, status = opened
        try:
            fresh = not self._expired(status.st_mtime_ns)
            data = read_all(fd, status.st_size) if read else b""
            tag = None if fresh else get_tag(fd)
        finally:
            os.close(fd)
        if read and fresh:
            self._remember(key, status, data)
        return data, status.st_mtime_ns, tag

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``.

        A value larger than ``maxbytes`` is not kept (and the key's older entry is removed).
        """
        deadline = self._deadline(MISSING)
        self._write_value(key, value, "fill", lambda key, data: self._fill(key, data, deadline, etag))

    def _fill(self, key: str, data: bytes, deadline: int, etag: str | None) -> bool:
        if self.maxbytes is not None and len(data) > self.maxbytes:
            return bool(self._at_live_key(key, self._remove))  # served by the tier, not kept
        return self._put(key, data, deadline, False, etag)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value of ``etag``; else False."""
        key = self._check(key, "renew")
        with self._translating("renew", key):
            return bool(self._at_key(key, lambda at: self._renew_at(at, etag)))

    def _renew_at(self, at: At, tag: str) -> bool:
        # Under the shared flock, like a write: a remover cannot unlink the
        # entry between our renewal and its look.
        with _guarded(at.folder, fcntl.LOCK_SH):
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


@contextmanager
def _guarded(folder: int, kind: int) -> Iterator[int]:
    """A flock of ``kind`` on ``folder`` (:func:`.files.open_guard`), held where no fork happens."""
    with FLOCKS:
        guard = open_guard(folder, kind)
        try:
            yield guard
        finally:
            os.close(guard)


_SKIPPED: Final = object()  # an eviction candidate that is no longer one
_MORE: Final = object()  # one removed; still past the bound
_DONE: Final = object()  # within the bound
_RESCAN: Final = object()  # an entry no scan of this process saw has expired: scan again


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
