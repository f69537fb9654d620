"""``len`` of a folder cache: a walk with an ``lstat`` per entry, remembered while nothing changed.

Telling a fresh entry from an expired one takes its mtime (its deadline),
one ``lstat`` per file: about six times a bare ``scandir`` walk, which no
count of fresh entries on files can avoid. So the count of the last walk is
kept in the process (:class:`CountMemo`) and given again, with no walk, while
all of these hold:

- no cache object of this process wrote or removed anything since the walk
  started (one counter for the whole process: :func:`changed`);
- the root folder is the same, unchanged since the walk began (its inode,
  mtime and ctime: every write, rename or removal of a top-level entry, by
  any process, changes them), and was already unchanged for
  :data:`SETTLED` seconds then (so a change in the same tick of the
  filesystem's clock, which leaves the mtime as it was, is not missed);
- the cache's clock has not reached the earliest deadline among the
  entries counted (expiry stays exact, to the nanosecond) nor gone back;
- the walk is at most :data:`COUNT_STALE` seconds old.

So the count is exact for this process's own changes and for expiry, and
another process's writes and removals in a sub-folder (``users/42``) are
counted at most :data:`COUNT_STALE` seconds late.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Final, NamedTuple

__all__ = ["COUNT_STALE", "SETTLED", "CountMemo", "Counted", "changed", "identity", "last_change"]

#: seconds a remembered count may be given for another process's changes in a sub-folder
COUNT_STALE: Final = 1.0
#: seconds the root must have been unchanged before a walk for its count to be remembered
SETTLED: Final = 0.05

_changes = itertools.count(1)
#: the number drawn by the latest change of any folder cache in this process
_last = [0]


def changed() -> None:
    """Record that a cache of this process changed a folder (call it after the change).

    Each change draws a number never drawn before, so a count remembered from
    before it never matches again, whatever the threads' interleaving.
    """
    _last[0] = next(_changes)


def last_change() -> int:
    return _last[0]


class Counted(NamedTuple):
    """A remembered count and what it holds for."""

    entries: int
    change: int  # last_change() when the walk started
    root: tuple[int, int, int, int]  # the root's inode, device, mtime and ctime then
    at: float  # time.monotonic() when the walk started
    now_ns: int  # the cache's clock then
    soonest_ns: int  # the earliest deadline among the fresh entries counted


def identity(status: os.stat_result) -> tuple[int, int, int, int]:
    """What tells the root folder unchanged: its inode, device, mtime and ctime."""
    return (status.st_ino, status.st_dev, status.st_mtime_ns, status.st_ctime_ns)


class CountMemo:
    """The last count of one cache object (see the module docstring)."""

    def __init__(self) -> None:
        self.kept: Counted | None = None

    def get(self, root: os.stat_result, now_ns: int) -> int | None:
        """The remembered count if it still holds now, else None."""
        kept = self.kept
        if (
            kept is None
            or kept.change != _last[0]
            or kept.root != identity(root)
            or not kept.now_ns <= now_ns < kept.soonest_ns
            or time.monotonic() - kept.at >= COUNT_STALE
        ):
            return None
        return kept.entries

    def keep(self, counted: Counted, started_ns: int) -> None:
        """Remember ``counted`` (a walk begun at ``started_ns``, wall clock) if nothing changed
        during it and the root had been unchanged for :data:`SETTLED` seconds when it began."""
        settled = started_ns - counted.root[2] >= SETTLED * 1e9
        self.kept = counted if settled and counted.change == _last[0] else None

    def forget(self) -> None:
        self.kept = None
