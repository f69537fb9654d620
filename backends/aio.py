"""``backends.aio``: every backend as coroutines, for asyncio programs.

:class:`AsyncBackend` wraps any backend (``backend.aio()`` makes one): each
public call is a coroutine that runs the blocking call in a bounded thread
pool the wrapper owns, so there is one copy of every store's semantics, and
no event loop is ever driven from another thread (the bug class of
sync-over-async bridges: deadlocks at shutdown, after fork, inside a running
loop). Iteration pulls one page of keys per hop; bulk calls are one hop.
Locks wait between tries with ``asyncio.sleep``, never parking a thread
(:class:`AsyncLock`, in :mod:`backends.aiolock`).

Cancelling an awaiting task cancels the await, not the call: a call already
running in a thread finishes (a write is atomic, so it happened or it did
not, as when an answer is lost), and a lock a cancelled ``acquire`` took is
released, never leaked.

Every option of a sync call is an option of its twin: the twin of a
backend class is made from it (:func:`twin_class`), each call taking the
sync call's parameters (``inspect.signature`` says the same) and passing
them on, so the sync call checks them, before any I/O, with its own errors.
Closing either closes both: ``aclose()`` waits for the calls already
started, releases the locks still held through the twin, then closes the
backend; after it, and after ``backend.close()``, every call raises
StoreError.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
import os
import threading
import types
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, overload

from .aiolock import AsyncLock, let_go
from .base import MISSING, BaseBackend, Versioned, register_twin
from .errors import StoreError
from .hooks import Missing, Unchanged

__all__ = ["NOT_MIRRORED", "PAGE", "AsyncBackend", "AsyncLock", "twin_class"]

V = TypeVar("V")
T = TypeVar("T")

#: keys fetched per hop of ``async for`` and of ``list``
PAGE: Final = 1000
#: threads of a wrapper whose backend does not say how many calls it runs at once
DEFAULT_WORKERS: Final = 16
#: public attributes of a backend class that have no coroutine twin: the twin itself, and the clock
NOT_MIRRORED: Final = frozenset({"aio", "clock"})
#: every twin of this process, given fresh threads in a forked child (a parent's threads are not there)
_TWINS: weakref.WeakSet[AsyncBackend[Any]] = weakref.WeakSet()


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
        self._closed = False
        self._closing: Future[None] | None = None  # done once aclose() released the locks and closed
        self._start()
        # The class of this backend's class: every public call with the sync call's parameters.
        plain = type(self).__mro__[1] if "_mirrors" in type(self).__dict__ else type(self)
        self.__class__ = twin_class(plain, type(backend))
        _TWINS.add(self)

    def _start(self) -> None:
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="backends-aio")
        self._held: set[AsyncLock] = set()  # the locks taken through this twin and not released
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"AsyncBackend({self.backend!r})"

    @property
    def closed(self) -> bool:
        """Whether the twin (``aclose()``) or its backend (``close()``) was closed: calls raise StoreError."""
        return self._closed or self.backend.closed

    def _refusal(self, call: object) -> StoreError:
        name = call if isinstance(call, str) else getattr(call, "__name__", "")
        operation = name.strip("_") if name.isidentifier() else "call"
        return StoreError(
            "the backend is closed (aclose() was called); make a new one",
            backend=repr(self.backend),
            operation=operation,
        )

    def _submit(self, call: Callable[[], T], named: object = None) -> Future[T]:
        """``call`` on the pool; StoreError once the twin is closed (never the pool's RuntimeError)."""
        if self._closed:
            raise self._refusal(named or call)
        try:
            return self._pool.submit(call)
        except RuntimeError as exc:  # aclose() shut the pool between the check and the submit
            raise self._refusal(named or call) from exc

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking call in the pool; a cancelled await leaves the call to finish."""
        if not self._blocks:
            if self._closed:
                raise self._refusal(call)
            return call(*args, **kwargs)  # a store in memory: a hop to a thread would cost 100x the call
        future = self._submit(functools.partial(call, *args, **kwargs), call)
        return await asyncio.wrap_future(future)

    # -- single keys --------------------------------------------------------------------

    @overload
    async def load(self, key: str) -> V | None: ...
    @overload
    async def load(self, key: str, default: T) -> V | T: ...
    async def load(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return await self._run(self.backend.load, key, default)

    async def dump(self, key: str, value: V, *, if_absent: bool = False, **options: Any) -> bool:
        """Store ``value`` under ``key`` (as ``dump``, with its options: ``timeout``, ``if_match``...)."""
        return await self._run(self.backend.dump, key, value, if_absent=if_absent, **options)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return await self._run(self.backend.delete, key)

    async def contains(self, key: str) -> bool:
        """Whether ``key`` is present (``key in backend``), without reading the value."""
        return await self._run(self.backend.__contains__, key)

    async def pop(self, key: str, default: Any = MISSING) -> Any:
        """Remove ``key`` and return its value (or ``default``; KeyError without one)."""
        return await self._run(self.backend.pop, key, default)

    async def setdefault(self, key: str, default: V = None) -> V:  # type: ignore[assignment]
        """The value of ``key``, storing ``default`` first if it is absent (atomic)."""
        return await self._run(self.backend.setdefault, key, default)

    async def load_if_changed(self, key: str, etag: str | None = None) -> Versioned[V] | Missing | Unchanged:
        """The conditional load a tier revalidates with (as ``load_if_changed``)."""
        return await self._run(self.backend.load_if_changed, key, etag)

    # -- bulk: one hop each -----------------------------------------------------------------

    async def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """``{key: value}`` of the keys that are present."""
        return await self._run(self.backend.load_many, _listed(keys))

    async def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Store every pair."""
        pairs = builtins.list(items.items()) if isinstance(items, Mapping) else _listed(items)
        await self._run(self.backend.dump_many, pairs)

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Remove the keys; how many existed."""
        return await self._run(self.backend.delete_many, _listed(keys))

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

    async def values(self) -> AsyncIterator[V]:
        """Every value, as :meth:`items`."""
        async for _, value in self.items():
            yield value

    async def _pages(self, start: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        async for page in self._page_lists(start):
            for entry in page:
                yield entry

    async def _page_lists(self, start: Callable[[], Iterator[T]]) -> AsyncIterator[builtins.list[T]]:
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

    # -- views: thin calls of the backend's -------------------------------------------------

    def readonly(self) -> AsyncBackend[V]:
        """The twin of ``backend.readonly()``, with its own threads (closing it leaves this twin open)."""
        return self.backend.readonly().aio(max_workers=self.max_workers)

    def namespace(self, prefix: str) -> AsyncBackend[V]:
        """The twin of ``backend.namespace(prefix)``, with its own threads (closing it leaves this open)."""
        return self.backend.namespace(prefix).aio(max_workers=self.max_workers)

    # -- lifetime -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the twin and its backend; a second call only waits for the first to end.

        New calls raise StoreError at once; the calls already started run to
        their end on the open backend; the locks still held through the twin
        are released; then the backend is closed. Cancelling the await
        leaves the close to finish in its thread.
        """
        if self._closing is not None:
            # Another call is closing: return once it is done (its error, if any, is its own),
            # never while the locks are still being released and the backend is open.
            await asyncio.wait([asyncio.wrap_future(self._closing)])
            return
        self._closed = True
        self._closing = Future()
        # Its own thread, not the loop's executor (a cancel while queued there dropped the close); shielded.
        closer = ThreadPoolExecutor(1, thread_name_prefix="backends-aio-close")
        finished = closer.submit(self._finish)
        closer.shutdown(wait=False)
        await asyncio.shield(asyncio.wrap_future(finished))

    async def close(self) -> None:
        """Same as :meth:`aclose` (the twin of ``backend.close()``)."""
        await self.aclose()

    def _finish(self) -> None:
        assert self._closing is not None
        try:
            self._pool.shutdown(wait=True)  # what was submitted before aclose() runs to its end
            try:
                with self._guard:
                    held, self._held = builtins.list(self._held), set()
                for lock in held:
                    let_go(lock.lock)
            finally:
                self.backend.close()
        finally:
            self._closing.set_result(None)  # a concurrent aclose() returns now

    def _after_fork(self) -> None:
        # A forked child has none of its parent's threads, but the pool would
        # count them as idle and queue every call for them: it would hang.
        self._start()
        if self._closing is not None and not self._closing.done():
            # Forked while the parent's aclose() ran: that close goes on there, not here;
            # the child's own aclose() must not wait for a thread it does not have.
            finished: Future[None] = Future()
            finished.set_result(None)
            self._closing = finished

    async def __aenter__(self) -> AsyncBackend[V]:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        """Any other public call of the backend (``stat``, ``url``, ``purge``...), as a coroutine."""
        if name.startswith("_") or name == "backend":  # "backend": not set yet, in a failed __init__
            raise AttributeError(name)
        call = getattr(self.backend, name)
        if not callable(call):
            return call

        @functools.wraps(call)
        async def run(*args: Any, **kwargs: Any) -> Any:
            return await self._run(call, *args, **kwargs)

        return run


def _listed(items: Iterable[T]) -> Any:
    """``items`` as a list, made in the loop; a str (or anything not iterable) as it is, for the
    sync call to refuse with its own error (``list("ab")`` would be the keys ``a`` and ``b``)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        return items
    return builtins.list(items)


@functools.lru_cache(maxsize=256)
def twin_class(
    base: type[AsyncBackend[Any]], backend_class: type[BaseBackend[Any, Any]]
) -> type[AsyncBackend[Any]]:
    """The twin class of ``backend_class``: ``base`` with a coroutine (or async iterator) for each
    of its public calls, taking the sync call's parameters, as ``inspect.signature`` shows.

    A call ``base`` writes natively keeps its own (a test holds it to the
    sync call's); one ``AsyncBackend`` merely passes on is copied under the
    sync signature; any other is made here, passing its arguments on.
    """
    namespace: dict[str, Any] = {"_mirrors": backend_class, "__module__": base.__module__}
    for name in _public_calls(backend_class):
        sync = getattr(backend_class, name)
        owner = next((klass for klass in base.__mro__ if name in klass.__dict__), None)
        if owner is not None and owner is not AsyncBackend:
            continue  # native in ``base`` (the Redis twin's load, dump...)
        if owner is AsyncBackend:
            namespace[name] = _copy(AsyncBackend.__dict__[name], sync)
        else:
            namespace[name] = _mirror(name, sync)
    return types.new_class(base.__name__, (base,), {}, lambda body: body.update(namespace))


def _public_calls(backend_class: type) -> builtins.list[str]:
    return [
        name
        for name in dir(backend_class)
        if not name.startswith("_")
        and name not in NOT_MIRRORED
        and callable(getattr(backend_class, name))
        and not isinstance(inspect.getattr_static(backend_class, name), (property, type))
    ]


def _copy(function: Callable[..., Any], sync: Callable[..., Any]) -> Callable[..., Any]:
    copied = types.FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    functools.update_wrapper(copied, function)
    del copied.__wrapped__  # type: ignore[attr-defined]
    copied.__kwdefaults__ = function.__kwdefaults__
    copied.__signature__ = inspect.signature(sync)  # type: ignore[attr-defined]
    return copied


def _mirror(name: str, sync: Callable[..., Any]) -> Callable[..., Any]:
    run: Callable[..., Any]
    if inspect.isgeneratorfunction(inspect.unwrap(sync)):

        def run(self: AsyncBackend[Any], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            call = getattr(self.backend, name)
            return self._pages(lambda: call(*args, **kwargs))  # a page per hop, as list()

    else:

        async def run(self: AsyncBackend[Any], *args: Any, **kwargs: Any) -> Any:
            return await self._run(getattr(self.backend, name), *args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = sync.__doc__
    setattr(run, "__signature__", inspect.signature(sync))  # noqa: B010 - read by inspect.signature
    return run


def _after_fork() -> None:
    for twin in builtins.list(_TWINS):
        twin._after_fork()


register_twin(BaseBackend, AsyncBackend)

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
