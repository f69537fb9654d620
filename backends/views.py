"""Views: any backend read-only (``backend.readonly()``) or below a prefix (``.namespace("tenant-a/")``).

A :class:`View` is a backend over another one, its ``base``, whose public
calls it makes with its keys put below its prefix. It is not a copy and
holds nothing of its own: the base checks, encodes and stores every value,
so conditional writes (``if_absent``, ``if_match``), ETags,
``load_if_changed``, expiry, locks and tiers behave through a view as on
the base. What the view adds:

- a **namespace** is always a folder: ``namespace("a")`` is
  ``namespace("a/")``, and sees ``a/x`` as ``x``, never ``a`` or ``a2/x``.
  Its keys follow the key rule as full keys: ``prefix + key`` must be a valid
  key of the base (a key too long for it is InvalidKeyError naming the key
  as it was given). Listings, ``len``, ``clear()`` and bulk calls cover its
  keys only; a lock of ``k`` is the base's lock of ``prefix + k``.
- a **read-only** view refuses every write (``dump``, ``delete``, ``pop``,
  ``popitem``, ``clear``, the bulk writes, ``setdefault`` of a key it
  does not find, ``update``, ``purge``, ``fill``, ``renew``, ``dump_file``)
  with :class:`~backends.errors.ReadOnlyError` before any I/O and whatever
  the arguments. Locks are allowed: they coordinate, they change no value.

Views compose: a namespace of a namespace is one view with both prefixes, a
read-only view of a namespace (or the other way round) is one view that
is both. A view's errors name the view and the key as it was given (the
base's error is the ``__cause__``), and so do its events. The optional
calls of the base (``stat``, ``url``, ``strays``, expiry, the entries a tier
fills, files: :mod:`backends.viewcalls`) are the view's exactly when the
base has them: the class of a view is made for the class of its base. What
every view is built on (its base, full keys, renamed errors, refusals,
lifetime) is :mod:`backends.viewbase`.

Closing a view closes the view only; its base (which may serve other
views) stays open. Closing the base closes every view of it.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .base import MISSING, BaseBackend, Missing, Unchanged, Versioned, register_views
from .core import encode_value
from .errors import InvalidKeyError, check_flag
from .events import observed
from .transfers import FileTransfers
from .viewbase import ViewBase, check_prefix
from .viewcalls import PARTS, FilesView

if TYPE_CHECKING:
    from .locks import Lock

__all__ = ["View", "check_prefix", "refuses_writes", "view_class"]

V = TypeVar("V")

#: what the base's ``pop`` gives for an absent key (MISSING there means "no default")
_ABSENT: Final = object()


def refuses_writes(backend: BaseBackend[Any, Any]) -> bool:
    """Whether every write to ``backend`` is refused: a read-only view, or a tier with one as a part."""
    if isinstance(backend, View):
        return backend.is_readonly or refuses_writes(backend.base)
    parts = (getattr(backend, "origin", None), getattr(backend, "cache", None))
    return any(isinstance(part, BaseBackend) and refuses_writes(part) for part in parts)


class View(ViewBase[V]):
    """A read-only and/or namespaced view of ``base``: ``base.readonly()``, ``base.namespace(prefix)``.

    ``prefix``: "" (no namespace) or a namespace, checked (:func:`check_prefix`): a ``/`` is added.
    """

    def __new__(cls, base: BaseBackend[V, Any], *args: Any, **kwargs: Any) -> View[V]:
        # The class of a view is made for its base's: the base's optional calls, and only those.
        store = base.base if isinstance(base, ViewBase) else base
        chosen = view_class(type(store)) if cls is View else cls
        return super().__new__(chosen)

    # -- views of views ---------------------------------------------------------------------

    def readonly(self) -> View[V]:
        """This view, read-only too."""
        return View(self, "", True)

    def namespace(self, prefix: str) -> View[V]:
        """The keys of this view below ``prefix`` (one view: the two prefixes joined)."""
        check_prefix(prefix, self)  # named as given, before it is joined
        return View(self, prefix)

    # -- single keys: the calls that meet values (the base encodes and decodes) ------------------

    @observed("load")
    def load(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` if it is absent."""
        key = self._check(key, "load")
        with self._renamed():
            return self._live("load", key).load(self._full(key), default)

    @observed("dump")
    def dump(self, key: str, value: V, *, if_absent: bool = False, **options: Any) -> bool:
        """Store under ``key``: the base's ``dump``, with its options (``timeout``, ``if_match``)."""
        self._writable("dump", key)
        key = self._check(key, "dump")
        check_flag(if_absent, "if_absent")
        with self._renamed():
            return self._live("dump", key).dump(self._full(key), value, if_absent=if_absent, **options)

    @observed("delete")
    def delete(self, key: str) -> bool:
        """Delete ``key``; return True if it existed, False if it was absent."""
        self._writable("delete", key)
        key = self._check(key, "delete")
        return self._delete(key)  # not super().delete(): observed too, it would tell the call twice

    @observed("pop")
    def pop(self, key: str, default: Any = MISSING) -> Any:
        """Remove ``key`` and return its value (or ``default``; KeyError without one), as the base does."""
        self._writable("pop", key)
        key = self._check(key, "pop")
        with self._renamed():
            value = self._live("pop", key).pop(self._full(key), _ABSENT)
        if value is _ABSENT:
            if default is MISSING:
                raise KeyError(key)
            return default
        return value

    def popitem(self) -> tuple[str, V]:
        """Remove and return some ``(key, value)``; KeyError if empty."""
        self._writable("popitem")
        return super().popitem()

    def setdefault(self, key: str, default: V = None) -> V:  # type: ignore[assignment]
        """Return the value of ``key``, storing ``default`` first if absent (read-only: refused then)."""
        if self.is_readonly:
            try:
                found = self.load(key, MISSING)
            except InvalidKeyError:
                found = MISSING
            if found is MISSING:
                self._refuse("setdefault", key)
            return found  # type: ignore[no-any-return]
        return super().setdefault(key, default)

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Store every pair of ``other`` and ``kwargs`` through :meth:`dump_many`."""
        self._writable("update")
        super().update(other, **kwargs)

    @observed("load_if_changed")
    def load_if_changed(self, key: str, etag: str | None = None) -> Versioned[V] | Missing | Unchanged:
        """The base's ``load_if_changed`` of the key: :class:`Versioned`, MISSING or UNCHANGED."""
        key = self._check(key, "load")
        with self._renamed():
            return self._live("load", key).load_if_changed(self._full(key), etag)

    # -- bulk ---------------------------------------------------------------------------------

    @observed("load_many", keyed=False)
    def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """Return ``{key: value}`` for the given keys that are present (one call of the base's)."""
        wanted = self._check_all(keys, "load_many")
        with self._renamed():
            found = self._live("load_many").load_many([self._full(key) for key in wanted])
        return {key[self._cut :]: value for key, value in found.items()}

    @observed("dump_many", keyed=False)
    def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Store every pair (one call of the base's, which checks every value before any I/O)."""
        self._writable("dump_many")
        pairs = items.items() if isinstance(items, Mapping) else items
        checked: list[tuple[str, V]] = []
        for key, value in pairs:
            try:
                checked.append((self._check(key, "dump_many"), value))
            except InvalidKeyError:
                # Pairs are checked in order, key then value: a value before the bad key
                # that cannot be stored is the first error (the base checks them otherwise).
                for good, earlier in checked:
                    self._check_value(good, earlier, "dump_many")
                raise
        with self._renamed():
            self._live("dump_many").dump_many([(self._full(key), value) for key, value in checked])

    @observed("delete_many", keyed=False)
    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the given keys; return how many existed."""
        self._writable("delete_many")
        return self._delete_many(self._check_all(keys, "delete_many"))

    @observed("clear", keyed=False)
    def clear(self) -> None:
        """Remove every key of this view (a namespace: its keys only, never the base's others)."""
        self._writable("clear")
        self._clear()

    def _check_value(self, key: str, value: V, operation: str) -> None:
        """SerializationError unless the base can store ``value`` (a tier: both its parts)."""
        encode_value(self, value, key, operation)
        also = getattr(self.base, "_check_value", None)
        if also is not None:
            with self._renamed():
                also(self._full(key), value, operation)

    # -- hooks: what the base's calls above are built on ------------------------------------

    def _load(self, key: str) -> Any:
        with self._renamed():
            return self._live("load", key).load(self._full(key), MISSING)

    def _dump(self, key: str, data: Any, if_absent: bool) -> bool:
        with self._renamed():
            return self._live("dump", key).dump(self._full(key), data, if_absent=if_absent)

    def _delete(self, key: str) -> bool:
        with self._renamed():
            return self._live("delete", key).delete(self._full(key))

    def _contains(self, key: str) -> bool:
        with self._renamed():
            return self._full(key) in self._live("contains", key)

    def _iter_keys(self) -> Iterator[str]:
        if not self.prefix:
            with self._renamed():
                yield from self._live("list")
            return
        yield from self._list("", "")

    def _len(self) -> int:
        if not self.prefix:
            with self._renamed():
                return len(self._live("len"))
        return sum(1 for _ in self._iter_keys())

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        with self._renamed():
            for entry in self._live("list").list(self.prefix + prefix, delimiter or None):
                yield entry[self._cut :]

    def _delete_many(self, keys: list[str]) -> int:
        with self._renamed():
            return self._live("delete_many").delete_many([self._full(key) for key in keys])

    def _clear(self) -> None:
        if not self.prefix:
            with self._renamed():
                self._live("clear").clear()
            return
        super()._clear()  # pages of its own keys, deleted in batches

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        with self._renamed():
            return self._live("lock", key).lock(self._full(key), timeout=timeout, ttl=ttl)

    # -- pickling -----------------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        # The base pickles itself (an S3 base refuses: build the view in each process).
        return (_rebuild, (self.base, self.prefix, self.is_readonly, self._closed))


def _rebuild(base: BaseBackend[Any, Any], prefix: str, readonly: bool, closed: bool) -> View[Any]:
    view: View[Any] = View(base, prefix, readonly)
    view._closed = closed
    return view


@functools.lru_cache(maxsize=128)
def view_class(base_class: type[BaseBackend[Any, Any]]) -> type[View[Any]]:
    """The class of a view of a ``base_class`` backend: :class:`View` with the base's optional calls."""
    parts: list[type] = [part for part, names in PARTS if all(hasattr(base_class, name) for name in names)]
    if issubclass(base_class, FileTransfers):
        parts.append(FilesView)
    if not parts:
        return View
    made = types.new_class("View", (*parts, View), {})
    made.__module__ = __name__
    made.__qualname__ = "View"
    return made


# What ``readonly()`` and ``namespace()`` build: base.py never imports this module.
register_views(View, check_prefix)
