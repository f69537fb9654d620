"""The hub: the subscriptions of this process, and the observing wrappers it puts on the
backends' classes while anyone subscribes (with nobody subscribed a call runs exactly its own
code).

A subscriber that raises never changes the operation's result: its error is counted in
:data:`HUB` and logged once per subscriber on the ``backends.events`` logger.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from .record import HOST, Event, digest

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "HUB",
    "Hub",
    "Subscription",
    "measured",
    "observe",
    "observe_async",
    "observed",
    "subscribe",
    "tell_retry",
    "told",
]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("backends.events")


class Subscription:
    """A subscribed callable; :meth:`close` (or leaving a ``with`` block) unsubscribes it."""

    def __init__(self, callback: Callable[[Event], object], target: Any, digest_keys: bool) -> None:
        self.callback = callback
        self.digest_keys = digest_keys
        # where the backend's subscriptions are (its id), or None for every backend;
        # the backend itself is not held: a subscription never keeps it alive
        self._place: int | None = None if target is None else id(target)
        self._warned = False

    def deliver(self, event: Event) -> None:
        if self.digest_keys and event.key is not None:
            event = event._replace(key=digest(event.key))
        try:
            self.callback(event)
        except Exception:  # a subscriber never changes the operation's result
            HUB.count_error()
            if not self._warned:
                self._warned = True
                log.warning("event subscriber %r raised; its errors are counted in HUB.errors", self.callback)

    def close(self) -> None:
        """Stop delivering events to the callable (once is enough; again does nothing)."""
        HUB.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Hub:
    """The subscriptions of this process. ``on`` is what an operation tests first."""

    def __init__(self) -> None:
        #: whether anyone subscribed, globally or to any backend
        self.on = False
        #: errors raised by subscribers (each one swallowed for the operation's sake)
        self.errors = 0
        self._global: tuple[Subscription, ...] = ()
        self._by_backend: dict[int, tuple[Subscription, ...]] = {}
        self._names: dict[int, str] = {}
        # (class, name, plain method, observing wrapper) of every @observed method
        self._methods: list[tuple[type, str, Any, Any]] = []
        self._count = 0
        # Re-entrant: a backend collected (its subscriptions forgotten by a
        # weakref finalizer) may be collected inside a thread holding it.
        self._lock = threading.RLock()

    def add(self, subscription: Subscription, target: Any = None) -> None:
        with self._lock:
            place = subscription._place
            if place is None:
                self._global = (*self._global, subscription)
            else:
                # By identity (two equal backends are two views of one store,
                # not one backend); dropped when the backend is collected.
                if place not in self._by_backend:
                    weakref.finalize(target, self._forget, place)
                self._by_backend[place] = (*self._by_backend.get(place, ()), subscription)
            self._count += 1
            self._switch(True)

    def remove(self, subscription: Subscription) -> None:
        with self._lock:
            place = subscription._place
            if place is None:
                if subscription not in self._global:
                    return
                self._global = tuple(s for s in self._global if s is not subscription)
            else:
                mine = self._by_backend.get(place, ())
                if subscription not in mine:
                    return
                self._by_backend[place] = tuple(s for s in mine if s is not subscription)
            self._count -= 1
            self._switch(self._count > 0)

    def _forget(self, place: int) -> None:
        with self._lock:
            self._count -= len(self._by_backend.pop(place, ()))
            self._switch(self._count > 0)

    def register(self, cls: type) -> None:
        """Note the :func:`observed` methods ``cls`` defines (BaseBackend's subclasses call this)."""
        with self._lock:
            for name, method in list(vars(cls).items()):
                marked = getattr(method, "__observed__", None)
                kind = getattr(method, "__measured__", None)
                if marked is None and kind is None:
                    continue
                wrapper = _wrapper(method, *marked) if marked is not None else _measuring(method, str(kind))
                self._methods.append((cls, name, method, wrapper))
                if self.on:
                    setattr(cls, name, wrapper)

    def _switch(self, on: bool) -> None:
        # Under self._lock. Observing wrappers in place exactly while anyone subscribes.
        if on == self.on:
            return
        self.on = on
        for cls, name, plain, wrapper in self._methods:
            setattr(cls, name, wrapper if on else plain)

    def _name(self, source: Any) -> str:
        """``repr(source)``, kept while the backend lives: a repr is built once, not per event."""
        name = repr(source)
        with self._lock:
            if id(source) not in self._names:
                weakref.finalize(source, self._names.pop, id(source), None)
            self._names[id(source)] = name
        return name

    def count_error(self) -> None:
        with self._lock:
            self.errors += 1

    def emit(self, source: Any, operation: str, key: str | None, outcome: str, **measured: Any) -> None:
        """Deliver an event of ``source`` (a backend) to its subscribers and the global ones.

        Called only after ``HUB.on`` was found true; builds the event only if
        someone wants it.
        """
        place = id(source)
        targets = self._global + self._by_backend.get(place, ())
        if not targets:
            return
        name = self._names.get(place)
        if name is None:
            name = self._name(source)
        event = Event(time.time(), HOST, os.getpid(), name, operation, key, outcome, **measured)
        for subscription in targets:
            subscription.deliver(event)


#: the subscriptions of this process
HUB: Final = Hub()


def _after_fork() -> None:
    # Another thread of the parent may have held the hub's lock at the fork (a subscribe or close,
    # a backend's first event, a subscriber's error), halfway through switching the observing
    # wrappers: the child's lock is free, and each method is put as the hub's state says.
    HUB._lock = threading.RLock()
    for cls, name, plain, wrapper in HUB._methods:
        setattr(cls, name, wrapper if HUB.on else plain)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def tell_retry(source: Any, attempts: int, detail: str) -> None:
    """A request of ``source`` (a backend, or None once it is gone) made again: its try number
    ``attempts``; a ``retried`` event if anyone listens."""
    if HUB.on and source is not None:
        HUB.emit(source, "request", None, "retried", attempts=attempts, detail=detail)


def subscribe(callback: Callable[[Event], object], *, digest_keys: bool = False) -> Subscription:
    """Deliver every backend's events to ``callback`` until the subscription is closed.

    ``digest_keys=True`` replaces each key by :func:`digest` (for keys that
    are personal data). The callback runs in the thread of the operation:
    keep it short, or hand the event to a queue.
    """
    subscription = Subscription(callback, None, digest_keys)
    HUB.add(subscription)
    return subscription


def observe(
    source: Any, operation: str, key: str | None, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> R:
    """Run ``call`` as ``operation`` of ``source``: ``started``, then ``finished`` or ``failed``, timed.

    A failure's detail is the error's class and its reason (the library's
    own words, which never hold a value or a secret), never its full text.
    """
    return _observe(source, operation, key, call, args=args, kwargs=kwargs)


def _observe(
    source: Any,
    operation: str,
    key: str | None,
    call: Callable[..., R],
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    detail: str = "",
) -> R:
    """:func:`observe`; ``detail``, if given, tells the result (``"{} removed"``)."""
    HUB.emit(source, operation, key, "started")
    outer, _handled.bytes = getattr(_handled, "bytes", None), None
    start = time.perf_counter()
    try:
        result = call(*args, **kwargs)
    except BaseException as exc:
        _handled.bytes = outer
        HUB.emit(source, operation, key, "failed", duration=time.perf_counter() - start, detail=_failure(exc))
        raise
    done = detail.format(result) if detail else ""
    size, _handled.bytes = _handled.bytes, outer  # an outer call counts only its own
    HUB.emit(
        source, operation, key, "finished", duration=time.perf_counter() - start, bytes=size, detail=done
    )
    return result


async def observe_async(source: Any, operation: str, key: str | None, call: Awaitable[R]) -> R:
    """:func:`observe` for a coroutine (the native calls of an async twin): started, then finished
    or failed, timed. Call it only while ``HUB.on``."""
    HUB.emit(source, operation, key, "started")
    start = time.perf_counter()
    try:
        result = await call
    except BaseException as exc:
        HUB.emit(source, operation, key, "failed", duration=time.perf_counter() - start, detail=_failure(exc))
        raise
    HUB.emit(source, operation, key, "finished", duration=time.perf_counter() - start)
    return result


def told(operation: str, keyed: bool = True) -> Callable[[F], F]:
    """A native call of an async twin tells its events (started, finished, failed) as the
    blocking call would: :func:`observe_async` on the twin's ``backend``, while ``HUB.on``."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not HUB.on:
                return await method(self, *args, **kwargs)
            key = args[0] if keyed and args and isinstance(args[0], str) else None
            return await observe_async(self.backend, operation, key, method(self, *args, **kwargs))

        return run  # type: ignore[return-value]

    return wrap


def observed(operation: str, keyed: bool = True, detail: str = "") -> Callable[[F], F]:
    """Mark a public method of a backend class as the call ``operation``.

    ``keyed``: the method's first argument is the key; ``detail``: how its
    ``finished`` event tells the result (``"{} removed"``; none if empty).
    The method is left as it is. While anyone is subscribed, :data:`HUB`
    puts an :func:`observe`-ing wrapper in its place on its class (and puts
    it back after the last subscription closed), so with nobody subscribed
    a call costs nothing at all. Classes are registered by
    ``BaseBackend.__init_subclass__``.
    """

    def mark(method: F) -> F:
        method.__observed__ = (operation, keyed, detail)  # type: ignore[attr-defined]
        return method

    return mark


def measured(kind: str) -> Callable[[F], F]:
    """Mark a backend's ``_decode`` (``kind="read"``: its data) or ``_write_value``
    (``"write"``: the data it writes): while anyone subscribes, those bytes are
    added to the ``bytes`` of the innermost call being observed in the thread."""

    def mark(method: F) -> F:
        method.__measured__ = kind  # type: ignore[attr-defined]
        return method

    return mark


#: bytes read or written by the innermost call being observed, in this thread (None: none)
_handled = threading.local()


def _count_bytes(data: Any) -> None:
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        _handled.bytes = (getattr(_handled, "bytes", None) or 0) + len(data)


def _measuring(plain: Callable[..., Any], kind: str) -> Callable[..., Any]:
    if kind == "read":

        @functools.wraps(plain)
        def read(self: Any, data: Any, *args: Any) -> Any:
            result = plain(self, data, *args)
            _count_bytes(data)
            return result

        return read

    @functools.wraps(plain)
    def write(self: Any, key: Any, value: Any, operation: str, writer: Callable[[str, Any], bool]) -> Any:
        def counted(key: str, data: Any) -> bool:
            _count_bytes(data)
            return writer(key, data)

        return plain(self, key, value, operation, counted)

    return write


def _wrapper(plain: Callable[..., Any], operation: str, keyed: bool, detail: str) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(plain):
        return _listing_wrapper(plain, operation, keyed)

    @functools.wraps(plain)
    def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        key = (args[0] if args else kwargs.get("key")) if keyed else None
        key = key if isinstance(key, str) else None
        return _observe(self, operation, key, plain, args=(self, *args), kwargs=kwargs, detail=detail)

    return call


def _listing_wrapper(plain: Callable[..., Iterator[Any]], operation: str, keyed: bool) -> Callable[..., Any]:
    """For a listing: started at the first item asked for; finished (with how many) when
    exhausted, failed on an error, stopped if the caller stopped early."""

    @functools.wraps(plain)
    def call(self: Any, /, *args: Any, **kwargs: Any) -> Iterator[Any]:
        key = (args[0] if args else kwargs.get("prefix")) if keyed else None
        key = key if isinstance(key, str) else None
        HUB.emit(self, operation, key, "started")
        start, count, outcome, detail = time.perf_counter(), 0, "stopped", ""
        try:
            for item in plain(self, *args, **kwargs):
                count += 1
                yield item
            outcome = "finished"
        except GeneratorExit:
            raise
        except BaseException as exc:
            outcome, detail = "failed", _failure(exc)
            raise
        finally:
            detail = detail or f"{count} listed"
            HUB.emit(self, operation, key, outcome, duration=time.perf_counter() - start, detail=detail)

    return call


def _failure(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason}" if isinstance(reason, str) else type(exc).__name__
