"""A gate a fork waits at until no call inside it is under way (and new calls wait for the fork).

What a child inherits from a fork in the middle of a call can outlive the
call: a flock held by another thread's open file description (the folder
caches' tally and guards), SQLite's record of a write lock or one of its
mutexes locked (the SQLite store). So such calls run inside a gate, and a
fork waits for the calls under way (each bounded: a few system calls, one
walk, or ``busy_timeout``); new calls wait for the fork. Reentrant in a
thread: a fork from inside a call waits for the others only.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

__all__ = ["ForkGate", "fork_gate", "new_locks_in_child"]


class ForkGate:
    """Calls run inside it (``with gate:``); a fork waits until none is under way."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._inside = 0
        self._forking = False
        self._depth = threading.local()

    @property
    def in_flight(self) -> int:
        """How many threads are inside the gate now."""
        return self._inside

    def __enter__(self) -> None:
        depth: int = getattr(self._depth, "n", 0)
        if not depth:
            with self._condition:
                while self._forking:
                    self._condition.wait()
                self._inside += 1
        self._depth.n = depth + 1

    def __exit__(self, *_: object) -> None:
        depth: int = self._depth.n - 1
        self._depth.n = depth
        if not depth:
            with self._condition:
                self._inside -= 1
                if not self._inside:
                    self._condition.notify_all()

    def before_fork(self) -> None:
        self._condition.acquire()  # held through the fork: no call starts meanwhile
        self._forking = True
        own = 1 if getattr(self._depth, "n", 0) else 0
        while self._inside > own:
            self._condition.wait()

    def after_in_parent(self) -> None:
        self._forking = False
        self._condition.notify_all()
        self._condition.release()

    def after_in_child(self) -> None:
        self._reset()  # the child has no call under way, and no other thread


def fork_gate() -> ForkGate:
    """A new gate, registered with ``os.register_at_fork``."""
    gate = ForkGate()
    os.register_at_fork(
        before=gate.before_fork, after_in_parent=gate.after_in_parent, after_in_child=gate.after_in_child
    )
    return gate


#: the objects whose named locks a forked child makes anew, by id (a backend compares by what
#: it stores, so a WeakSet would keep one of two equal backends): a weak reference and the names
_RELOCKED: dict[int, tuple[weakref.ref[Any], tuple[str, ...]]] = {}


def new_locks_in_child(owner: Any, *names: str) -> None:
    """In a forked child, ``owner``'s ``threading.Lock`` attributes ``names`` are new, free locks.

    A lock another thread of the parent held at the fork is copied held, and no thread of the
    child ever releases it: the child's first call taking it would wait for ever.
    """
    key = id(owner)
    _RELOCKED[key] = (weakref.ref(owner, lambda _: _RELOCKED.pop(key, None)), names)


def _relock() -> None:
    for ref, names in list(_RELOCKED.values()):
        owner = ref()
        if owner is not None:
            for name in names:
                setattr(owner, name, threading.Lock())


os.register_at_fork(after_in_child=_relock)
