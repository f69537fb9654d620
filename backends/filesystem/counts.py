"""``len`` of a folder cache: a walk with an ``lstat`` per entry, remembered while it holds.

Telling a fresh entry from an expired one takes its mtime (its deadline),
one ``lstat`` per file: about six times a bare ``scandir`` walk, which no
count of fresh entries on files can avoid. So the count of the last walk is
kept by the cache object (:class:`CountMemo`) and given again, with no walk,
while all of these hold:

- no change by this process since the walk started, other than this
  object's own writes, each counted into the memo as it is placed
  (:meth:`CountMemo.placed`: the old file's lstat, which every write makes
  anyway, tells whether it replaced a counted entry). Any other change, by
  any cache object of this process, draws a new number from one counter for
  the whole process (:func:`changed`), and the memo no longer matches; so
  does a write that another change of the process overlapped (between its
  look at the old file and its count), so two threads writing one key never
  count it twice;
- the root folder is the same and unchanged since the walk (its inode,
  mtime and ctime: every write, rename or removal of a top-level entry, by
  any process, changes them), except by this object's own counted writes
  at the top level, after which it is taken as it is at the next ``len``;
- the cache's clock has not reached the earliest deadline among the
  entries counted (expiry stays exact, to the nanosecond) nor gone back;
- the walk is at most :data:`COUNT_STALE` seconds old.

So the count is exact for this process's own changes and for expiry.
Another process's writes and removals are counted at most
:data:`COUNT_STALE` seconds late: at the next ``len`` for one at the top
level, unless it fell in the same tick of the filesystem's clock as the
walk or as one of this object's own top-level writes (the root's mtime
then does not tell it), and within :data:`COUNT_STALE` in a sub-folder
(``users/42``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Final, NamedTuple

__all__ = ["COUNT_STALE", "CountMemo", "Counted", "changed", "identity", "last_change"]

#: seconds a remembered count may be given for another process's changes in a sub-folder
COUNT_STALE: Final = 1.0

_changes = itertools.count(1)
#: the number drawn by the latest change of any folder cache in this process
_last = [0]
#: held to draw a number and to count a write into a memo: one step, in any thread's interleaving
_drawing = [threading.Lock()]


def _forked() -> None:
    # A thread of the parent may have held the lock at the fork: the child's own is free.
    _drawing[0] = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def changed() -> None:
    """Record that a cache of this process changed a folder (call it after the change).

    Each change draws a number never drawn before, so a count remembered from
    before it never matches again, whatever the threads' interleaving.
    """
    with _drawing[0]:
        _last[0] = next(_changes)


def last_change() -> int:
    return _last[0]


class Counted(NamedTuple):
    """A remembered count and what it holds for."""

    entries: int
    change: int  # last_change() when the walk started
    root: tuple[int, int, int, int] | None  # the root's inode, device, mtime and ctime (None: as it is next)
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
        if kept is None or not self._holds(kept, _last[0], now_ns):
            return None
        if kept.root is None:  # changed by this object's own writes: taken as it is now
            with _drawing[0]:
                if self.kept is not kept or kept.change != _last[0]:
                    return None
                self.kept = kept._replace(root=identity(root))
        elif kept.root != identity(root):
            return None
        return kept.entries

    @staticmethod
    def _holds(kept: Counted, change: int, now_ns: int) -> bool:
        return (
            kept.change == change
            and kept.now_ns <= now_ns < kept.soonest_ns
            and time.monotonic() - kept.at < COUNT_STALE
        )

    def keep(self, counted: Counted) -> None:
        """Remember ``counted`` if nothing changed in the process during its walk."""
        self.kept = counted if counted.change == _last[0] else None

    def placed(self, seen: int, added: int, deadline_ns: int | None, now_ns: int, top: bool) -> None:
        """Record a write this object placed (instead of :func:`changed`), and count it into the memo.

        ``seen``: :func:`last_change` before the look at the old file;
        ``added``: the fresh entries the write added (1, 0 or -1, from the old
        file's lstat and the new entry's deadline); ``deadline_ns``: the new
        entry's, if it is fresh and ever expires; ``top``: placed in the root.
        The memo is kept only if it held before the look and nothing else
        changed since (see the module docstring); else it is dropped.
        """
        with _drawing[0]:
            before = _last[0]
            _last[0] = drawn = next(_changes)
            kept = self.kept
            if kept is None:
                return
            if before != seen or not self._holds(kept, seen, now_ns):
                self.kept = None
                return
            soonest = kept.soonest_ns if deadline_ns is None else min(kept.soonest_ns, deadline_ns)
            root = None if top else kept.root
            self.kept = Counted(kept.entries + added, drawn, root, kept.at, kept.now_ns, soonest)

    def forget(self) -> None:
        self.kept = None
