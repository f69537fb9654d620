"""The async twin of an S3 backend on the obstore engine: its GET, HEAD and PUT awaited natively.

``load``, ``contains``, ``load_many``, ``dump`` and ``dump_many`` send the
very requests the blocking store sends (a GET per key loaded, a HEAD per
``in``, a PUT per value written, the HEAD of a conditional PUT whose try was
sent again), through obstore's async API (``get_async``, ``put_async``): an
awaited request holds no thread, so 10,000 concurrent loads cost no thread
each. At most ``max_workers`` of the twin's requests are in flight per event
loop (the backend's pool size, 64 for the obstore engine); the others wait
their turn. Retries, cut bodies asked again, typed errors, a missing bucket
made on demand and conditional writes are the blocking store's.

What obstore does not send goes to the twin's threads, as for every store:
a request through boto3 instead (a redirect, a lost conditional answer,
a key with a control character, a PUT with an ACL, every request in a
process forked after obstore's first one), and every other call (listings,
``delete``, ``pop``, locks, ``stat``, files). A cancelled call stops its
request where it is: a PUT is applied whole or not at all, as when its
answer is lost. Once the twin or its backend is closed every call raises
StoreError; requests already sent finish (one still waiting for its
credentials' refresh is not sent).
"""

from __future__ import annotations

import asyncio
import builtins
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..aio import AsyncBackend
from ..base import MISSING, register_twin
from ..errors import StoreError, check_flag
from ..events import told
from ..hooks import Missing
from .connection import CONFLICT_RETRIES, TOKEN_META, is_marker
from .errors import ABSENT, CONFLICT, PRECONDITION_FAILED, count_resends, error_code, resends
from .store import S3Backend, with_token

__all__ = ["AsyncS3Backend"]

