"""BaseBackend: the public API of every backend, over the store hooks of :mod:`backends.hooks`.

The base owns what must be identical on every store: key validation before
any I/O, the codec, and translation of the store's native errors into the
tree of :mod:`backends.errors`. A store overrides hooks only (see
:class:`~backends.hooks.StoreHooks` and README.rst, "Writing a backend");
the helpers of :mod:`backends.core`, marked ``@final``, are for a store to
call, never to override.
"""

from __future__ import annotations

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
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeVar, overload

from .bulk import BulkCalls
from .errors import StoreError, check_flag
from .events import HUB, Subscription, observed
from .hooks import BATCH, MISSING, UNCHANGED, Missing, Unchanged, Versioned

if TYPE_CHECKING:
    from .aio import AsyncBackend
    from .events import Event
    from .locks import Lock
    from .views import View

__all__ = [
    "MISSING",
    "UNCHANGED",
    "Backend",
    "BaseBackend",
    "Missing",
    "Unchanged",
    "Versioned",
    "register_twin",
    "register_views",
]

V = TypeVar("V")
S = TypeVar("S")
T = TypeVar("T")

#: The twin of each backend class (``aio()``) and what ``readonly()`` and
#: ``namespace()`` build, registered at import by the modules above that make
#: them (backends.aio, backends.redis.aio; backends.views, registered by
#: backends/__init__): this module never imports the layers above it.
_TWINS: dict[type, Callable[..., AsyncBackend[Any]]] = {}
_VIEWS: dict[str, Callable[..., Any]] = {}


def register_twin(backend_class: type, make: Callable[..., AsyncBackend[Any]]) -> None:
    """``make(backend, max_workers=...)`` is the twin ``aio()`` builds for ``backend_class`` and
    its subclasses (the nearest registered class in the MRO wins)."""
    _TWINS[backend_class] = make


def register_views(view: Callable[..., Any], check_prefix: Callable[..., str]) -> None:
    """The class ``readonly()`` and ``namespace()`` build, and the check of a prefix before it."""
    _VIEWS["view"] = view
    _VIEWS["check_prefix"] = check_prefix


#: rounds of create-or-read before ``setdefault`` gives up on a contradictory store
SETDEFAULT_ROUNDS: Final = 8


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class BaseBackend(BulkCalls[V, S], MutableMapping[str, V]):
    """A dict-like store of ``str`` keys holding values of type ``V``; see the contract in README.rst.

    ``S`` is the stored form (``bytes`` for the built-in families).
    Subclasses set :attr:`codec` and implement the store hooks. Every public
    method validates its keys first and raises
    :class:`~backends.errors.InvalidKeyError` before any I/O. The calls over
    many keys (``load_many``, ``dump_many``, ``delete_many``, ``clear``,
    ``list``) are :class:`~backends.bulk.BulkCalls`'.
    """

    # -- single keys -----------------------------------------------------------

    @overload
    def load(self, key: str) -> V | None: ...
    @overload
    def load(self, key: str, default: T) -> V | T: ...
    @observed("load")
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

    @observed("dump")
    def dump(self, key: str, value: V, *, if_absent: bool = False) -> bool:
        """Store ``value`` under ``key`` atomically and return True.

        With ``if_absent=True`` nothing is written and False is returned when
        the key already exists; of two racing writers exactly one wins.
        Raises SerializationError (nothing written) or a StoreError; never
        returns False for an I/O error.
        """
        check_flag(if_absent, "if_absent")
        return self._write_value(key, value, "dump", lambda key, data: self._dump(key, data, if_absent))

    @observed("delete")
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

    @observed("contains")
    def __contains__(self, key: object) -> bool:
        # Mapping.__contains__ would load the value; a store answers cheaply.
        # An invalid key raises InvalidKeyError, as for every other call.
        key = self._check(key, "contains")
        try:
            return self._contains(key)
        except self._native_errors as exc:
            self._reraise(exc, "contains", key)

    @observed("load_if_changed")
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

    @observed("list", keyed=False)
    def __iter__(self) -> Iterator[str]:
        with self._translating("list", None):
            yield from self._iter_keys()

    @observed("len", keyed=False)
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

    # -- events ------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Event], object], *, digest_keys: bool = False) -> Subscription:
        """Deliver this backend's events to ``callback`` until the subscription is closed.

        Its operations, its locks' and (for a tier) its cache's; see
        :mod:`backends.events`. ``digest_keys=True`` replaces every key by a digest.
        """
        subscription = Subscription(callback, self, digest_keys)
        HUB.add(subscription, self)
        return subscription

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
    @observed("pop")
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
        return self._decode_popped(data, key)

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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        HUB.register(cls)  # its @observed methods are observed while anyone subscribes

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

    def aio(self, *, max_workers: int | None = None) -> AsyncBackend[V]:
        """This backend as coroutines, for asyncio programs (:class:`backends.aio.AsyncBackend`).

        The twin is the one registered for the nearest class of this backend
        (:func:`register_twin`): :mod:`backends.aio` registers the thread-pool
        twin of every backend, :mod:`backends.redis.aio` the native one of Redis.
        """
        for klass in type(self).__mro__:
            make = _TWINS.get(klass)
            if make is not None:
                return make(self, max_workers=max_workers)
        raise RuntimeError("no async twin is registered: import backends.aio")  # backends/__init__ does

    # -- views ----------------------------------------------------------------------

    def readonly(self) -> View[V]:
        """This backend read-only: every write raises ReadOnlyError before any I/O (:mod:`backends.views`)."""
        return _VIEWS["view"](self, "", True)  # type: ignore[no-any-return]

    def namespace(self, prefix: str) -> View[V]:
        """The keys of this backend below ``prefix``, as a backend of their own (:mod:`backends.views`).

        A namespace is a folder: ``"tenant-a"`` is ``"tenant-a/"``, which never
        sees ``tenant-a2/...``. TypeError or ValueError (naming ``prefix``)
        for a prefix that is no valid key, before any I/O.
        """
        make, check_prefix = _VIEWS["view"], _VIEWS["check_prefix"]
        return make(self, check_prefix(prefix, self))  # type: ignore[no-any-return]


#: a backend of values of type ``V``, whatever its stored form: ``Backend[str]``
#: is every text backend (``FileSystemTextBackend``, ``S3TextBackend``...)
Backend: TypeAlias = BaseBackend[V, Any]


class _ItemsView(ItemsView[str, V]):
    _mapping: BaseBackend[V, Any]

    def __iter__(self) -> Iterator[tuple[str, V]]:
        return self._mapping._iter_items()


class _ValuesView(ValuesView[V]):
    _mapping: BaseBackend[V, Any]

    def __iter__(self) -> Iterator[V]:
        return (value for _, value in self._mapping._iter_items())


HUB.register(BaseBackend)
