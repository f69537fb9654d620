"""The size bound of a cache folder: one shared tally, use stamps, and an eviction pool.

Every process using a bounded folder shares one file at its root,
:data:`BOUND_FILE`:

- a header (:data:`_HEADER`): a magic, the number of entries and their bytes
  (the sizes of the value files), the counted writes since the last recount,
  and a "busy" mark. Each counted write or removal changes it under an
  exclusive ``flock`` of the file, around the rename or unlink it counts, so
  the tally is exact however writers interleave. The busy mark is set for the
  span of the change: a holder killed inside it leaves it set, and the next
  holder recounts. A header that is not one this module wrote (corrupt,
  truncated, another tool's) is recounted too, and so is any tally every
  ``max(RECOUNT_EVERY, entries)`` counted writes (files a user added, grew or
  deleted behind the tally's back).
- :data:`SLOTS` use stamps after it, one 8-byte slot per key hash (crc32):
  the cache clock's nanoseconds of the key's last write or hit, written with
  one ``pwrite`` and no lock (a lost race between two hits keeps either
  stamp, both recent). Keys that share a slot share a stamp: the colder one
  then looks as recent as the hotter one and is kept longer, never evicted
  sooner. Eviction is approximate LRU in that sense only.

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

Entries other processes wrote after a pool's scan are in no pool of this
process. So that one of them that expired still goes before any fresh entry,
the tally also keeps, after the header, a scan generation (each ranking scan
starts the next) and a ring of :data:`GENERATIONS` slots: the earliest
deadline written (or renewed) during each generation. Before a fresh
candidate goes, the evictor looks at the slots of every generation since its
own scan: one whose earliest deadline has passed (or a pool older than the
ring, or a tally recounted after a holder died mid-change) sends it to scan
again, at most once per generation. The slots follow the header in the same
``pread`` and ``pwrite``: no more system calls for a counted write.
"""

from __future__ import annotations

import errno
import fcntl
import heapq
import os
import stat
import struct
import threading
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Final, NamedTuple

from ..forkgate import fork_gate
from .entries import NEVER_BELOW

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

#: the shared tally and use stamps of a bounded folder (a reserved name: never a key)
BOUND_FILE: Final = "~backends-bound"
#: use-stamp slots after the header (8 bytes each: 512 KiB, a sparse file until used)
SLOTS: Final = 1 << 16
#: a recount at least every this many counted writes (heals drift behind the tally's back)
RECOUNT_EVERY: Final = 4096
#: the least number of eviction candidates one scan keeps
POOL: Final = 64
#: the scan generations whose earliest deadlines the tally keeps (a pool older than these scans again)
GENERATIONS: Final = 16

_MAGIC: Final = b"bkbound1"
_HEADER = struct.Struct("<8sqqqq")  # magic, entries, bytes, writes since recount, busy
# After the header, untouched by writers that predate it: the scan generation, then per
# generation slot (generation % GENERATIONS) its number and earliest deadline (0: none).
_RING_AT: Final = 64
_RING = struct.Struct("<q" + "qq" * GENERATIONS)
_ALL = _RING_AT + _RING.size
_STAMPS_AT: Final = 4096
_STAMP = struct.Struct("<Q")
# O_NONBLOCK: a FIFO of another tool at the name must not block the open (it is refused after)
_FLAGS = os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: what makes recording a use impossible on a read: the read is served, the use unrecorded
_UNRECORDABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOENT})
#: what another tool's symlink, folder or FIFO at the tally's name gives: a hit's use goes unrecorded
_NOT_A_FILE = frozenset({errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR, errno.ESPIPE})
_UNSTAMPED = _UNRECORDABLE | _NOT_A_FILE


#: what every flock of a folder cache (the tally's, a folder's guard) is taken and held in
FLOCKS: Final = fork_gate()


def _open_file(flags: int, root: int, mode: int = 0o666) -> int:
    """The tally file opened with ``flags``; OSError naming it for another tool's folder, symlink, FIFO."""
    fd = os.open(BOUND_FILE, flags, mode, dir_fd=root)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ENXIO, "not a regular file", BOUND_FILE)
    return fd


