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
  count it twice. A walk is kept only if no write of the process was in
  flight during it (:func:`begin` to its count): a write placed before the
  walk saw its file, and counted after, would be counted twice;
- the root folder is the same and unchanged since the walk (its inode,
  mtime and ctime: every write, rename or removal of a top-level entry, by
  any process, changes them), except by this object's own counted writes:
  the root as it was just before each (unchanged since the walk or the
  previous one) is taken as the write left it;
- the cache's clock has not reached the earliest deadline among the
  entries counted (expiry stays exact, to the nanosecond) nor gone back;
- the walk is at most :data:`COUNT_STALE` seconds old.

So the count is exact for this process's own changes and for expiry.
Another process's writes and removals are counted at most
:data:`COUNT_STALE` seconds late: at the next ``len`` for one at the top
level, unless it fell in the same tick of the filesystem's clock as the
walk or as one of this object's own writes, or during one of them (the
root's mtime then does not tell it), and within :data:`COUNT_STALE` in a
sub-folder (``users/42``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Final, NamedTuple

__all__ = ["COUNT_STALE", "CountMemo", "Counted", "begin", "changed", "ended", "identity", "last_change"]

#: seconds a remembered count may be given for another process's changes in a sub-folder
COUNT_STALE: Final = 1.0

_changes = itertools.count(1)
#: the number drawn by the latest change of any folder cache in this process
_last = [0]
#: writes of this process between :func:`begin` and their count (:func:`ended`, :meth:`CountMemo.placed`)
_placing = [0]
#: held to draw a number and to count a write into a memo: one step, in any thread's interleaving
_drawing = [threading.Lock()]


def _forked() -> None:
    # A thread of the parent may have held the lock at the fork: the child's own is free;
    # and the parent's writes in flight are not the child's.
    _drawing[0] = threading.Lock()
    _placing[0] = 0


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


def begin() -> int:
    """A write is about to look at the old file and place its own: :func:`last_change` now.

    Every ``begin`` is followed by one :func:`ended` or :meth:`CountMemo.placed`;
    until then no walk of the process is kept (see :meth:`CountMemo.keep`).
    """
    with _drawing[0]:
        _placing[0] += 1
        return _last[0]


def ended() -> None:
    """A write begun (:func:`begin`) is over, placed or not, and not counted into a memo."""
    with _drawing[0]:
        _placing[0] -= 1
        _last[0] = next(_changes)


class Counted(NamedTuple):
    """A remembered count and what it holds for."""

    entries: int
    change: int  # last_change() when the walk started
    root: tuple[int, int, int, int]  # the root's inode, device, mtime and ctime
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
        if kept is None or not self._holds(kept, _last[0], now_ns) or kept.root != identity(root):
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
        """Remember ``counted`` if nothing changed in the process during its walk, and no
        write was in flight (its file may be in the count, and be counted into it again)."""
        with _drawing[0]:
            self.kept = counted if counted.change == _last[0] and not _placing[0] else None

    def placed(
        self,
        seen: int,
        added: int,
        deadline_ns: int | None,
        now_ns: int,
        roots: tuple[os.stat_result, os.stat_result],
    ) -> None:
        """Record a write this object placed (instead of :func:`changed`), and count it into the memo.

        ``seen``: :func:`last_change` before the look at the old file;
        ``added``: the fresh entries the write added (1, 0 or -1, from the old
        file's lstat and the new entry's deadline); ``deadline_ns``: the new
        entry's, if it is fresh and ever expires; ``roots``: the root's
        status before the write and after it. The memo is kept only if it
        held before the look, the root was as counted before the write, and
        nothing else changed since (see the module docstring); else it is
        dropped. Ends the write :func:`begin` began.
        """
        with _drawing[0]:
            _placing[0] -= 1
            before = _last[0]
            _last[0] = drawn = next(_changes)
            kept = self.kept
            if kept is None:
                return
            if before != seen or not self._holds(kept, seen, now_ns) or kept.root != identity(roots[0]):
                self.kept = None
                return
            soonest = kept.soonest_ns if deadline_ns is None else min(kept.soonest_ns, deadline_ns)
            root = identity(roots[1])
            self.kept = Counted(kept.entries + added, drawn, root, kept.at, kept.now_ns, soonest)

    def forget(self) -> None:
        self.kept = None
