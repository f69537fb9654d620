"""BackendCore: what the base gives every store, under the public API: attributes and helpers.

A store calls these helpers (they are ``@final``: mypy flags an override)
and overrides only the hooks of :mod:`backends.hooks`; the public API of
:mod:`backends.base` is built on both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, NoReturn, TypeVar, final

from .cache import Entry
from .codecs.families import Codec
from .codecs.layers import layered
from .errors import BackendError, CorruptValueError, InvalidKeyError, SerializationError
from .events import HUB, measured
from .hooks import StoreHooks
from .keys import all_valid, key_problem

__all__ = ["BackendCore", "encode_value"]

V = TypeVar("V")
S = TypeVar("S")
T = TypeVar("T")


class BackendCore(StoreHooks[S], Generic[V, S]):
    """The attributes every backend has, and the helpers a store calls."""

    #: the value family: how a value becomes the stored form and back (a class attribute)
    codec: Codec[V, S]

    #: the wall clock of leases and expiry: seconds since the epoch, the
    #: same in every process; replace it on an instance to test without sleeping
    clock: Callable[[], float] = staticmethod(time.time)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a backend holding nothing is never closed)."""
        return False

    @property
    def max_key_bytes(self) -> int:
        """The longest key, in UTF-8 bytes, this backend takes: 1024, less an S3 prefix."""
        return self._max_key_bytes

    # -- helpers for stores: call them, never override them ---------------------

    @final
    def _lock_context(self) -> dict[str, Any]:
        """What every :class:`~backends.locks.Lock` of this backend is built with
        (``Lock(key, timeout, ttl, ..., **self._lock_context())``): the owner
        shown in messages, the clock of leases, and the translation of errors."""
        return {"owner": self, "clock": self.clock, "translating": self._translating}

    @final
    def _check_codec(self, codec: object = None) -> None:
        """Take the ``codec=`` argument (see :func:`~backends.codecs.layered`), then raise
        TypeError unless the backend has a value family (its class's ``codec`` attribute, or that)."""
        if codec is not None:
            self.codec = layered(getattr(type(self), "codec", None), codec)  # type: ignore[assignment]
        if not isinstance(getattr(self, "codec", None), Codec):
            raise TypeError(
                f"{type(self).__name__} has no value family: use one of its families "
                "(the Json, Text or Raw classes), give it codec= (Typed(User), JsonCodec() | Zstd()), "
                "or subclass it with a codec class attribute"
            )

    @final
    def _codec_option(self) -> dict[str, Any]:
        """The ``codec=`` this backend was built with, for a copy (pickle): ``{}`` for its family's.

        A codec holding keys refuses to pickle (TypeError), and so does then the backend.
        """
        return {"codec": vars(self)["codec"]} if "codec" in vars(self) else {}

    @final
    def _check(self, key: object, operation: str) -> str:
        # The message, and so repr(self), is built only for an invalid key.
        problem = key_problem(key, self._max_key_bytes)
        if problem is None:
            if self._key_rule is None:
                return key  # type: ignore[return-value]  # a valid key is a str
            problem = self._key_rule(key)  # type: ignore[arg-type]
            if problem is None:
                return key  # type: ignore[return-value]
            raise InvalidKeyError(problem, backend=repr(self), operation=operation, key=key)
        raise InvalidKeyError(f"invalid key: {problem}", backend=repr(self), operation=operation, key=key)

    @final
    def _error(self, exc: BaseException, operation: str, key: object) -> BackendError:
        cls, reason = self._translate(exc)
        return cls(reason, backend=repr(self), operation=operation, key=key)

    @final
    def _reraise(self, exc: BaseException, operation: str, key: object) -> NoReturn:
        """Raise ``exc`` in the tree: translated once, or as it is if it already is of the tree.

        A StoreError is also an OSError, so a hook that raises one (or calls
        another backend) is caught by ``except self._native_errors``: it must
        reach the caller unchanged, not as a plain StoreError.
        """
        if isinstance(exc, BackendError):
            raise exc
        raise self._error(exc, operation, key) from exc

    @final
    def _translating(self, operation: str, key: object) -> _Translating:
        """A ``with`` block whose native errors are translated once (see :meth:`_reraise`).

        The hot single-key calls (``load``, ``dump``, ``delete``, ``in``)
        inline the same try/except: a ``with`` costs them a few percent.
        """
        return _Translating(self, operation, key)

    @final
    def _guarded(self, operation: str, key: object, action: Callable[[], T]) -> T:
        """Run ``action`` with the store's native errors translated."""
        with self._translating(operation, key):
            return action()

    @final
    def _encode(self, value: V, key: str, operation: str) -> S:
        return encode_value(self, value, key, operation)

    @final
    @measured("read")
    def _decode(self, data: S, key: str, operation: str) -> V:
        try:
            return self.codec.decode(data)
        except (ValueError, RecursionError) as exc:
            # RecursionError: a document nested deeper than the decoder goes
            # (100,000 "["), which no encoder here would have written.
            raise CorruptValueError(
                f"stored data is not valid {self.codec.name}: {exc}",
                backend=repr(self),
                operation=operation,
                key=key,
            ) from exc

    @final
    def _decode_popped(self, data: S, key: str) -> V:
        """The value ``pop`` took; if it does not decode, its bytes go back before the CorruptValueError.

        A failed call changes nothing: a value sealed with a key since dropped
        from the list (or written by another program) is not lost to a ``pop``.
        ``if_absent``: a value written meanwhile stays.
        """
        try:
            return self._decode(data, key, "pop")
        except CorruptValueError:
            try:
                with self._translating("pop", key):
                    self._dump(key, data, True)
            except BackendError:
                pass  # the CorruptValueError says what happened; the store's own error would hide it
            raise

    @final
    def _entry(
        self, data: S, key: str, deadline: float | None, fresh: bool, etag: str | None
    ) -> Entry[V] | None:
        """A cache entry of ``data``, for ``peek``: an expired one whose data no longer
        decodes is no entry (a tier loads it afresh); a fresh one raises CorruptValueError, as ``load``."""
        try:
            value = self._decode(data, key, "peek")
        except CorruptValueError:
            if fresh:
                raise
            return None
        return Entry(value, deadline, fresh, etag)

    @final
    @measured("write")
    def _write_value(self, key: str, value: V, operation: str, write: Callable[[str, S], bool]) -> bool:
        """Validate, encode, then ``write(key, data)`` with native errors translated."""
        key = self._check(key, operation)
        data = self._encode(value, key, operation)
        try:
            return write(key, data)
        except self._native_errors as exc:
            self._reraise(exc, operation, key)

    @final
    def _check_all(self, keys: Iterable[str], operation: str) -> list[str]:
        if isinstance(keys, str):
            raise TypeError(f"{operation} takes an iterable of keys, not one str")
        given = list(keys)
        if not all_valid(given, self._max_key_bytes) or self._key_rule is not None:
            for key in given:  # the first invalid key, named in the error
                self._check(key, operation)
        return list(dict.fromkeys(given))


def encode_value(backend: BackendCore[V, S], value: V, key: str, operation: str) -> S:
    """``value`` in the stored form of ``backend``'s codec; SerializationError if it cannot be stored.

    What every write does before any I/O; a tier checks a value against
    both its parts with it.
    """
    try:
        return backend.codec.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"cannot store {type(value).__name__} as {backend.codec.name}: {exc}",
            backend=repr(backend),
            operation=operation,
            key=key,
        ) from exc


class _Translating:
    """The ``with`` form of :meth:`BackendCore._reraise`."""

    __slots__ = ("backend", "key", "operation")

    def __init__(self, backend: BackendCore[Any, Any], operation: str, key: object) -> None:
        self.backend, self.operation, self.key = backend, operation, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> Literal[False]:
        if exc is not None and isinstance(exc, self.backend._native_errors):
            self.backend._reraise(exc, self.operation, self.key)
        return False


HUB.register(BackendCore)  # its measured helpers count bytes while anyone subscribes
