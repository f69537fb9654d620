"""The expiring layer of a folder cache: deadlines, reads through the memo, ``len``, removal of what expired.

An entry's deadline is its file's mtime (nanoseconds, on the cache's clock;
below :data:`.entries.NEVER_BELOW` for "never"). Telling whether an entry
expired costs one ``fstat`` of a file already open (``load``) or one
``lstat`` (``in``, ``len``, ``keys``); no value is read for it.

An expired entry is absent for every call, and removed when met: the look
and the unlink happen under an exclusive ``flock`` of its folder
(:func:`guarded`), which every writer takes shared to place an entry
(:mod:`.evict`), so a fresh value written meanwhile is never removed.

Hits are served from a memo in the process (the stored bytes of recently
read entries) after one ``stat`` shows the file is still the one read: same
inode, size, ctime, mtime and atime (:func:`.entries.file_identity`).
``len`` reuses the count of its last walk while it holds (:mod:`.counts`).
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
from typing import Final, TypeVar

from ..base import MISSING, Missing
from ..cache import CountedLookups, check_timeout, deadline_ns, to_ns
from .bound import FLOCKS, Pool, Tally
from .counts import Counted, CountMemo, changed, identity, last_change
from .entries import NEVER_BELOW, file_identity, get_tag
from .files import BLOCKED_ERRNOS, At, lstat_file, open_file, open_guard, prune_folders, read_all
from .layout import key_parts, key_path
from .store import FileSystemBackend

__all__ = ["MEMO_BUDGET", "MEMO_VALUE", "ExpiringFolder", "guarded"]

V = TypeVar("V")

#: bytes of values the memo of one cache keeps, and the largest value it keeps
MEMO_BUDGET: Final = 64 * 1024 * 1024
MEMO_VALUE: Final = 64 * 1024
#: later than any deadline
_NO_DEADLINE: Final = 1 << 63


class ExpiringFolder(CountedLookups, FileSystemBackend[V]):
    """A folder whose entries expire (the base of :class:`~.cache.FileSystemCache`, which sets its state)."""

    #: seconds an entry lives by default (None: never)
    timeout: float | None
    #: key -> (identity of the file read, its bytes): see the module docstring
    _memo: dict[str, tuple[tuple[int, ...], bytes]]
    _memo_bytes: int
    _memo_lock: threading.Lock
    #: the last len's walk, while it holds
    _counts: CountMemo
    #: a bounded cache's tally, stamps and eviction pool (:mod:`.bound`); None if unbounded
    _pool: Pool | None

    def _forked_child(self) -> None:
        # A read remembering its bytes holds the memo's lock an instant, outside any fork gate.
        super()._forked_child()
        self._memo_lock = threading.Lock()

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
        change, at = last_change(), time.monotonic()
        count, soonest = self._count_fresh(now)
        self._counts.keep(Counted(count, change, identity(root), at, now, soonest))
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

    def _scan(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every key's file with its lstat (expired ones too), for a recount."""
        for folder, name, key in self._walk(tidy=False):
            status = lstat_file(folder, name)
            if status is not None:
                yield key, status

    def _remove_fresh(self, at: At) -> bool:
        return self._remove(at) if self._fresh(at) else False

    # -- removing what expired (purge() is the cache's: :mod:`.cache`) -----------------

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
            with guarded(folder, fcntl.LOCK_EX):
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


@contextmanager
def guarded(folder: int, kind: int) -> Iterator[int]:
    """A flock of ``kind`` on ``folder`` (:func:`.files.open_guard`), held where no fork happens."""
    with FLOCKS:
        guard = open_guard(folder, kind)
        try:
            yield guard
        finally:
            os.close(guard)
