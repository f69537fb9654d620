"""Per-key locks with a lease: ``with backend.lock(key, timeout=10, ttl=60):``.

A lock gives mutual exclusion on one key across threads and processes (and
machines, for S3) for as long as its lease lasts: ``ttl`` seconds from the
last acquire or :meth:`Lock.renew`. A holder that crashed, or hangs past its
lease, loses the lock, so nobody waits for it forever. Waiting longer than
``timeout`` raises :class:`~backends.errors.LockTimeoutError`.

Each store keeps its leases its own way (README.rst, "Locks"):

- memory: a table of leases under a condition variable;
- filesystem (:mod:`backends.filesystem.lock`): a lease file per key
  under ``flock``;
- S3 (:mod:`backends.s3.locks`): a create-only PUT of a lock object.

One rule for a lease that ran out, on every store (README.rst, "Locks"):
``release()`` of it is a success while nobody else holds the lock (the
key is free; nothing to undo), and raises LockError when another holder
has it now; ``renew()`` of it raises LockError either way, saying which
("nobody holds the lock now" or "another holder took it"), because the
section was not guaranteed exclusive for the gap.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

from .errors import BackendError, LockError, LockTimeoutError
from .events import HUB

__all__ = [
    "MAX_LEASE",
    "Leases",
    "Lock",
    "MemoryLock",
    "check_lease",
    "check_wait",
    "lock_name",
]

E = TypeVar("E", bound=LockError)

#: first pause between two tries of a held lock; it doubles up to ``max_delay``
FIRST_DELAY: Final = 0.001

#: the longest lease (100 years): a lease must end, so a killed holder frees the key
MAX_LEASE: Final = 100 * 365.25 * 86_400


def check_wait(timeout: object, name: str = "timeout") -> float | None:
    """Return a valid wait: None (no limit) or seconds >= 0 (``math.inf`` too); else ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"{name} is None (no limit) or seconds >= 0, not {timeout!r}")
    return float(timeout)


def check_lease(ttl: object, name: str = "ttl") -> float:
    """Return a valid lease: seconds > 0 and at most MAX_LEASE; else ValueError."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_LEASE:
        raise ValueError(
            f"{name} is seconds > 0, at most {MAX_LEASE:.0f} (100 years; a lease must end), not {ttl!r}"
        )
    return float(ttl)


def lock_name(key: str) -> str:
    """A fixed-length name for the lock of ``key`` (any key, however long)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


#: set in a thread while it makes one try of an AsyncLock, whose acquire() tells the events
LOOP_TRY = threading.local()


