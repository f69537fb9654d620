"""The shared flock a cache writer holds on a folder while it places an entry, at the least cost.

A remover of expired entries holds an exclusive ``flock`` of the entry's
folder from its look to its unlink; every writer places its entry under a
shared one (:mod:`.cache`). Flocks belong to open file descriptions, so each
holder needs one of its own: two threads sharing one would share (and
release) one lock.

- In a nested folder (``users/42``), the writer's walk opened the folder's
  descriptor for this one call: that is the writer's own open file
  description, flocked as it is (two ``flock`` calls, no ``open``).
- In the root, whose descriptor every call shares, a writer borrows a
  descriptor of the root from a :class:`GuardPool` (each held by one caller
  at a time, given back after), instead of opening and closing one per write.

A forked child never uses a descriptor it inherited (it shares the parent's
open file description, and so its flocks): the pool is emptied in the child.
A root opened again (the folder was deleted and made anew) empties it too:
its descriptors are of the old folder.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from .files import DIR_FLAGS

__all__ = ["GUARDS_KEPT", "GuardPool"]

#: descriptors a pool keeps for reuse, at most (one per thread writing at once)
GUARDS_KEPT: Final = 8

#: bumped in the child of every fork: a pool filled before it is not the child's
_forks = [0]


def _forked() -> None:
    _forks[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class GuardPool:
    """Descriptors of one root folder, each lent to one caller at a time, to hold flocks on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._era = (0, _forks[0])  # (root openings, forks): what the free descriptors belong to
        self._openings = 0

    def borrow(self, root: int) -> tuple[tuple[int, int], int]:
        """A descriptor of ``root`` (a new open file description) for this caller alone, with its era."""
        with self._lock:
            if self._era[1] != _forks[0]:
                self._drop()  # inherited: the parent's open file descriptions
            era = self._era
            if self._free:
                return era, self._free.pop()
        return era, os.open(".", DIR_FLAGS, dir_fd=root)

    def give_back(self, era: tuple[int, int], fd: int) -> None:
        """Return a borrowed descriptor (unlocked): kept if it is of the current root and room is left."""
        with self._lock:
            if era == self._era and len(self._free) < GUARDS_KEPT:
                self._free.append(fd)
                return
        os.close(fd)

    def reopened(self) -> None:
        """The root was opened again: the descriptors kept are of the old folder."""
        with self._lock:
            self._openings += 1
            self._drop()

    def close(self) -> None:
        """Close every kept descriptor; one lent out is closed when given back."""
        self.reopened()

    def forked(self) -> None:
        """In a forked child: a new lock (another thread of the parent may have held this one);
        the descriptors inherited are dropped at the next :meth:`borrow` (their era is the parent's)."""
        self._lock = threading.Lock()

    def _drop(self) -> None:
        fds, self._free = self._free, []
        self._era = (self._openings, _forks[0])
        for fd in fds:
            os.close(fd)
