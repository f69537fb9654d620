"""``backends.aio``: every backend as coroutines, for asyncio programs.

:class:`AsyncBackend` wraps any backend (``backend.aio()`` makes one): each
public call is a coroutine that runs the blocking call in a bounded thread
pool the wrapper owns, so there is one copy of every store's semantics, and
no event loop is ever driven from another thread (the bug class of
sync-over-async bridges: deadlocks at shutdown, after fork, inside a running
loop). Iteration pulls one page of keys per hop; bulk calls are one hop.
Locks wait between tries with ``asyncio.sleep``, never parking a thread.

Cancelling an awaiting task cancels the await, not the call: a call already
running in a thread finishes (a write is atomic, so it happened or it did
not, as when an answer is lost), and a lock a cancelled ``acquire`` took is
released, never leaked.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from types import TracebackType
from typing import Any, Final, Generic, Literal, TypeVar, overload

from .base import MISSING, BaseBackend, Versioned
from .errors import LockTimeoutError
from .hooks import Missing, Unchanged
from .locks import FIRST_DELAY, Lock

__all__ = ["PAGE", "AsyncBackend", "AsyncLock"]

V = TypeVar("V")
T = TypeVar("T")

#: keys fetched per hop of ``async for`` and of ``list``
PAGE: Final = 1000
#: threads of a wrapper whose backend does not say how many calls it runs at once
DEFAULT_WORKERS: Final = 16


class AsyncBackend(Generic[V]):
    """The coroutine twin of ``backend``: the same calls, awaited.

    ``max_workers`` bounds the threads (default: the backend's own
    ``max_workers``, an S3 backend's connection pool, else 16).
    """

    def __init__(self, backend: BaseBackend[V, Any], *, max_workers: int | None = None) -> None:
        if not isinstance(backend, BaseBackend):
            raise TypeError(f"AsyncBackend wraps a backend, not {type(backend).__name__}")
        workers = max_workers if max_workers is not None else getattr(backend, "max_workers", DEFAULT_WORKERS)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"max_workers is a whole number from 1, not {workers!r}")
        self.backend = backend
        self.max_workers = workers
        self._blocks = backend._blocks
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="backends-aio")

    def __repr__(self) -> str:
        return f"AsyncBackend({self.backend!r})"

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking call in the pool; a cancelled await leaves the call to finish."""
        if not self._blocks:
            return call(*args, **kwargs)  # a store in memory: a hop to a thread would cost 100x the call
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    # -- single keys --------------------------------------------------------------------

    @overload
    async def load(self, key: str) -> V | None: ...
    @overload
    async def load(self, key: str, default: T) -> V | T: ...
    async def load(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return await self._run(self.backend.load, key, default)

    async def dump(self, key: str, value: V, *, if_absent: bool = False) -> bool:
        """Store ``value`` under ``key`` (as ``dump``)."""
        return await self._run(self.backend.dump, key, value, if_absent=if_absent)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return await self._run(self.backend.delete, key)

    async def contains(self, key: str) -> bool:
        """Whether ``key`` is present (``key in backend``), without reading the value."""
        return await self._run(self.backend.__contains__, key)

    async def pop(self, key: str, default: Any = MISSING) -> Any:
        """Remove ``key`` and return its value (or ``default``; KeyError without one)."""
        return await self._run(self.backend.pop, key, default)

    async def setdefault(self, key: str, default: V) -> V:
        """The value of ``key``, storing ``default`` first if it is absent (atomic)."""
        return await self._run(self.backend.setdefault, key, default)

    async def load_if_changed(self, key: str, etag: str | None = None) -> Versioned[V] | Missing | Unchanged:
        """The conditional load a tier revalidates with (as ``load_if_changed``)."""
        return await self._run(self.backend.load_if_changed, key, etag)

    # -- bulk: one hop each -----------------------------------------------------------------

    async def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """``{key: value}`` of the keys that are present."""
        return await self._run(self.backend.load_many, builtins.list(keys))

    async def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Store every pair."""
        pairs = builtins.list(items.items()) if isinstance(items, Mapping) else builtins.list(items)
        await self._run(self.backend.dump_many, pairs)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove the keys; how many existed."""
        return await self._run(self.backend.delete_many, builtins.list(keys))

    async def clear(self) -> None:
        """Remove every key the backend owns."""
        await self._run(self.backend.clear)

    async def len(self) -> int:
        """The number of keys (``len(backend)``)."""
        return await self._run(self.backend.__len__)

    # -- listings: a page per hop ---------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pages(lambda: iter(self.backend))

    def keys(self) -> AsyncIterator[str]:
        """Every key, a page per hop."""
        return self._pages(lambda: iter(self.backend))

    def list(self, prefix: str = "", delimiter: str | None = "/") -> AsyncIterator[str]:
        """The keys and sub-folders below ``prefix``, sorted (as ``list``), a page per hop."""
        return self._pages(lambda: self.backend.list(prefix, delimiter))

    async def items(self) -> AsyncIterator[tuple[str, V]]:
        """Every pair, a page of keys and one ``load_many`` per hop."""
        async for page in self._page_lists(lambda: iter(self.backend)):
            for key, value in (await self.load_many(page)).items():
                yield key, value

    async def _pages(self, start: Callable[[], Iterator[str]]) -> AsyncIterator[str]:
        async for page in self._page_lists(start):
            for entry in page:
                yield entry

    async def _page_lists(self, start: Callable[[], Iterator[str]]) -> AsyncIterator[builtins.list[str]]:
        iterator = await self._run(start)
        try:
            while page := await self._run(lambda: builtins.list(islice(iterator, PAGE))):
                yield page
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                await self._run(close)  # a listing's open folder or connection, released at once

    # -- locks --------------------------------------------------------------------------------

    def lock(self, key: str, *, timeout: float | None = 10, ttl: float = 60) -> AsyncLock:
        """The lock of ``key``, for ``async with backend.lock(key):`` (as ``lock``)."""
        return AsyncLock(self, self.backend.lock(key, timeout=timeout, ttl=ttl))

    # -- lifetime -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the backend and stop the wrapper's threads (calls running finish first)."""
        try:
            await self._run(self.backend.close)
        finally:
            self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncBackend[V]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        """Any other public call of the backend (``stat``, ``url``, ``purge``...), as a coroutine."""
        if name.startswith("_"):
            raise AttributeError(name)
        call = getattr(self.backend, name)
        if not callable(call):
            return call

        @functools.wraps(call)
        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self._run(call, *args, **kwargs)

        return run


class AsyncLock:
    """A backend's lock for ``async with``: each try is one hop; the waits are ``asyncio.sleep``."""

    def __init__(self, owner: AsyncBackend[Any], lock: Lock) -> None:
        self.owner = owner
        self.lock = lock

    @property
    def held(self) -> bool:
        """Whether this lock was acquired and not released."""
        return self.lock.held

    async def acquire(self) -> AsyncLock:
        """Take the lock, trying again with ``asyncio.sleep`` pauses; LockTimeoutError after ``timeout``."""
        timeout = self.lock.timeout
        start = time.monotonic()
        delay = FIRST_DELAY
        while not await self._try():
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise LockTimeoutError(
                    f"not acquired within {timeout:g} s: another holder has it",
                    backend=repr(self.lock.owner),
                    operation="lock",
                    key=self.lock.key,
                )
            pause = delay * random.uniform(0.5, 1.0)  # jitter, not secrecy
            await asyncio.sleep(pause if timeout is None else min(pause, timeout - waited))
            delay = min(delay * 2, self.lock.max_delay)
        return self

    async def _try(self) -> bool:
        """One try in a thread. If the await is cancelled, a try that took the lock gives it back."""
        future: Future[bool] = self.owner._pool.submit(self.lock.try_acquire)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_release_if_taken(self.lock))
            raise

    async def release(self) -> None:
        """Release the lock (LockError if the lease ran out and another holder took it)."""
        await self.owner._run(self.lock.release)

    async def renew(self) -> None:
        """Restart the lease for another ``ttl`` seconds."""
        await self.owner._run(self.lock.renew)

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        # Released even when the body was cancelled: the release runs to its end in a thread.
        future = self.owner._pool.submit(self.lock.release)
        await asyncio.shield(asyncio.wrap_future(future))
        return False


def _release_if_taken(lock: Lock) -> Callable[[Future[bool]], None]:
    def release(done: Future[bool]) -> None:
        if not done.cancelled() and done.exception() is None and done.result():
            lock.release()

    return release