class Lock(ABC):
    """The lock of one key of one backend; not re-entrant.

    Use it as a context manager, or call :meth:`acquire` and :meth:`release`.
    ``timeout=None`` waits as long as it takes; ``timeout=0`` tries once.
    """

    #: longest pause between two tries of a held lock
    max_delay: float = 0.05

    def __init__(
        self,
        key: str,
        timeout: float | None,
        ttl: float,
        *,
        owner: object,
        clock: Callable[[], float],
        translating: Callable[[str, object], AbstractContextManager[object]],
    ) -> None:
        self.timeout = check_wait(timeout)
        self.ttl = check_lease(ttl)
        self.key = key
        #: what the lock belongs to, shown in its repr and errors (a backend)
        self.owner = owner
        self._clock = clock
        self._translating = translating
        self.token = os.urandom(16).hex()
        self._held = False
        self._pid = os.getpid()

    # -- what each store provides ---------------------------------------------

    @abstractmethod
    def _try_acquire(self) -> bool:
        """Take the lease if it is free or ran out (or renew our own); one try."""

    @abstractmethod
    def _release(self) -> bool:
        """End our lease; False if it was no longer ours."""

    @abstractmethod
    def _renew(self) -> bool:
        """Restart our lease; False if it was no longer ours or had run out."""

    @abstractmethod
    def _taken(self) -> bool:
        """Whether another holder has the lock now (asked after a release or renew that failed)."""

    def _wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def _in_this_process(self) -> None:
        """A Lock inherited through a fork is a new Lock of the child: the lease is the parent's.

        The child gets its own token, so that it can neither release nor renew the parent's
        lease, nor take it as its own (a try with the parent's token would renew it).
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.token = os.urandom(16).hex()
            self._held = False

    # -- the public API -----------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether this object acquired the lock and has not released it (the lease may have run out)."""
        self._in_this_process()
        return self._held

    def acquire(self) -> Lock:
        """Wait for the lock and take it; return self.

        Raises LockTimeoutError after ``timeout`` seconds; the lease of a
        holder that stopped renewing ends after its ``ttl``.
        """
        self._in_this_process()
        if self._held:
            raise self._error(LockError, "already held by this Lock (locks are not re-entrant)")
        if HUB.on:
            HUB.emit(self.owner, "lock", self.key, "attempted")
        start = time.monotonic()
        delay = FIRST_DELAY
        tries = 1
        while not self._try_or_abandon():
            waited = time.monotonic() - start
            if self.timeout is not None and waited >= self.timeout:
                raise self._timed_out(waited, tries)
            pause = delay * random.uniform(0.5, 1.0)  # jitter, not secrecy
            self._wait(pause if self.timeout is None else min(pause, self.timeout - waited))
            delay = min(delay * 2, self.max_delay)
            tries += 1
        self._held = True
        if HUB.on:
            HUB.emit(
                self.owner, "lock", self.key, "acquired", duration=time.monotonic() - start, attempts=tries
            )
        return self

    def try_acquire(self) -> bool:
        """Take the lock if it is free, in one try, without waiting; say whether it was taken.

        What :class:`backends.aio.AsyncLock` waits with (its acquire() tells the events then)."""
        self._in_this_process()
        if self._held:
            raise self._error(LockError, "already held by this Lock (locks are not re-entrant)")
        if not self._try_or_abandon():
            return False
        self._held = True
        if HUB.on and not getattr(LOOP_TRY, "on", False):
            HUB.emit(self.owner, "lock", self.key, "acquired", attempts=1)
        return True

    def _timed_out(self, waited: float, tries: int) -> LockTimeoutError:
        if HUB.on:  # the error of a wait that ran out after ``tries`` tries, its event told
            HUB.emit(self.owner, "lock", self.key, "timed out", duration=waited, attempts=tries)
        return self._error(
            LockTimeoutError,
            f"not acquired within {self.timeout:g} s: another holder has it "
            "(a lease ends at the latest ttl seconds after its holder last renewed it)",
        )

    def _try_or_abandon(self) -> bool:
        """One try; if it fails with an error, undo what it may have done before raising.

        A remote store may have applied a write whose answer never came:
        the lock would then be ours without our knowing, and block everyone
        (us included) for its whole lease.
        """
        try:
            return self._guarded(self._try_acquire)
        except BackendError as failed:
            try:
                self._guarded(self._abandon)
            except BackendError as also:
                if sys.version_info >= (3, 11):
                    failed.add_note(f"the lock may stay taken until its lease ends: {also}")
            raise

    def _abandon(self) -> bool:
        """Give up a lock a failed try may have taken; local stores never lose an answer."""
        return True

    def release(self) -> None:
        """Release the lock.

        Raises LockError if the lease had run out and another holder has
        the lock now: the section was then not exclusive. A lease that ran
        out while nobody took the lock releases fine (the key is free), and
        so does a release repeated after its answer was lost.
        """
        self._in_this_process()
        if not self._held:
            raise self._error(LockError, "released but not held")
        self._held = False
        if not self._guarded(self._release) and self._guarded(self._taken):
            raise self._lost("release")
        if HUB.on:
            HUB.emit(self.owner, "lock", self.key, "released")

    def while_held(self, action: Callable[[], object]) -> bool:
        """Run ``action`` only while the lease is still ours; return False, without running it, if not.

        No other holder can take the lock while ``action`` runs: on the
        filesystem and in memory the lease is checked and ``action`` run
        under the lease's own lock; elsewhere the lease is renewed first,
        and stays ours for ``ttl`` seconds from there. For work that must
        never land after a lost lease (a tier filling its cache).
        """
        self._in_this_process()
        if not self._held:
            raise self._error(LockError, "used but not held")
        return self._guarded(lambda: self._while_held(action))

    def _while_held(self, action: Callable[[], object]) -> bool:
        # The renewed lease is ours for ttl seconds: no waiter takes it over sooner.
        if not self._renew():
            return False
        action()
        return True

    def renew(self) -> None:
        """Restart the lease for another ``ttl`` seconds.

        LockError if the lease had run out, saying whether another holder
        took the lock or nobody holds it now (then our stale lease is
        dropped): either way the section was not guaranteed exclusive for
        the gap, so it is not continued as if it had been.
        """
        self._in_this_process()
        if not self._held:
            raise self._error(LockError, "renewed but not held")
        if not self._guarded(self._renew):
            self._held = False
            if self._guarded(self._taken):
                raise self._lost("renew")
            self._guarded(self._release)  # our stale lease, if the store keeps it: free the key
            if HUB.on:
                HUB.emit(self.owner, "lock", self.key, "lost")
            raise self._error(
                LockError,
                f"the lease ({self.ttl:g} s) ran out before renew; nobody holds the lock now "
                "(the section was not exclusive for the gap: acquire the lock again)",
            )
        if HUB.on:
            HUB.emit(self.owner, "lock", self.key, "renewed")

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        try:
            self.release()
        except LockError as lost:
            if exc is None:
                raise
            if sys.version_info >= (3, 11):
                exc.add_note(str(lost))  # the body's own error stays the one raised
        return False

    def __repr__(self) -> str:
        state = "held" if self.held else "not held"
        return f"<{type(self).__name__} {self.key!r} of {self.owner!r}, ttl={self.ttl:g}, {state}>"

    # -- helpers ------------------------------------------------------------------

    def _error(self, cls: type[E], reason: str) -> E:
        return cls(reason, backend=repr(self.owner), operation="lock", key=self.key)

    def _lost(self, call: str) -> LockError:
        if HUB.on:
            HUB.emit(self.owner, "lock", self.key, "lost")
        return self._error(
            LockError,
            f"the lease ({self.ttl:g} s) ran out and another holder took the lock before {call}: "
            "the section was not exclusive",
        )

    def _guarded(self, action: Callable[[], bool]) -> bool:
        with self._translating("lock", self.key):
            return action()

    def _now(self) -> float:
        return self._clock()

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)


