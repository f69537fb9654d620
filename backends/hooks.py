"""The store hooks: what a backend implements, and nothing else.

A backend is a :class:`~backends.base.BaseBackend` subclass that sets a
``codec`` class attribute (its value family) and implements the hooks below
on the *stored form* of values (``bytes`` for the built-in families). The
public API (``load``, ``dump``, ``list``, ``items``, ``pop``...) is built on
them by the base, which validates every key before a hook is called, encodes
and decodes values, and translates the store's native errors into the tree
of :mod:`backends.errors`. README.rst, "Writing a backend", walks through it.

Required: ``_load``, ``_dump``, ``_delete``, ``_iter_keys``. Optional (the
defaults are correct, only slower or not atomic): the rest of this class.
A hook never validates keys, never encodes, and raises the store's native
errors (listed in ``_native_errors``) or errors of the tree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import islice
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from .errors import BackendError, StoreError
from .keys import MAX_KEY_BYTES

if TYPE_CHECKING:
    from .locks import Lock

__all__ = ["BATCH", "MISSING", "UNCHANGED", "Missing", "StoreHooks", "Unchanged", "Versioned", "fold_listing"]

S = TypeVar("S")
V = TypeVar("V")

#: how many keys one pass of the default ``_clear`` (and ``items()``) handles
BATCH: Final = 1000


class Missing(Enum):
    """The type of :data:`MISSING`, which a store hook returns for an absent key."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing.MISSING


class Unchanged(Enum):
    """The type of :data:`UNCHANGED`: a conditional load found the stored value unchanged."""

    UNCHANGED = "UNCHANGED"

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged.UNCHANGED


@dataclass(frozen=True)
class Versioned(Generic[V]):
    """A value with the version tag (ETag) it was stored under: what ``load_if_changed`` returns."""

    value: V
    #: the store's version tag, or None for a store without versions
    etag: str | None


class StoreHooks(ABC, Generic[S]):
    """The hooks of a store; ``S`` is the stored form of a value (what the codec makes)."""

    #: the store's native exceptions: the base translates them with :meth:`_translate`
    _native_errors: tuple[type[BaseException], ...] = (OSError,)

    #: the longest key this store takes, in UTF-8 bytes (an S3 prefix uses part of S3's 1024)
    _max_key_bytes: int = MAX_KEY_BYTES

    #: whether a call may wait on I/O; a store in memory never does, so its
    #: async twin (:mod:`backends.aio`) runs its calls inline, without a thread
    _blocks: bool = True

    #: a valid key this store cannot hold, in words (a plain folder tree: a
    #: segment of over 255 bytes); None when it holds every valid key
    _key_rule: Callable[[str], str | None] | None = None

    # -- required ----------------------------------------------------------------------

    @abstractmethod
    def _load(self, key: str) -> S | Missing:
        """Return the stored data of ``key``, or MISSING."""

    @abstractmethod
    def _dump(self, key: str, data: S, if_absent: bool) -> bool:
        """Store ``data`` atomically; with ``if_absent``, return False if the key exists."""

    @abstractmethod
    def _delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""

    @abstractmethod
    def _iter_keys(self) -> Iterator[str]:
        """Yield every key, lazily."""

    # -- optional: correct by default, overridden for speed or atomicity ------------------

    def _contains(self, key: str) -> bool:
        """Whether ``key`` is present; the default loads it. Override to answer without reading."""
        return self._load(key) is not MISSING

    def _load_tagged(self, key: str, tag: str | None) -> tuple[S, str | None] | Missing | Unchanged:
        """Load ``key`` with its version tag (an ETag); UNCHANGED if it still has ``tag``.

        The default has no tags: it always loads. S3 sends one GET with
        ``If-None-Match``, answered 304 without a body when unchanged.
        """
        data = self._load(key)
        return MISSING if data is MISSING else (data, None)

    def _len(self) -> int:
        """How many keys; the default counts ``_iter_keys``."""
        return sum(1 for _ in self._iter_keys())

    def _load_many(self, keys: list[str]) -> dict[str, S]:
        """The stored data of the present keys (distinct, valid); the default loads one by one."""
        found: dict[str, S] = {}
        for key in keys:
            data = self._load(key)
            if data is not MISSING:
                found[key] = data
        return found

    def _dump_many(self, items: list[tuple[str, S]]) -> None:
        """Store every pair (each atomically); the default dumps one by one."""
        for key, data in items:
            self._dump(key, data, False)

    def _delete_many(self, keys: list[str]) -> int:
        """Delete the keys (distinct, valid); return how many existed."""
        return sum(self._delete(key) for key in keys)

    def _clear(self) -> None:
        """Remove every key of this backend and nothing else."""
        # Each pass lists afresh: the keys deleted by the previous pass are
        # gone, so a paged store pays one page and one batch delete per pass.
        while batch := list(islice(self._iter_keys(), BATCH)):
            self._delete_many(batch)

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        """A :class:`~backends.locks.Lock` of ``key`` (nothing sent yet); the default has no locks.

        Build it with ``**self._lock_context()``: the owner, clock and error translation.
        """
        raise NotImplementedError(f"{type(self).__name__} has no per-key locks")

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        """The error class and plain reason for a native exception (one of ``_native_errors``).

        One table, most specific first; never put a secret in the reason.
        """
        return StoreError, str(exc)

    def _describe(self) -> str:
        """The safe fields shown by ``repr``: never a client, secret or session."""
        return ""

    def _identity(self) -> tuple[object, ...]:
        """What makes two backend objects views of the same stored data."""
        return (id(self),)

    def _pop(self, key: str) -> S | Missing:
        """Remove ``key`` and return its stored data, or MISSING.

        The default loads, then deletes, and hands the data out only if its
        own delete removed the key: a caller that lost the race to another
        delete looks again. Stores that can take a value atomically override it.
        """
        while (data := self._load(key)) is not MISSING:
            if self._delete(key):
                return data
        return MISSING

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        """Yield the keys and sub-folders (``delimiter``-ended) directly below ``prefix``, sorted."""
        # The generic way sorts the whole listing in memory (the stores that
        # use it hold their values in memory already); stores that list in
        # order (S3, Redis, folders) override it.
        return fold_listing(
            sorted(key for key in self._iter_keys() if key.startswith(prefix)), prefix, delimiter
        )


def fold_listing(keys: Iterable[str], prefix: str, delimiter: str) -> Iterator[str]:
    """The listing of sorted ``keys``: those below ``prefix``, each sub-folder once (sorted too).

    The keys of one sub-folder are next to each other in sorted order, so
    remembering the last folder is enough: memory stays flat.
    """
    last = None
    start = len(prefix)
    for key in keys:
        if not key.startswith(prefix):
            continue
        cut = key.find(delimiter, start) if delimiter else -1
        if cut < 0:
            yield key
        elif (folder := key[: cut + len(delimiter)]) != last:
            last = folder
            yield folder