V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class AsyncS3Backend(AsyncBackend[V]):
    """The :class:`~backends.aio.AsyncBackend` of an obstore-engine S3 backend, native where it pays."""

    backend: S3Backend[V]

    def __init__(self, backend: S3Backend[V], *, max_workers: int | None = None) -> None:
        super().__init__(backend, max_workers=max_workers)
        if backend._engine is None:
            raise ValueError("the native S3 twin needs a backend with engine='obstore'")
        self._engine = backend._engine
        # Per event loop: the bound on the requests in flight (a semaphore belongs to its loop).
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"AsyncS3Backend({self.backend!r})"

    def _refuse_if_closed(self, operation: str, key: object = None) -> None:
        """A closed twin, or the twin of a closed backend, sends nothing: StoreError."""
        if self._closed or self.backend.closed:
            raise StoreError(
                "the backend is closed (close() or aclose() was called); make a new one",
                backend=repr(self.backend),
                operation=operation,
                key=key,
            )

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slot = self._slots.get(loop)
        if slot is None:
            slot = self._slots[loop] = asyncio.Semaphore(self.max_workers)
        return slot

    async def _in_thread(self, function: Callable[[], T]) -> T:
        return await self._run(function)

    # -- one request, as the blocking store sends it ------------------------------------------

    async def _request(self, send: Callable[[], Awaitable[T]], operation: str, key: object) -> T:
        """``send()`` once a slot is free; again if its answer was cut off (at most ``retries`` times).

        The blocking store's ``_again_if_cut`` around ``_with_bucket``: a
        missing bucket is made (with ``create_bucket``) and the request sent
        again; an error answered to a try sent again counts it among its resends.
        """
        store = self.backend
        for attempt in range(store._retries + 1):
            try:
                return await self._with_bucket(send, operation, key)
            except store._engine_cut as exc:
                if attempt == store._retries:
                    raise store._streaming_error(error=exc) from exc
            except store._client_error as exc:
                if attempt:
                    count_resends(exc.response, attempt)
                raise
        raise AssertionError("unreachable")

    async def _with_bucket(self, send: Callable[[], Awaitable[T]], operation: str, key: object) -> T:
        store = self.backend
        async with self._slot():
            self._refuse_if_closed(operation, key)  # after the wait: nothing is sent after close
            generation = store._buckets_made
            try:
                return await send()
            except store._client_error as exc:
                if not store._bucket_missing(exc):
                    raise
        await self._run(store._make_bucket_since, generation)
        async with self._slot():
            self._refuse_if_closed(operation, key)
            return await send()

    async def _each(self, items: builtins.list[T], work: Callable[[T], Awaitable[R]]) -> builtins.list[R]:
        """``work`` over ``items``, ``max_workers`` at a time, in order; the first error raises
        (and no item after it is started)."""
        if len(items) == 1:
            return [await work(items[0])]
        results: builtins.list[Any] = [None] * len(items)
        positions = iter(range(len(items)))
        failed: builtins.list[Exception] = []

        async def worker() -> None:
            for index in positions:
                if failed:
                    return
                try:
                    results[index] = await work(items[index])
                except Exception as exc:
                    failed.append(exc)
                    return

        await asyncio.gather(*(worker() for _ in range(min(self.max_workers, len(items)))))
        if failed:
            raise failed[0]
        return results

    # -- reading ------------------------------------------------------------------------------------

    async def _load(self, key: str) -> bytes | Missing:
        store, engine = self.backend, self._engine
        name = store.prefix + key
        if not engine.reads(name):
            return await self._run(store._load, key)
        try:
            loaded = await self._request(lambda: engine.load_async(name, self._in_thread), "load", key)
        except store._client_error as exc:
            if error_code(exc) in ABSENT:
                return MISSING
            raise
        return store._loaded(key, *loaded)

    async def _head(self, key: str) -> dict[str, Any] | None:
        store, engine = self.backend, self._engine
        params = {"Key": store.prefix + key}
        if not engine.sends("head_object", params):
            return await self._run(store._head, key)
        try:
            response: dict[str, Any] = await self._request(
                lambda: engine.call_async("head_object", params, self._in_thread), "contains", key
            )
        except store._client_error as exc:
            if error_code(exc) in ABSENT:
                return None
            raise
        return None if is_marker(response) else response

    @told("load")
    async def load(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``: one GET, awaited on obstore."""
        store = self.backend
        key = store._check(key, "load")
        self._refuse_if_closed("load", key)
        try:
            data = await self._load(key)
        except store._native_errors as exc:
            store._reraise(exc, "load", key)
        return default if data is MISSING else store._decode(data, key, "load")

    @told("contains")
    async def contains(self, key: str) -> bool:
        """Whether ``key`` is present: one HEAD, awaited on obstore."""
        store = self.backend
        key = store._check(key, "contains")
        self._refuse_if_closed("contains", key)
        try:
            return await self._head(key) is not None
        except store._native_errors as exc:
            store._reraise(exc, "contains", key)

    @told("load_many", keyed=False)
    async def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """``{key: value}`` of the keys present: a GET per key, ``max_workers`` in flight."""
        store = self.backend
        wanted = store._check_all(keys, "load_many")
        self._refuse_if_closed("load_many")
        try:
            loaded = await self._each(wanted, self._load)
        except store._native_errors as exc:
            store._reraise(exc, "load_many", None)
        return {
            key: store._decode(data, key, "load_many")
            for key, data in zip(wanted, loaded, strict=True)
            if data is not MISSING
        }

    # -- writing ------------------------------------------------------------------------------------

    @told("dump")
    async def dump(  # type: ignore[override]  # the options of S3Backend.dump, by name
        self, key: str, value: V, *, if_absent: bool = False, if_match: str | None = None
    ) -> bool:
        """Store ``value`` with one PUT, awaited on obstore (``if_absent``, ``if_match`` as ``dump``)."""
        if check_flag(if_absent, "if_absent") and if_match is not None:
            raise TypeError("if_absent and if_match are exclusive")
        store = self.backend
        key = store._check(key, "dump")
        data = store._encode(value, key, "dump")
        self._refuse_if_closed("dump", key)
        try:
            return await self._put(key, data, if_absent, if_match, "dump")
        except store._native_errors as exc:
            store._reraise(exc, "dump", key)

    @told("dump_many", keyed=False)
    async def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Store every pair: a PUT each, ``max_workers`` in flight; every key checked and every
        value encoded before the first PUT."""
        store = self.backend
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded: dict[str, bytes] = {}
        for raw_key, value in pairs:
            key = store._check(raw_key, "dump_many")
            encoded[key] = store._encode(value, key, "dump_many")
        self._refuse_if_closed("dump_many")
        try:
            await self._each(
                builtins.list(encoded.items()),
                lambda item: self._put(item[0], item[1], False, None, "dump_many"),
            )
        except store._native_errors as exc:
            store._reraise(exc, "dump_many", None)

    async def _put(
        self, key: str, data: bytes, if_absent: bool, if_match: str | None, operation: str
    ) -> bool:
        """The blocking store's ``_put_object``, awaited: False when the condition failed (one HEAD
        more when it failed on a try sent again: the token tells whether the write was ours)."""
        store, engine = self.backend, self._engine
        body, params = store._put_request(key, data, if_absent, if_match)
        if "IfMatch" in params or "IfNoneMatch" in params:
            store._check_conditions("put_object", params)  # an ETag no header can carry: ValueError
        params, token = with_token(params)
        request = {"Key": store.prefix + key, "Body": body, **params}
        if not engine.sends("put_object", request):  # an ACL, metadata obstore takes for attributes
            return await self._run(store._put_object, key, body, params)
        resent = False
        for attempt in range(CONFLICT_RETRIES):
            try:
                await self._request(
                    lambda: engine.call_async("put_object", request, self._in_thread), operation, key
                )
                return True
            except store._client_error as exc:
                code = error_code(exc)
                resent = resent or resends(exc) > 0
                if code in PRECONDITION_FAILED or ("IfMatch" in params and code in ABSENT):
                    return resent and token is not None and await self._holds_token(key, token)
                if code not in CONFLICT or attempt == CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _holds_token(self, key: str, token: str) -> bool:
        head = await self._head(key)
        return head is not None and head.get("Metadata", {}).get(TOKEN_META) == token


def _twin(backend: S3Backend[Any], *, max_workers: int | None = None) -> AsyncBackend[Any]:
    """What ``backend.aio()`` builds: native on obstore for the obstore engine, else the
    thread-pool twin (boto3's requests hold the GIL; a thread each is what they need)."""
    if backend._engine is None:
        return AsyncBackend(backend, max_workers=max_workers)
    return AsyncS3Backend(backend, max_workers=max_workers)


register_twin(S3Backend, _twin)