class Leases:
    """A process's table of leases (key -> token, end), for the memory store."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float]] = {}
        self.changed = threading.Condition()

    def forked(self) -> None:
        """In a forked child: a new condition (a parent's thread may have held it); the leases stay."""
        self.changed = threading.Condition()


class MemoryLock(Lock):
    """A lease in a :class:`Leases` table; waiters wake when it is released."""

    def __init__(self, key: str, timeout: float | None, ttl: float, leases: Leases, **context: Any) -> None:
        super().__init__(key, timeout, ttl, **context)
        self._leases = leases

    def _try_acquire(self) -> bool:
        with self._leases.changed:
            now = self._now()
            holder = self._leases.held.get(self.key)
            if holder is not None and holder[0] != self.token and holder[1] > now:
                return False
            self._leases.held[self.key] = (self.token, now + self.ttl)
            return True

    def _renew(self) -> bool:
        with self._leases.changed:
            holder, now = self._leases.held.get(self.key), self._now()
            if holder is None or holder[0] != self.token or holder[1] <= now:
                return False
            self._leases.held[self.key] = (self.token, now + self.ttl)
            return True

    def _taken(self) -> bool:
        with self._leases.changed:
            holder = self._leases.held.get(self.key)
            return holder is not None and holder[0] != self.token and holder[1] > self._now()

    def _release(self) -> bool:
        with self._leases.changed:
            holder = self._leases.held.get(self.key)
            if holder is None or holder[0] != self.token:
                return False
            del self._leases.held[self.key]
            self._leases.changed.notify_all()
            return True

    def _while_held(self, action: Callable[[], object]) -> bool:
        with self._leases.changed:
            holder = self._leases.held.get(self.key)
            if holder is None or holder[0] != self.token:
                return False
            action()
            return True

    def _wait(self, seconds: float) -> None:
        with self._leases.changed:
            self._leases.changed.wait(seconds)
