"""The async twin of a Redis backend: the hot calls native on ``redis.asyncio``.

``load``, ``contains``, ``load_many``, ``dump``, ``dump_many``, ``delete``,
``delete_many``, ``pop`` and ``len`` run the very plans the blocking store
runs (:mod:`.plans`), sent with a ``redis.asyncio`` client: thousands of
concurrent awaits share the connection pool, no thread each. There is one
client (and pool) and one batch of waiting loads per event loop, made at
the loop's first call: a twin used from two loops keeps them apart. Once
the twin or its backend is closed, every call raises StoreError. Every
other call (listings, locks, ``clear``, ``stat``, expiry) goes through the
thread pool of :class:`~backends.aio.AsyncBackend`, as for every store.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from ..aio import AsyncBackend
from ..base import MISSING, register_twin
from ..errors import StoreError, check_flag
from ..events import told
from ..hooks import Missing
from . import plans
from .client import make_async_client
from .scripts import run_script_async
from .store import RedisBackend

__all__ = ["AsyncRedisBackend"]

V = TypeVar("V")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
#: a load waiting for the next batch of loads sent together
Waiting = asyncio.Future[Any]


class AsyncRedisBackend(AsyncBackend[V]):
    """The :class:`~backends.aio.AsyncBackend` of a Redis backend, native where it pays."""

    backend: RedisBackend[V]

    def __init__(self, backend: RedisBackend[V], *, max_workers: int | None = None) -> None:
        super().__init__(backend, max_workers=max_workers)
        if backend.server_url is None:
            raise ValueError(
                "the async twin makes its own redis.asyncio client from the backend's URL: "
                "build the backend from a URL, not client="
            )
        # Per event loop: its client, and the loads awaited in the same turn
        # of it, sent together (see load()). A future belongs to its loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._waiting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, builtins.list[Waiting]]
        ] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done, as asyncio asks
        # The tasks of each loop with a native call under way: aclose() lets them end first.
        self._running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Task[Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False  # from the start of aclose(): no new call, no next request of one under way

    def _refuse_if_closed(self, operation: str, key: object = None) -> None:
        """A closed twin, or the twin of a closed backend, answers nothing: StoreError."""
        if self._closed or self.backend.closed:
            raise StoreError(
                "the backend is closed (close() or aclose() was called); make a new one",
                backend=repr(self.backend),
                operation=operation,
                key=key,
            )

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The calls through the thread pool: refused once the twin is closed,
        # not a raw RuntimeError of a pool that was shut down (a closed
        # backend's own calls refuse with StoreError).
        if self._closed:
            self._refuse_if_closed(getattr(call, "__name__", "call"))
        return await super()._run(call, *args, **kwargs)

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            settings: dict[str, Any] = self.backend._settings
            client = self._clients[loop] = make_async_client(
                str(self.backend.server_url),
                password=settings["password"],
                username=settings["username"],
                max_connections=settings["max_connections"],
                timeout=settings["socket_timeout"],
                retries=settings["retries"],
            )
        return client

    async def _send(self, request: plans.Request) -> Any:
        client = self._client()
        if isinstance(request, plans.Script):
            args = [self.backend._now(), *request.args]
            return await run_script_async(client, self.backend._noscript, request.name, request.keys, args)
        return await getattr(client, request.name)(*request.args)

    def _sender(self, operation: str, key: object) -> Callable[[plans.Request], Awaitable[Any]]:
        """:meth:`_send`, refused once the twin or its backend is closed: a bulk call closed
        between its batches sends no later batch."""

        async def send(request: plans.Request) -> Any:
            self._refuse_if_closed(operation, key)
            return await self._send(request)

        return send

    @contextlib.contextmanager
    def _under_way(self) -> Iterator[None]:
        """The current task has a native call under way on this loop's client."""
        task = asyncio.current_task()
        running = self._running.setdefault(asyncio.get_running_loop(), set())
        if task is not None:
            running.add(task)
        try:
            yield
        finally:
            running.discard(task)

    async def _native(self, operation: str, key: object, plan: plans.Plan[T]) -> T:
        self._refuse_if_closed(operation, key)
        try:
            with self._under_way():
                return await plans.drive_async(plan, self._sender(operation, key))
        except self.backend._native_errors as exc:
            self.backend._reraise(exc, operation, key)

    # -- the calls that go native ---------------------------------------------------------

    @told("load")
    async def load(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``.

        Loads awaited in the same turn of the event loop go together: one
        ``GET`` for one key, one ``MGET`` per 1,000 for many (the plan of
        ``load_many``), so 10,000 concurrent loads cost 10 round trips, not
        10,000. A cancelled load only stops waiting.
        """
        store = self.backend
        key = store._check(key, "load")
        self._refuse_if_closed("load", key)
        loop = asyncio.get_running_loop()
        future: Waiting = loop.create_future()
        waiting = self._waiting.get(loop)
        if not waiting:
            waiting = self._waiting[loop] = {}
            loop.call_soon(self._flush, loop)
        waiting.setdefault(key, []).append(future)
        data = await future
        if store._counted:
            store._looked_up(key, data is not MISSING)
        return default if data is MISSING else store._decode(data, key, "load")

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._waiting.pop(loop, {})
        task = loop.create_task(self._load_together(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_together(self, waiting: dict[str, builtins.list[Waiting]]) -> None:
        store, keys = self.backend, builtins.list(waiting)
        try:
            send = self._sender("load", keys[0] if len(keys) == 1 else None)
            self._refuse_if_closed("load", keys[0] if len(keys) == 1 else None)
            with self._under_way():
                if len(keys) == 1:
                    found = {keys[0]: await plans.drive_async(plans.load(store._at, keys[0]), send)}
                else:
                    found = dict(await plans.drive_async(plans.load_many(store._at, keys), send))
        except BaseException as exc:
            self._fail(waiting, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, futures in waiting.items():
            for future in futures:
                if not future.done():  # a cancelled load stopped waiting
                    future.set_result(found.get(key, MISSING))

    def _fail(self, waiting: dict[str, builtins.list[Waiting]], exc: BaseException) -> None:
        """Each waiting load raises the error, translated for its own key."""
        store = self.backend
        for key, futures in waiting.items():
            error = exc
            if isinstance(exc, store._native_errors):
                error = store._error(exc, "load", key)
                error.__cause__ = exc
            for future in futures:
                if not future.done():
                    future.set_exception(error)

    @told("contains")
    async def contains(self, key: str) -> bool:
        store = self.backend
        key = store._check(key, "contains")
        return await self._native("contains", key, plans.contains(store._at, key))

    @told("load_many", keyed=False)
    async def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        store = self.backend
        wanted = store._check_all(keys, "load_many")
        found = await self._native("load_many", None, plans.load_many(store._at, wanted))
        if store._counted:
            store._looked_up_all(wanted, found)
        return {key: store._decode(data, key, "load_many") for key, data in found.items()}

    @told("dump")
    async def dump(  # type: ignore[override]  # the options of RedisBackend.dump, by name
        self,
        key: str,
        value: V,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        timeout: float | Missing | None = MISSING,
    ) -> bool:
        check_flag(if_absent, "if_absent")
        if if_match is not None or timeout is not MISSING:  # through the blocking store
            return await super().dump(key, value, if_absent=if_absent, if_match=if_match, timeout=timeout)
        return await self._write("dump", "nx" if if_absent else "set", [(key, value)])

    @told("dump_many", keyed=False)
    async def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        await self._write("dump_many", "set", builtins.list(pairs))

    async def _write(self, operation: str, mode: str, pairs: builtins.list[tuple[str, V]]) -> bool:
        store = self.backend
        encoded: dict[str, bytes] = {}
        for raw_key, value in pairs:  # every key checked, every value encoded, before any I/O
            key = store._check(raw_key, operation)
            encoded[key] = store._encode(value, key, operation)
        if mode == "set" and len(encoded) == 1:  # the blocking store's plain dump: the same request
            [(key, data)] = encoded.items()
            plan = plans.put(store._at, key, data, store._ttl(MISSING), keep=store._keep)
        else:
            plan = plans.write(
                store._at, mode, builtins.list(encoded.items()), store._ttl(MISSING), keep=store._keep
            )
        return await self._native(operation, pairs[0][0] if len(pairs) == 1 else None, plan)

    @told("delete")
    async def delete(self, key: str) -> bool:
        store = self.backend
        key = store._check(key, "delete")
        return await self._native("delete", key, plans.delete_many(store._at, [key])) > 0

    @told("delete_many", keyed=False)
    async def delete_many(self, keys: Iterable[str]) -> int:
        store = self.backend
        wanted = store._check_all(keys, "delete_many")
        return await self._native("delete_many", None, plans.delete_many(store._at, wanted))

    @told("pop")
    async def pop(self, key: str, default: Any = MISSING) -> Any:
        store = self.backend
        key = store._check(key, "pop")
        data: bytes | Missing = await self._native("pop", key, plans.pop(store._at, key))
        if data is MISSING:
            if default is MISSING:
                raise KeyError(key)
            return default
        return store._decode_popped(data, key)

    @told("len", keyed=False)
    async def len(self) -> int:
        return await self._native("len", None, plans.length(self.backend._at))

    async def aclose(self) -> None:
        """Close this loop's client and its connections, the backend, and the thread pool.

        Every later call, on the twin or the backend, raises StoreError. A
        native call under way on this loop ends first, at its request in
        flight (a bulk call sends no later batch); then nothing more is sent.
        A twin used from several loops has a client in each: ``aclose()`` in
        each loop closes that loop's (and waits for the close begun first);
        after ``backend.close()`` too.
        """
        # First no new request, then the requests in flight end, then the pool closes: a call
        # that went on while the client closed made a new client (and connections), never closed.
        self._closed = True
        loop = asyncio.get_running_loop()
        running = self._running.get(loop, set()) - {asyncio.current_task()}
        if running:
            await asyncio.wait(running)
        client = self._clients.pop(loop, None)
        try:
            if client is not None:
                # The pool was made for this client: closed with it (redis-py leaves a given pool open).
                await client.aclose(close_connection_pool=True)
        finally:
            await super().aclose()  # a close already begun: returns once it has ended


def _twin(backend: RedisBackend[Any], *, max_workers: int | None = None) -> AsyncBackend[Any]:
    """What ``backend.aio()`` builds: the hot calls native on ``redis.asyncio``, the rest in
    threads; a backend built on an existing ``client=`` gets the thread-pool twin only."""
    if backend.server_url is None:
        return AsyncBackend(backend, max_workers=max_workers)
    return AsyncRedisBackend(backend, max_workers=max_workers)


register_twin(RedisBackend, _twin)
