"""AsyncLock: a backend's lock for ``async with`` (:meth:`backends.aio.AsyncBackend.lock`).

Each try to take the lock is one hop to the twin's threads; the waits
between tries are ``asyncio.sleep``, never a parked thread. A lock a
cancelled ``acquire`` took is released, never leaked; one still held when
the twin closes is released by ``aclose()`` (the twin notes every lock taken
through it, in the thread that took it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .errors import BackendError, LockError, StoreError
from .events import HUB
from .locks import FIRST_DELAY, LOOP_TRY, Lock

if TYPE_CHECKING:
    from .aio import AsyncBackend

__all__ = ["AsyncLock", "let_go"]

log = logging.getLogger("backends")


class AsyncLock:
    """A backend's lock for ``async with``: each try is one hop; the waits are ``asyncio.sleep``."""

    def __init__(self, owner: AsyncBackend[Any], lock: Lock) -> None:
        self.owner = owner
        self.lock = lock
        #: a cancelled try and the give-back of what it took: done once both ended
        self._settling: Future[None] | None = None
        self._pid = os.getpid()

    @property
    def held(self) -> bool:
        """Whether this lock was acquired and not released."""
        return self.lock.held

    async def acquire(self) -> AsyncLock:
        """Take the lock, trying again with ``asyncio.sleep`` pauses; LockTimeoutError after ``timeout``.

        Tells the events of the blocking ``acquire``: attempted, then acquired
        (the wait as duration, the tries as attempts) or timed out.
        """
        lock = self.lock
        timeout = lock.timeout
        if HUB.on:
            HUB.emit(lock.owner, "lock", lock.key, "attempted")
        start = time.monotonic()
        delay = FIRST_DELAY
        tries = 1
        while not await self._try():
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise lock._timed_out(waited, tries)
            pause = delay * random.uniform(0.5, 1.0)  # jitter, not secrecy
            await asyncio.sleep(pause if timeout is None else min(pause, timeout - waited))
            delay = min(delay * 2, lock.max_delay)
            tries += 1
        if HUB.on:
            HUB.emit(
                lock.owner, "lock", lock.key, "acquired", duration=time.monotonic() - start, attempts=tries
            )
        return self

    async def _try(self) -> bool:
        """One try in a thread. If the await is cancelled, a try that took the lock gives it back."""
        if self._pid != os.getpid():
            # Forked: a give-back in the parent's pool is not the child's, and never ends here
            # (the child's Lock is a new one: Lock._in_this_process).
            self._pid, self._settling = os.getpid(), None
        if self._settling is not None:
            # A cancelled try of this lock, or its give-back, may still run in a thread: a
            # try now would find the lock held by itself, or be undone by that give-back.
            await asyncio.wait([asyncio.wrap_future(self._settling)])
        future = self.owner._submit(self._try_in_thread, "lock")
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            settled: Future[None] = Future()
            self._settling = settled
            future.add_done_callback(lambda done: self._release_if_taken(done, settled))
            raise

    def _try_in_thread(self) -> bool:
        # Noted as held in the thread, before the future is done: aclose(),
        # which waits for the pool, then finds it and releases it.
        LOOP_TRY.on = True  # its events are acquire()'s, told in the loop
        try:
            taken = self.lock.try_acquire()
        finally:
            LOOP_TRY.on = False
        if taken:
            with self.owner._guard:
                self.owner._held.add(self)
        return taken

    def _release_in_thread(self) -> None:
        with self.owner._guard:
            self.owner._held.discard(self)
        self.lock.release()

    def _release_if_taken(self, done: Future[bool], settled: Future[None]) -> None:
        # Run at once in the loop's thread if the try was already done. The
        # release is not made here but in the pool, which aclose() waits for
        # before it looks at the locks still held and closes the backend: made
        # here, it raced aclose() in its thread, which found the lock already
        # gone from _held and closed the backend under the release (a lock left
        # taken for its whole lease, a warning logged), or released it twice.
        if not done.cancelled() and done.exception() is None and done.result():
            try:
                giving = self.owner._submit(self._let_go_in_thread, "lock")
            except StoreError:
                pass  # aclose() began: the lock, still in _held, is its to release
            else:
                giving.add_done_callback(lambda _: settled.set_result(None))
                return
        settled.set_result(None)

    def _let_go_in_thread(self) -> None:
        with self.owner._guard:
            self.owner._held.discard(self)
        let_go(self.lock)

    async def release(self) -> None:
        """Release the lock (LockError if the lease ran out and another holder took it)."""
        await asyncio.wrap_future(self.owner._submit(self._release_in_thread, "lock"))

    async def renew(self) -> None:
        """Restart the lease for another ``ttl`` seconds."""
        await asyncio.wrap_future(self.owner._submit(self.lock.renew, "lock"))

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if not self.lock.held and self.owner._closed:
            if exc is None:  # the body's own error, if any, stays the one raised
                raise LockError(
                    "released by aclose() while the body ran: the section was not exclusive from then",
                    backend=repr(self.lock.owner),
                    operation="lock",
                    key=self.lock.key,
                )
            return False
        try:
            future = self.owner._submit(self._release_in_thread, "lock")
        except StoreError:
            return False  # aclose() began: it releases the lock once the calls before it are done
        # Released even when the body was cancelled: the release runs to its end in a thread.
        try:
            await asyncio.shield(asyncio.wrap_future(future))
        except LockError as lost:
            if exc is None:
                raise
            if sys.version_info >= (3, 11):
                exc.add_note(str(lost))  # the body's own error stays the one raised, as Lock.__exit__
        return False


def let_go(lock: Lock) -> None:
    """Release a lock nobody awaits any more; a lost lease is logged (there is no caller to tell)."""
    try:
        if lock.held:
            lock.release()
    except BackendError as lost:
        log.warning("%s", lost)
