"""The bookkeeping file of a bounded cache folder: its layout, and the counts it holds.

Every process using a bounded folder shares one file at its root,
:data:`BOUND_FILE`:

- a header (:data:`HEADER`): a magic, the number of entries and their bytes
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
import os
import stat
import struct
import zlib
from typing import Final

from .entries import NEVER_BELOW

__all__ = [
    "ALL",
    "BOUND_FILE",
    "FLAGS",
    "GENERATIONS",
    "HEADER",
    "MAGIC",
    "READ_FLAGS",
    "RECOUNT_EVERY",
    "RING",
    "RING_AT",
    "SLOTS",
    "STAMP",
    "STAMPS_AT",
    "Tally",
    "open_tally",
    "read_ring",
    "read_tally",
    "slot_of",
]

#: the shared tally and use stamps of a bounded folder (a reserved name: never a key)
BOUND_FILE: Final = "~backends-bound"
#: use-stamp slots after the header (8 bytes each: 512 KiB, a sparse file until used)
SLOTS: Final = 1 << 16
#: a recount at least every this many counted writes (heals drift behind the tally's back)
RECOUNT_EVERY: Final = 4096
#: the scan generations whose earliest deadlines the tally keeps (a pool older than these scans again)
GENERATIONS: Final = 16
#: a generation or count at or past this is not one this module wrote (a generation starts below
#: 2**48, a bound is at most 2**62): taken as it is, the next ones would not fit their 8 bytes
_LIMIT: Final = 1 << 62

MAGIC: Final = b"bkbound1"
HEADER = struct.Struct("<8sqqqq")  # magic, entries, bytes, writes since recount, busy
# After the header, untouched by writers that predate it: the scan generation, then per
# generation slot (generation % GENERATIONS) its number and earliest deadline (0: none).
RING_AT: Final = 64
RING = struct.Struct("<q" + "qq" * GENERATIONS)
ALL = RING_AT + RING.size
STAMPS_AT: Final = 4096
STAMP = struct.Struct("<Q")
# O_NONBLOCK: a FIFO of another tool at the name must not block the open (it is refused after)
FLAGS = os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_tally(flags: int, root: int, mode: int = 0o666) -> int:
    """The tally file opened with ``flags``; OSError naming it for another tool's folder, symlink, FIFO."""
    fd = os.open(BOUND_FILE, flags, mode, dir_fd=root)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ENXIO, "not a regular file", BOUND_FILE)
    return fd


def slot_of(key: str) -> int:
    """The use-stamp slot of ``key`` (stable across processes and runs)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (SLOTS - 1)


def read_ring(raw: bytes, tally: Tally) -> bool:
    """The generation and slots from the file's first bytes into ``tally``; False if none are there.

    A new file, or one another tool truncated or wrote over, has none: the
    tally then starts at a random generation, so that no pool of an older
    file takes it for its own (each then scans again); so does a generation
    no writer of this module reaches (near 2**63). A file only writers
    that predate the ring wrote holds zeros there: generation 0, no slot.
    """
    if len(raw) >= ALL:
        generation, *soonest = RING.unpack_from(raw, RING_AT)
        tags = soonest[0::2]
        if 0 <= generation < _LIMIT and all(
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


def read_tally(raw: bytes, maxsize: int | None, maxbytes: int | None) -> Tally | None:
    """The counts in the file's first bytes; None if they are not this module's, or were left busy."""
    if len(raw) < HEADER.size:
        return None
    magic, entries, size, writes, busy = HEADER.unpack_from(raw)
    if magic != MAGIC or busy != 0 or writes < 0 or max(entries, size, writes) >= _LIMIT:
        return None  # not ours, damaged, or its last holder was killed mid-change
    tally = Tally(entries, size, writes, maxsize, maxbytes)
    return tally if read_ring(raw, tally) else None  # no ring: recounted, every pool scans again