def slot_of(key: str) -> int:
    """The use-stamp slot of ``key`` (stable across processes and runs)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (SLOTS - 1)


def _read_ring(raw: bytes, tally: Tally) -> bool:
    """The generation and slots from the file's first bytes into ``tally``; False if none are there.

    A new file, or one another tool truncated or wrote over, has none: the
    tally then starts at a random generation, so that no pool of an older
    file takes it for its own (each then scans again). A file only writers
    that predate the ring wrote holds zeros there: generation 0, no slot.
    """
    if len(raw) >= _ALL:
        generation, *soonest = _RING.unpack_from(raw, _RING_AT)
        tags = soonest[0::2]
        if generation >= 0 and all(
            tag == 0 or (tag % GENERATIONS == slot and generation - GENERATIONS < tag <= generation)
            for slot, tag in enumerate(tags)
        ):
            tally.generation, tally.soonest = generation, soonest
            return True
    tally.generation = int.from_bytes(os.urandom(6), "little")  # 48 bits, far from any other file's
    tally.soonest = [0] * (2 * GENERATIONS)
    return False


class Tally:
    """The shared counts, as read under the lock; changes are written back when the lock is released."""

    def __init__(
        self, entries: int, size: int, writes: int, maxsize: int | None, maxbytes: int | None
    ) -> None:
        self.entries = entries
        self.bytes = size
        self.writes = writes
        self._maxsize = maxsize
        self._maxbytes = maxbytes
        self.generation = 0
        self.soonest = [0] * (2 * GENERATIONS)  # per slot: generation, earliest deadline (0: none)

    def add(self, size: int, entries: int, deadline: int = 0) -> None:
        self.bytes += size
        self.entries += entries
        self.writes += 1
        self.note(deadline)

    def note(self, deadline: int) -> None:
        """An entry now has ``deadline`` (ns; below NEVER_BELOW: never): kept in its generation's slot."""
        if deadline < NEVER_BELOW:
            return
        at = 2 * (self.generation % GENERATIONS)
        if self.soonest[at] != self.generation or not self.soonest[at + 1]:
            self.soonest[at : at + 2] = [self.generation, deadline]
        else:
            self.soonest[at + 1] = min(self.soonest[at + 1], deadline)

    def next_generation(self, skip: int = 1) -> int:
        """Start a scan generation (``skip`` of them: a pool older than the ring scans again)."""
        self.generation += skip
        at = 2 * (self.generation % GENERATIONS)
        self.soonest[at : at + 2] = [self.generation, 0]
        return self.generation

    def expired_since(self, generation: int, now_ns: int) -> bool:
        """Whether an entry written or renewed since scan ``generation`` may have expired by ``now_ns``."""
        if not 0 <= self.generation - generation < GENERATIONS:
            return True  # older than the ring (or another tally file): not known
        for number in range(generation, self.generation + 1):
            at = 2 * (number % GENERATIONS)
            if self.soonest[at] == number and 0 < self.soonest[at + 1] <= now_ns:
                return True
        return False

    def remove(self, size: int) -> None:
        self.bytes -= size
        self.entries -= 1

    @property
    def over(self) -> bool:
        """Whether the folder holds more than its bound."""
        return (self._maxsize is not None and self.entries > self._maxsize) or (
            self._maxbytes is not None and self.bytes > self._maxbytes
        )

    @property
    def wrong(self) -> bool:
        """Whether the counts cannot be true (a removal of a file the tally never counted)."""
        return self.entries < 0 or self.bytes < 0 or (self.entries == 0 and self.bytes != 0)


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
        self._stamps = -1  # a descriptor of BOUND_FILE kept for hits' pwrites
        self._stamps_ino = 0
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
            fd = _open_file(_FLAGS | os.O_CREAT, root)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield None
                    return
                raw = os.pread(fd, _ALL, 0)
                tally = self._read(raw)
                if (
                    tally is None
                    or recount
                    or tally.wrong
                    or tally.writes >= max(RECOUNT_EVERY, tally.entries)
                ):
                    counted = self.recount(scan)
                    if _read_ring(raw, counted) and (tally is None or tally.wrong):
                        # A holder died mid-change (or the header is not ours): the
                        # deadline it wrote may be in no slot, so every pool scans again.
                        counted.next_generation(GENERATIONS)
                    tally = counted
                # Busy until written back: a holder killed in between leaves the mark.
                os.pwrite(fd, _HEADER.pack(_MAGIC, tally.entries, tally.bytes, tally.writes, 1), 0)
                try:
                    yield tally
                finally:
                    # A change the body made is in the tally only once done; a
                    # wrong tally (a file removed that it never counted) is left
                    # unmarked, to be recounted by the next holder.
                    magic = b"" if tally.wrong else _MAGIC
                    header = _HEADER.pack(magic.ljust(8, b"\0"), tally.entries, tally.bytes, tally.writes, 0)
                    ring = _RING.pack(tally.generation, *tally.soonest)
                    os.pwrite(fd, header.ljust(_RING_AT, b"\0") + ring, 0)
                self._keep_stamps(root, fd)
            finally:
                os.close(fd)

    def _read(self, raw: bytes) -> Tally | None:
        if len(raw) < _HEADER.size:
            return None
        magic, entries, size, writes, busy = _HEADER.unpack_from(raw)
        if magic != _MAGIC or busy != 0 or writes < 0:
            return None  # not ours, damaged, or its last holder was killed mid-change
        tally = Tally(entries, size, writes, self.maxsize, self.maxbytes)
        return tally if _read_ring(raw, tally) else None  # no ring: recounted, every pool scans again

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
        kept = _open_file(_FLAGS, root)
        with self._lock:
            old, self._stamps = self._stamps, kept
            self._stamps_ino = os.fstat(kept).st_ino
        if old >= 0:
            os.close(old)

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
            os.pwrite(fd, _STAMP.pack(now_ns), _STAMPS_AT + 8 * slot_of(key))
        except OSError as exc:
            # A read-only or full folder serves its hits; their uses go unrecorded
            # (the entry then ranks by its last recorded use or write), and so does
            # one where another tool's folder, symlink or FIFO sits at the tally's name.
            if exc.errno not in _UNSTAMPED and exc.errno != errno.EBADF:
                raise

    def _open_stamps(self, root: int) -> int:
        try:
            fd = _open_file(_FLAGS, root)  # a read creates nothing
        except OSError as exc:
            if exc.errno in _UNSTAMPED:
                return -1
            raise
        with self._lock:
            if self._stamps >= 0:
                os.close(fd)
                return self._stamps
            self._stamps, self._stamps_ino = fd, os.fstat(fd).st_ino
        return fd

    def stamps(self, root: int) -> array[int]:
        """Every slot's stamp (zeros where none was recorded, or the file is missing)."""
        table = array("Q", bytes(8 * SLOTS))
        try:
            fd = _open_file(_READ_FLAGS, root)
        except FileNotFoundError:
            return table
        try:
            raw = os.pread(fd, 8 * SLOTS, _STAMPS_AT)
        finally:
            os.close(fd)
        table[: len(raw) // 8] = array("Q", raw[: len(raw) // 8 * 8])
        return table

    def stamp_of(self, root: int, key: str) -> int:
        """The stamp recorded for ``key``'s slot (0 if none)."""
        try:
            fd = _open_file(_READ_FLAGS, root)
        except FileNotFoundError:
            return 0
        try:
            raw = os.pread(fd, 8, _STAMPS_AT + 8 * slot_of(key))
        finally:
            os.close(fd)
        return _STAMP.unpack(raw)[0] if len(raw) == 8 else 0

    def forget(self) -> None:
        """Drop the kept descriptor (the root was reopened, or the cache closed)."""
        with self._lock:
            old, self._stamps, self._stamps_ino = self._stamps, -1, 0
        if old >= 0:
            os.close(old)

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
