"""BaseBackend: the public API of every backend, over the store hooks of :mod:`backends.hooks`.

The base owns what must be identical on every store: key validation before
any I/O, the codec, and translation of the store's native errors into the
tree of :mod:`backends.errors`. A store overrides hooks only (see
:class:`~backends.hooks.StoreHooks` and README.rst, "Writing a backend");
the helpers here, marked ``@final``, are for a store to call, never to
override.
"""

from __future__ import annotations

import time
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, NoReturn, TypeAlias, TypeVar, final, overload

from .codecs import Codec
from .errors import BackendError, CorruptValueError, InvalidKeyError, SerializationError, StoreError
from .hooks import BATCH, MISSING, UNCHANGED, Missing, StoreHooks, Unchanged
from .keys import key_problem

if TYPE_CHECKING:
    from .locks import Lock

__all__ = [
    "MISSING",
    "UNCHANGED",
    "Backend",
    "BaseBackend",
    "Missing",
    "Unchanged",
    "Versioned",
    "encode_value",
]

V = TypeVar("V")
S = TypeVar("S")
T = TypeVar("T")

#: rounds of create-or-read before ``setdefault`` gives up on a contradictory store
SETDEFAULT_ROUNDS: Final = 8


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class BaseBackend(StoreHooks[S], MutableMapping[str, V], Generic[V, S]):
    """A dict-like store of ``str`` keys holding values of type ``V``; see the contract in README.rst.

    ``S`` is the stored form (``bytes`` for the built-in families).
    Subclasses set :attr:`codec` and implement the store hooks. Every public
    method validates its keys first and raises
    :class:`~backends.errors.InvalidKeyError` before any I/O.
    """

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
    def _check_codec(self) -> None:
        """Raise TypeError unless the class picked a value family (its ``codec`` attribute)."""
        if not isinstance(getattr(self, "codec", None), Codec):
            raise TypeError(
                f"{type(self).__name__} has no value family: use one of its families "
                "(the Json, Text or Raw classes), or subclass it with a codec class attribute"
            )

    @final
    def _check(self, key: object, operation: str) -> str:
        # The message, and so repr(self), is built only for an invalid key.
        problem = key_problem(key, self._max_key_bytes)
        if problem is None:
            return key  # type: ignore[return-value]  # a valid key is a str
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

    # -- single keys -----------------------------------------------------------

    @overload
    def load(self, key: str) -> V | None: ...
    @overload
    def load(self, key: str, default: T) -> V | T: ...
    def load(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` if it is absent."""
        key = self._check(key, "load")
        try:  # inline, not _translating: the hot path
            data = self._load(key)
        except self._native_errors as exc:
            self._reraise(exc, "load", key)
        if data is MISSING:
            return default
        return self._decode(data, key, "load")

    def dump(self, key: str, value: V, *, if_absent: bool = False) -> bool:
        """Store ``value`` under ``key`` atomically and return True.

        With ``if_absent=True`` nothing is written and False is returned when
        the key already exists; of two racing writers exactly one wins.
        Raises SerializationError (nothing written) or a StoreError; never
        returns False for an I/O error.
        """
        return self._write_value(key, value, "dump", lambda key, data: self._dump(key, data, if_absent))

    @final
    def _write_value(self, key: str, value: V, operation: str, write: Callable[[str, S], bool]) -> bool:
        """Validate, encode, then ``write(key, data)`` with native errors translated."""
        key = self._check(key, operation)
        data = self._encode(value, key, operation)
        try:
            return write(key, data)
        except self._native_errors as exc:
            self._reraise(exc, operation, key)

    def delete(self, key: str) -> bool:
        """Delete ``key``; return True if it existed, False if it was absent."""
        key = self._check(key, "delete")
        try:
            return self._delete(key)
        except self._native_errors as exc:
            self._reraise(exc, "delete", key)

    def __getitem__(self, key: str) -> V:
        value = self.load(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: V) -> None:
        self.dump(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        # Mapping.__contains__ would load the value; a store answers cheaply.
        # An invalid key raises InvalidKeyError, as for every other call.
        key = self._check(key, "contains")
        try:
            return self._contains(key)
        except self._native_errors as exc:
            self._reraise(exc, "contains", key)

    def load_if_changed(self, key: str, etag: str | None = None) -> Versioned[V] | Missing | Unchanged:
        """Load ``key`` with its version tag, unless the stored value still has ``etag``.

        Returns :class:`Versioned` (the value and its ETag), :data:`MISSING`
        if the key is absent, or :data:`UNCHANGED` if its ETag is still
        ``etag``. On S3 this is one GET with ``If-None-Match``, answered 304
        without a body when unchanged; a store without versions always
        loads and gives ``etag=None``. What a tier revalidates its entries with.
        """
        key = self._check(key, "load")
        with self._translating("load", key):
            loaded = self._load_tagged(key, etag)
        if loaded is MISSING or loaded is UNCHANGED:
            return loaded
        data, tag = loaded
        return Versioned(self._decode(data, key, "load"), tag)

    @overload
    def get(self, key: str) -> V | None: ...
    @overload
    def get(self, key: str, default: V | T) -> V | T: ...
    def get(self, key: str, default: Any = None) -> Any:
        """Same as :meth:`load`."""
        # Mapping.get goes through __getitem__ and a KeyError: one call less.
        return self.load(key, default)

    # -- iteration -------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        with self._translating("list", None):
            yield from self._iter_keys()

    def __len__(self) -> int:
        with self._translating("len", None):
            return self._len()

    def __bool__(self) -> bool:
        # Without this, bool() would fall back to __len__ and count every key.
        return next(iter(self), MISSING) is not MISSING

    def keys(self) -> KeysView[str]:
        """A set-like view of the keys; iterating it lists lazily."""
        # The stock view is right: it uses __iter__, __len__ and __contains__.
        return KeysView(self)

    def items(self) -> ItemsView[str, V]:
        """A view of ``(key, value)`` pairs, loaded in batches of ``load_many``.

        A key deleted between listing and loading is left out, not an error.
        """
        return _ItemsView(self)

    def values(self) -> ValuesView[V]:
        """A view of the values, loaded in batches like :meth:`items`."""
        return _ValuesView(self)

    def _iter_items(self) -> Iterator[tuple[str, V]]:
        # Mapping.items() would call self[key] per key, one at a time, and
        # raise KeyError for a key deleted since it was listed.
        for batch in _batches(self, BATCH):
            yield from self.load_many(batch).items()

    # -- bulk ------------------------------------------------------------------

    @final
    def _check_all(self, keys: Iterable[str], operation: str) -> list[str]:
        if isinstance(keys, str):
            raise TypeError(f"{operation} takes an iterable of keys, not one str")
        return list(dict.fromkeys(self._check(key, operation) for key in keys))

    def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """Return ``{key: value}`` for the given keys that are present.

        Absent keys are left out, so a stored ``None`` stays distinguishable.
        Every key is validated before any I/O.
        """
        wanted = self._check_all(keys, "load_many")
        with self._translating("load_many", None):
            found = self._load_many(wanted)
        return {key: self._decode(data, key, "load_many") for key, data in found.items()}

    def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Store every ``(key, value)``.

        Every key is validated and every value encoded before any I/O, so an
        invalid key or value writes nothing. Each value is written atomically;
        the batch as a whole is not a transaction.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded: dict[str, S] = {}
        for raw_key, value in pairs:
            key = self._check(raw_key, "dump_many")
            encoded[key] = self._encode(value, key, "dump_many")
        with self._translating("dump_many", None):
            self._dump_many(list(encoded.items()))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the given keys; return how many existed."""
        wanted = self._check_all(keys, "delete_many")
        with self._translating("delete_many", None):
            return self._delete_many(wanted)

    def clear(self) -> None:
        """Remove every key this backend owns, and nothing else."""
        # MutableMapping.clear() would popitem() one key at a time, loading
        # each value on the way.
        with self._translating("clear", None):
            self._clear()

    # -- locks -------------------------------------------------------------------

    def lock(self, key: str, *, timeout: float | None = 10, ttl: float = 60) -> Lock:
        """The lock of ``key``, for ``with backend.lock(key):``; nothing is sent until it is entered.

        Mutual exclusion across threads and processes (and machines, for S3)
        for as long as the lease lasts: ``ttl`` seconds from acquiring or
        :meth:`~backends.locks.Lock.renew`. Entering waits up to ``timeout``
        seconds (``None``: no limit), then raises LockTimeoutError. Leaving
        raises LockError if the lease ran out and another holder took the
        lock. The lock is not a key: it never shows in ``keys()`` or ``len``.
        """
        key = self._check(key, "lock")
        return self._make_lock(key, timeout, ttl)

    # -- dict methods whose stock versions are wrong here ----------------------

    @overload
    def pop(self, key: str) -> V: ...
    @overload
    def pop(self, key: str, default: V) -> V: ...
    @overload
    def pop(self, key: str, default: T) -> V | T: ...
    def pop(self, key: str, default: Any = MISSING) -> Any:
        """Remove ``key`` and return its value (or ``default``; KeyError without one).

        Atomic where the store can take a value (memory, folders, caches):
        of racing callers exactly one gets each value. Elsewhere a value is
        returned only by the caller whose delete removed it.
        """
        key = self._check(key, "pop")
        with self._translating("pop", key):
            data = self._pop(key)
        if data is MISSING:
            if default is MISSING:
                raise KeyError(key)
            return default
        return self._decode(data, key, "pop")

    def popitem(self) -> tuple[str, V]:
        """Remove and return some ``(key, value)``; KeyError if empty."""
        # The stock popitem() would fail with a KeyError on a key that
        # another writer deleted after it was listed, though others remain.
        for key in self:
            value = self.pop(key, MISSING)
            if value is not MISSING:
                return key, value
        raise KeyError("popitem(): backend is empty")

    def setdefault(self, key: str, default: V = None) -> V:  # type: ignore[assignment]
        """Return the value of ``key``, storing ``default`` first if absent.

        Atomic: uses ``dump(..., if_absent=True)``, so concurrent callers
        agree on one value. Raises StoreError if the store keeps refusing to
        create a key that it reads as absent.
        """
        for _ in range(SETDEFAULT_ROUNDS):
            if self.dump(key, default, if_absent=True):
                return default
            value = self.load(key, MISSING)
            if value is not MISSING:
                return value
            # Deleted between our two calls by another writer: try again.
        raise StoreError(
            f"the store refuses to create the key although it reads as absent "
            f"({SETDEFAULT_ROUNDS} tries); SeaweedFS does so for a key that is also "
            'a folder ("a" while "a/b" exists)',
            backend=repr(self),
            operation="setdefault",
            key=key,
        )

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Store every pair of ``other`` and ``kwargs`` through :meth:`dump_many`."""
        pairs: dict[str, V] = {}
        if isinstance(other, Mapping):
            pairs.update(other.items())
        elif hasattr(other, "keys"):
            pairs.update((key, other[key]) for key in other.keys())  # noqa: SIM118 - duck-typed
        else:
            pairs.update(other)
        pairs.update(kwargs)
        self.dump_many(pairs)

    # -- identity ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        # Mapping.__eq__ would read both stores whole. Two backends are equal
        # when they are views of the same stored data through the same codec;
        # compare contents with dict(a.items()) == dict(b.items()).
        if not isinstance(other, BaseBackend):
            return NotImplemented
        return type(self) is type(other) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash((type(self), self._identity()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """Release what the backend holds (file descriptors, connections)."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc_info: object) -> Literal[False]:
        self.close()
        return False

    # -- folders (last: `list` shadows the builtin in the class body) -------------

    def list(self, prefix: str = "", delimiter: str = "/") -> Iterator[str]:
        """Yield the keys and sub-folders directly below ``prefix``, streaming.

        A sub-folder is yielded once, with a trailing ``delimiter``
        (``"photos/2024/"``); a key never ends with ``/``, so the two cannot be
        confused. ``prefix`` is any string (``"photos/"``, ``"pho"``).
        """
        if not isinstance(prefix, str) or not isinstance(delimiter, str):
            raise TypeError("prefix and delimiter are str")
        with self._translating("list", prefix):
            yield from self._list(prefix, delimiter)


def encode_value(backend: BaseBackend[V, S], value: V, key: str, operation: str) -> S:
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


@dataclass(frozen=True)
class Versioned(Generic[V]):
    """A value with the version tag (ETag) it was stored under: what ``load_if_changed`` returns."""

    value: V
    #: the store's version tag, or None for a store without versions
    etag: str | None


#: a backend of values of type ``V``, whatever its stored form: ``Backend[str]``
#: is every text backend (``FileSystemTextBackend``, ``S3TextBackend``...)
Backend: TypeAlias = BaseBackend[V, Any]


class _Translating:
    """The ``with`` form of :meth:`BaseBackend._reraise`."""

    __slots__ = ("backend", "key", "operation")

    def __init__(self, backend: BaseBackend[Any, Any], operation: str, key: object) -> None:
        self.backend, self.operation, self.key = backend, operation, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> Literal[False]:
        if exc is not None and isinstance(exc, self.backend._native_errors):
            self.backend._reraise(exc, self.operation, self.key)
        return False


class _ItemsView(ItemsView[str, V]):
    _mapping: BaseBackend[V, Any]

    def __iter__(self) -> Iterator[tuple[str, V]]:
        return self._mapping._iter_items()


class _ValuesView(ValuesView[V]):
    _mapping: BaseBackend[V, Any]

    def __iter__(self) -> Iterator[V]:
        return (value for _, value in self._mapping._iter_items())
