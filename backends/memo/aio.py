"""AsyncCachedFunction: ``@cached`` on an ``async def``, through the store's coroutine twin.

The same steps as :class:`~backends.memo.function.CachedFunction`, awaited:
loads, writes and the key's lock go through ``store.aio()`` (one twin per
decorated function, made at its first call), so the event loop never
blocks on the store; a lock is waited for with ``asyncio.sleep``. The twin
holds no loop, so one decorated function serves any number of loops (in
any number of threads). A stale value's refresh is a task on the caller's loop.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ..aio import AsyncBackend
from ..aiolock import AsyncLock
from ..base import MISSING
from ..errors import BackendError, CorruptValueError, LockError, LockTimeoutError
from .entries import Found, error_entry, value_entry
from .function import CORRUPT, CachedFunction, log
from .holding import forget, hold, holding_of

__all__ = ["AsyncCachedFunction"]

P = ParamSpec("P")
R = TypeVar("R")

Call = Callable[[], Awaitable[Any]]


class AsyncCachedFunction(CachedFunction[P, R]):
    """An ``async def`` decorated with :func:`~backends.cached`: ``await f(...)``."""

    def _start(self) -> None:
        super()._start()
        self._tasks: set[asyncio.Task[None]] = set()
        self._twin_made: AsyncBackend[Any] | None = None

    @property
    def _twin(self) -> AsyncBackend[Any]:
        twin = self._twin_made
        if twin is None:
            with self._guard:
                if self._twin_made is None:
                    self._twin_made = self.store.aio()
                twin = self._twin_made
        return twin

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:  # type: ignore[override]
        key = self._rule(args, kwargs)
        return await self._aget(key, lambda: self.function(*args, **kwargs))  # type: ignore[no-any-return, arg-type, return-value]

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:  # type: ignore[override]
        """Drop the entry of this call; True if there was one."""
        return await self._twin.delete(self._rule(args, kwargs))

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:  # type: ignore[override]
        """Run the function for this call under its key's lock, store and return the result."""
        key = self._rule(args, kwargs)
        lock = self._alock(key, self.options.lock_timeout)
        held = await self._aacquire(lock, key)
        try:
            result = await self._acompute(key, lambda: self.function(*args, **kwargs), await self._alook(key))  # type: ignore[arg-type, return-value]
        except BaseException as exc:
            await self._alet_go(lock if held else None, exc)
            raise
        await self._arelease(lock if held else None, key)
        return result  # type: ignore[no-any-return]

    async def join(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        """Wait for the background refreshes started on this loop; True once none runs."""
        tasks = [task for task in self._tasks if task.get_loop() is asyncio.get_running_loop()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return not any(not task.done() for task in tasks)

    # -- one call ------------------------------------------------------------------------

    async def _aget(self, key: str, call: Call) -> Any:
        found = await self._alook(key)
        if found is not None:
            now = self.options.clock()
            if found.fresh(now):
                return self._hit(key, found)
            if found.error is None and 0 <= found.stale_for(now) < self.options.stale_while_revalidate:
                await self._arevalidate(key, call)
                return self._stale(key, found)
        lock = self._alock(key, self.options.lock_timeout)
        held = await self._aacquire(lock, key)
        try:
            again = await self._alook_again(key) if held else None
            if again is not None and again.fresh(self.options.clock()):
                result = self._hit(key, again)
            else:
                result = await self._acompute(key, call, again or found, miss=True)
        except BaseException as exc:
            await self._alet_go(lock if held else None, exc)
            raise
        await self._arelease(lock if held else None, key)
        return result

    async def _acompute(self, key: str, call: Call, found: Found | None, *, miss: bool = False) -> Any:
        later = miss and self._stale_on_error(found)  # as CachedFunction._compute: one outcome a call
        if miss and not later:
            self._tell(key, "miss")
        self._tell(key, "computed")
        try:
            result = await call()
        except Exception as exc:
            if self._stale_on_error(found):
                assert found is not None
                self._tell(key, "failed", type(exc).__name__)
                return self._stale(key, found)
            if later:
                self._tell(key, "miss")
            if isinstance(exc, self.options.cache_errors):
                ttl = self.options.error_timeout
                await self._adump(key, error_entry(exc, self.options.clock(), ttl), ttl)
            self._tell(key, "failed", type(exc).__name__)
            raise
        if later:
            self._tell(key, "miss")
        if result is not None or self.options.cache_none:
            ttl = self.options.none_timeout if result is None else self.options.timeout
            await self._adump(key, value_entry(result, self.options.clock(), ttl), ttl)
        return result

    # -- refreshing in the background ----------------------------------------------------

    async def _arevalidate(self, key: str, call: Call) -> None:
        with self._guard:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
        task = asyncio.get_running_loop().create_task(self._arefresh_stale(key, call))
        self._tasks.add(task)  # a strong reference: the loop keeps only a weak one
        task.add_done_callback(self._tasks.discard)

    async def _arefresh_stale(self, key: str, call: Call) -> None:
        try:
            if self._tiers and await self._alook_again(key, fresh_only=True) is not None:
                return
            lock = self._alock(key, 0)
            if not await self._aacquire(lock, key, quiet=True):
                return
            try:
                again = await self._alook_again(key)
                if again is None or not again.fresh(self.options.clock()):
                    await self._acompute(key, call, None)
            except BaseException as exc:  # CancelledError too (a loop that ends): the lock goes back
                await self._alet_go(lock, exc)
                raise
            await self._arelease(lock, key)
        except Exception as exc:
            self._tell(key, "refresh failed", type(exc).__name__)
            log.warning("background refresh of %s failed: %s", self._name, type(exc).__name__)
        finally:
            self._done(key, None)

    # -- the store, through the twin -------------------------------------------------------

    async def _alook(self, key: str, *, again: bool = False) -> Found | None:
        try:
            stored = await self._twin.load(key, MISSING)
        except CorruptValueError:
            stored = CORRUPT
        return None if stored is MISSING else self._read(key, stored, again)

    async def _alook_again(self, key: str, *, fresh_only: bool = False) -> Found | None:
        found = await self._alook(key, again=True)
        if found is not None and self._tiers and not found.fresh(self.options.clock()):
            await asyncio.to_thread(self._drop_copies, key)  # local caches: a thread, not the twin's pool
            found = await self._alook(key, again=True)
        if fresh_only and (found is None or not found.fresh(self.options.clock())):
            return None
        return found

    async def _adump(self, key: str, entry: dict[str, Any], ttl: float | None) -> None:
        """Store ``entry``; under a lock whose lease may have run out, only once renewed (see holding.py)."""
        holding = holding_of(key)
        if holding is not None and not holding.covers(self.options.clock()):
            try:
                await holding.lock.renew()
            except LockError:
                holding.lost = True  # another caller may have stored a newer value: ours is not written
                self._tell(key, "lost")
                return
        await self._awrite(key, entry, ttl)

    async def _awrite(self, key: str, entry: dict[str, Any], ttl: float | None) -> None:
        if self._timed:
            await self._twin.dump(key, entry, timeout=self.options.kept_for(ttl))
        else:
            await self._twin.dump(key, entry)

    def _alock(self, key: str, timeout: float | None) -> AsyncLock:
        return self._twin.lock(key, timeout=timeout, ttl=self.options.lease)

    async def _aacquire(self, lock: AsyncLock, key: str, *, quiet: bool = False) -> bool:
        since = self.options.clock()
        try:
            await lock.acquire()
        except LockTimeoutError:
            if quiet:
                return False
            self._tell(key, "lock timed out")
            if self.options.on_lock_timeout == "raise":
                raise
            return False
        hold(key, lock, since, lock.lock.ttl)
        return True

    async def _arelease(self, lock: AsyncLock | None, key: str) -> None:
        if lock is None:
            return
        holding = forget(lock)
        try:
            await lock.release()
        except LockError:
            if holding is None or not holding.lost:  # told once, when its write was skipped
                self._tell(key, "lost")

    async def _alet_go(self, lock: AsyncLock | None, exc: BaseException) -> None:
        if lock is not None:
            forget(lock)
        if lock is None or not lock.held:
            return
        try:
            await lock.release()
        except BackendError as also:
            if sys.version_info >= (3, 11):
                exc.add_note(f"the key's lock was not released: {also}")
