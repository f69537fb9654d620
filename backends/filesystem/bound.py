"""The size bound of a cache folder: the shared tally's lock, use stamps, and an eviction pool.

The file and its counts are :mod:`backends.filesystem.tally`'s.

Eviction (:class:`Pool`), as Redis keeps a pool of the best candidates of
its samples: one scan of the folder (under the tally's lock, so it also
recounts) ranks the entries, expired ones first, then by stamp; the oldest
``max(POOL, entries // 16)`` are kept in the process as candidates, and each
later eviction takes the next one that still holds the same file with the
same stamp (a candidate used or rewritten since is dropped from the pool).
Entries outside the pool were newer when scanned and can only grow newer,
so the order stays exact; the pool is scanned again when it runs out, or
once a deadline the scan saw beyond the pool has passed (an entry outside
it expired).

An entry another process wrote (or renewed) after this pool's scan is in no
candidate of it: before a fresh candidate goes, :meth:`Pool.outdated` asks
the tally's scan generations (see :mod:`backends.filesystem.tally`) whether
one such entry may have expired, and the evictor then scans again.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import heapq
import operator
import os
import threading
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Final, NamedTuple

from ..forkgate import fork_gate
from .entries import NEVER_BELOW
from .files import retire
from .tally import (
    ALL,
    BOUND_FILE,
    FLAGS,
    GENERATIONS,
    HEADER,
    MAGIC,
    READ_FLAGS,
    RECOUNT_EVERY,
    RING,
    RING_AT,
    SLOTS,
    STAMP,
    STAMPS_AT,
    Tally,
    open_tally,
    read_ring,
    read_tally,
    slot_of,
)

__all__ = [
    "BOUND_FILE",
    "FLOCKS",
    "GENERATIONS",
    "POOL",
    "RECOUNT_EVERY",
    "SLOTS",
    "Candidate",
    "Pool",
    "Tally",
    "slot_of",
]

#: the least number of eviction candidates one scan keeps
POOL: Final = 64
#: what makes recording a use impossible on a read: the read is served, the use unrecorded
_UNRECORDABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOENT})
#: what another tool's symlink, folder or FIFO at the tally's name gives: a hit's use goes unrecorded
_NOT_A_FILE = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR, errno.ESPIPE})
_UNSTAMPED = _UNRECORDABLE | _NOT_A_FILE


#: what every flock of a folder cache (the tally's, a folder's guard) is taken and held in
FLOCKS: Final = fork_gate()


class Candidate(NamedTuple):
    """An entry a scan found: its rank (expired first, then oldest use), key and identity."""

    fresh: bool  # False (expired) ranks first
    stamp: int
    ctime_ns: int
    key: str
    ino: int
    deadline: int  # mtime: 0 .. NEVER_BELOW for never


#: a scan: yields ``(key, lstat)`` of every key's file
Scan = Callable[[], Iterable[tuple[str, os.stat_result]]]


class Pool:
    """The bound of one cache object in one process: the shared file's descriptors and the candidates."""

    def __init__(self, maxsize: int | None, maxbytes: int | None) -> None:
        self.maxsize = maxsize
        self.maxbytes = maxbytes
        self._stamps = -1  # a descriptor of BOUND_FILE kept for hits' pwrites (-1: none now)
        self._stamps_ino = 0
        #: the number it has while the pool lives: a file replaced, a root reopened or a close
        #: changes what it names (dup2), never closes it (a hit may have just read it)
        self._number = -1
        self._last = 0  # the last stamp this process wrote (stamps never go back in a process)
        self._lock = threading.Lock()
        self._by_use: list[int] = []  # indexes into _ranked, the oldest last (popped first)
        self._by_deadline: list[tuple[int, int]] = []  # heap of (deadline, index in _ranked)
        self._ranked: list[Candidate] = []
        self._taken: set[int] = set()
        self._horizon = 0  # the earliest deadline of a fresh entry outside the pool; 0: none
        self._generation = -1  # the tally's scan generation of the pool's scan (-1: none yet)

    # -- the tally ----------------------------------------------------------------

    @contextmanager
    def counting(
        self, root: int, scan: Scan, *, wait: bool = True, recount: bool = False
    ) -> Iterator[Tally | None]:
        """The tally under the file's exclusive flock (made with the file); written back after.

        With ``wait=False``, None at once if another holder has it. A missing,
        foreign, damaged or busy-marked header is recounted first.
        """
        with FLOCKS:  # no fork while the flock is held (see backends.forkgate)
            fd = open_tally(FLAGS | os.O_CREAT, root)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield None
                    return
                raw = os.pread(fd, ALL, 0)
                tally = read_tally(raw, self.maxsize, self.maxbytes)
                if (
                    tally is None
                    or recount
                    or tally.wrong
                    or tally.writes >= max(RECOUNT_EVERY, tally.entries)
                ):
                    counted = self.recount(scan)
                    if read_ring(raw, counted) and (tally is None or tally.wrong):
                        # A holder died mid-change (or the header is not ours): the
                        # deadline it wrote may be in no slot, so every pool scans again.
                        counted.next_generation(GENERATIONS)
                    tally = counted
                # Busy until written back: a holder killed in between leaves the mark.
                os.pwrite(fd, HEADER.pack(MAGIC, tally.entries, tally.bytes, tally.writes, 1), 0)
                try:
                    yield tally
                finally:
                    # A change the body made is in the tally only once done; a
                    # wrong tally (a file removed that it never counted) is left
                    # unmarked, to be recounted by the next holder.
                    magic = b"" if tally.wrong else MAGIC
                    header = HEADER.pack(magic.ljust(8, b"\0"), tally.entries, tally.bytes, tally.writes, 0)
                    ring = RING.pack(tally.generation, *tally.soonest)
                    os.pwrite(fd, header.ljust(RING_AT, b"\0") + ring, 0)
                self._keep_stamps(root, fd)
            finally:
                os.close(fd)

    def recount(self, scan: Scan) -> Tally:
        """Count every key's file afresh (expired ones too: they hold their bytes until removed)."""
        entries = size = 0
        for _, status in scan():
            entries += 1
            size += status.st_size
        return Tally(entries, size, 0, self.maxsize, self.maxbytes)

    # -- use stamps ------------------------------------------------------------------

    def _keep_stamps(self, root: int, fd: int) -> None:
        """Keep a descriptor of the file for hits (again, if the file was replaced or deleted meanwhile)."""
        ino = os.fstat(fd).st_ino
        if ino == self._stamps_ino and self._stamps >= 0:
            return
        # A new open file description, never a dup: the flock belongs to the
        # description, and a dup kept open would hold it for ever.
        kept = open_tally(FLAGS, root)
        with self._lock:
            self._install(kept)

    def _install(self, fd: int) -> None:
        """``fd`` becomes the stamps' descriptor, at the pool's one number (under the lock)."""
        if self._number < 0:
            self._number = fd
            weakref.finalize(self, os.close, fd)
        else:
            os.dup2(fd, self._number, inheritable=False)  # the same open file description
            os.close(fd)
        self._stamps, self._stamps_ino = self._number, os.fstat(self._number).st_ino

    def stamp(self, root: int, key: str, now_ns: int) -> None:
        """Record a use of ``key`` at ``now_ns``: one ``pwrite``, no lock; nothing where it cannot be.

        Never below this process's previous stamp: a clock stepped back (or
        frozen) leaves the order of this process's uses the order of its calls.
        """
        now_ns = max(now_ns, self._last + 1)
        self._last = now_ns
        fd = self._stamps
        try:
            if fd < 0:
                fd = self._open_stamps(root)
                if fd < 0:
                    return
            os.pwrite(fd, STAMP.pack(now_ns), STAMPS_AT + 8 * slot_of(key))
        except OSError as exc:
            # A read-only or full folder serves its hits; their uses go unrecorded
            # (the entry then ranks by its last recorded use or write), and so does
            # one where another tool's folder, symlink or FIFO sits at the tally's name.
            if exc.errno not in _UNSTAMPED and exc.errno != errno.EBADF:
                raise

    def _open_stamps(self, root: int) -> int:
        try:
            fd = open_tally(FLAGS, root)  # a read creates nothing
        except OSError as exc:
            if exc.errno in _UNSTAMPED:
                return -1
            raise
        with self._lock:
            if self._stamps >= 0:
                os.close(fd)
            else:
                self._install(fd)
            return self._stamps

    def stamps(self, root: int) -> array[int]:
        """Every slot's stamp (zeros where none was recorded, or the file is missing)."""
        table = array("Q", bytes(8 * SLOTS))
        try:
            fd = open_tally(READ_FLAGS, root)
        except FileNotFoundError:
            return table
        try:
            raw = os.pread(fd, 8 * SLOTS, STAMPS_AT)
        finally:
            os.close(fd)
        table[: len(raw) // 8] = array("Q", raw[: len(raw) // 8 * 8])
        return table

    def stamp_of(self, root: int, key: str) -> int:
        """The stamp recorded for ``key``'s slot (0 if none)."""
        try:
            fd = open_tally(READ_FLAGS, root)
        except FileNotFoundError:
            return 0
        try:
            raw = os.pread(fd, 8, STAMPS_AT + 8 * slot_of(key))
        finally:
            os.close(fd)
        return STAMP.unpack(raw)[0] if len(raw) == 8 else 0

    def forked(self) -> None:
        """In a forked child: a new lock, and no candidates (another thread of the parent may
        have held the lock at the fork, halfway through filling or taking them): the next
        write past the bound scans again."""
        self._lock = threading.Lock()
        self._by_use, self._by_deadline, self._ranked = [], [], []
        self._taken, self._horizon, self._generation = set(), 0, -1

    def forget(self) -> None:
        """Drop the kept descriptor (the root was reopened, or the cache closed); its number stays."""
        with self._lock:
            self._stamps, self._stamps_ino = -1, 0
            if self._number >= 0:
                retire(self._number)  # a hit's pwrite in flight: EISDIR, its use unrecorded

    # -- candidates ----------------------------------------------------------------------

    def fill(self, found: Iterable[Candidate], count: int, generation: int) -> None:
        """Keep the ``max(POOL, count // 16)`` best of a scan's candidates (the scan of ``generation``)."""
        size = max(POOL, count // 16)
        ranked = list(found)
        best = heapq.nsmallest(size, ranked)
        chosen = {id(candidate) for candidate in best}
        horizon = [
            c.deadline for c in ranked if id(c) not in chosen and c.deadline >= NEVER_BELOW and c.fresh
        ]
        with self._lock:
            self._ranked = best
            self._by_use = list(reversed(range(len(best))))
            self._by_deadline = [(c.deadline, i) for i, c in enumerate(best) if c.deadline >= NEVER_BELOW]
            heapq.heapify(self._by_deadline)
            self._taken = set()
            self._horizon = min(horizon, default=0)
            self._generation = generation

    def outdated(self, tally: Tally, now_ns: int) -> bool:
        """Whether an entry no scan of this pool saw may have expired by ``now_ns`` (under the lock)."""
        return self._generation >= 0 and tally.expired_since(self._generation, now_ns)

    def written(self, deadline: int) -> None:
        """A write of this process with this deadline: once passed, the pool is scanned again."""
        if deadline >= NEVER_BELOW and self._ranked:
            with self._lock:
                self._horizon = min(self._horizon or deadline, deadline)

    def put_back(self, candidates: Iterable[Candidate]) -> None:
        """Candidates :meth:`next` gave that are still candidates, in their rank (none of an older scan)."""
        with self._lock:
            for candidate in candidates:
                for index, ranked in enumerate(self._ranked):
                    if ranked is candidate and index in self._taken:
                        self._taken.discard(index)
                        bisect.insort(self._by_use, index, key=operator.neg)  # popped from the end
                        if candidate.deadline >= NEVER_BELOW:
                            heapq.heappush(self._by_deadline, (candidate.deadline, index))
                        break

    def next(self, now_ns: int) -> Candidate | None:
        """The next candidate: one the clock has expired first, else the least recently used; None to scan."""
        with self._lock:
            if self._horizon and self._horizon <= now_ns:
                return None  # an entry outside the pool has expired: scan again
            while self._by_deadline and self._by_deadline[0][0] <= now_ns:
                _, index = heapq.heappop(self._by_deadline)
                if index not in self._taken:
                    self._taken.add(index)
                    return self._ranked[index]
            while self._by_use:
                index = self._by_use.pop()
                if index not in self._taken:
                    self._taken.add(index)
                    return self._ranked[index]
            return None
