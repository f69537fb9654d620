"""What every view is built on (:mod:`backends.views`): its base, its keys below the prefix,
the base's errors renamed as the view's, the refusals before any I/O, its lifetime.

:class:`ViewBase` holds the state of a view and nothing of its calls: the
calls of every view are :class:`~backends.views.View`'s, the optional ones
(a base's ``stat``, ``url``, expiry...) those of :mod:`backends.viewcalls`,
each written on this class alone, so that neither imports the other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal, NoReturn, TypeVar

from .base import BaseBackend
from .errors import BackendError, ReadOnlyError, StoreError, shown
from .keys import MAX_KEY_BYTES, key_problem

__all__ = ["ViewBase", "check_prefix"]

V = TypeVar("V")


def check_prefix(prefix: object, base: BaseBackend[Any, Any] | None = None, name: str = "prefix") -> str:
    """``prefix`` as a namespace of ``base``: ending with one ``/``, itself a valid key before it.

    Raises TypeError for a non-``str``, ValueError naming ``name`` for an
    empty one, ``/``, a control character, a lone surrogate, an empty,
    ``.`` or ``..`` segment, a segment the base cannot hold, or one that
    leaves no room for a key below it (without ``base``: in 1024 bytes). Never any I/O.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"{name} is a str, like 'tenant-a/', not {type(prefix).__name__}")
    folder = prefix[:-1] if prefix.endswith("/") else prefix
    problem = key_problem(folder) if folder else "empty"
    if problem is None and base is not None and base._key_rule is not None:
        problem = base._key_rule(folder)
    if problem is not None:
        raise ValueError(
            f"{name} {shown(prefix)} is no namespace ({problem}): a namespace is a valid key, "
            "and a '/' is added after it"
        )
    size = len(folder.encode("utf-8")) + 1
    room = MAX_KEY_BYTES if base is None else base.max_key_bytes
    if size >= room:
        raise ValueError(
            f"{name} is {size} UTF-8 bytes with its '/': it leaves no room for a key "
            f"in the {room} bytes the store takes"
        )
    return folder + "/"


class _Renamed:
    """A ``with`` block that raises the base's errors as the view's: its name, the key as given."""

    __slots__ = ("view",)

    def __init__(self, view: ViewBase[Any]) -> None:
        self.view = view

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> Literal[False]:
        if isinstance(exc, BackendError) and exc.backend != self.view._name:
            self.view._rename(exc)
        return False


class ViewBase(BaseBackend[V, Any]):
    """The state every view has (``base``, ``prefix``, ``is_readonly``) and how its calls reach the
    base: full keys, renamed errors, refusals. Made as a :class:`~backends.views.View`."""

    #: the backend this is a view of (never itself a view)
    base: BaseBackend[V, Any]
    #: the namespace ("" for none), ending with "/"
    prefix: str
    #: whether every write is refused
    is_readonly: bool

    def __init__(self, base: BaseBackend[V, Any], prefix: str = "", readonly: bool = False) -> None:
        if not isinstance(base, BaseBackend):
            raise TypeError(f"a view is of a backend, not of {type(base).__name__}")
        if not isinstance(readonly, bool):
            raise TypeError(f"readonly is True or False, not {type(readonly).__name__}")
        if isinstance(base, ViewBase):  # a view of a view is one view: both prefixes, readonly if either is
            outer: ViewBase[V] = base
            if not isinstance(prefix, str):
                raise TypeError(f"prefix is a str, like 'tenant-a/', not {type(prefix).__name__}")
            prefix = outer.prefix + prefix if prefix else outer.prefix
            readonly, base = readonly or outer.is_readonly, outer.base
        if prefix != "":
            prefix = check_prefix(prefix, base)
        self.base = base
        self.prefix = prefix
        self.is_readonly = readonly
        self.codec = base.codec
        self._closed = False
        self._cut = len(prefix)
        self._blocks = base._blocks
        self._native_errors = ()  # the base raises errors of the tree only
        self._max_key_bytes = base.max_key_bytes - len(prefix.encode("utf-8"))
        rule = base._key_rule
        if rule is not None and prefix:
            self._key_rule = lambda key: rule(prefix + key)
        else:
            self._key_rule = rule
        if (workers := getattr(base, "max_workers", None)) is not None:
            self.max_workers = workers
        self._name = repr(self)

    # -- the base, with full keys -----------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:  # the base's, read each time
        """The base's clock (of its leases and expiry)."""
        return self.base.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        """Set the base's clock: a view has no time of its own."""
        self.base.clock = clock

    def _live(self, operation: str, key: object = None) -> BaseBackend[V, Any]:
        """The base, unless this view was closed (StoreError naming the call)."""
        if self._closed:
            raise StoreError(
                "this view is closed (close() was called); its base is not: make a new view of it",
                backend=self._name,
                operation=operation,
                key=key,
            )
        return self.base

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _outer(self, key: object) -> object:
        """A key of the base as this view names it (unchanged if it is not below the prefix)."""
        if isinstance(key, str) and key.startswith(self.prefix):
            return key[self._cut :]
        return key

    def _rename(self, exc: BackendError) -> NoReturn:
        renamed = type(exc)(exc.reason, backend=self._name, operation=exc.operation, key=self._outer(exc.key))
        if sys.version_info >= (3, 11):
            for note in getattr(exc, "__notes__", ()):
                renamed.add_note(note)
        raise renamed from exc

    def _renamed(self) -> _Renamed:
        return _Renamed(self)

    def _refuse(self, operation: str, key: object = None) -> NoReturn:
        raise ReadOnlyError(
            "this view is read-only: every write is refused, before any I/O",
            backend=self._name,
            operation=operation,
            key=key if isinstance(key, str) else None,
        )

    def _writable(self, operation: str, key: object = None) -> None:
        if self.is_readonly:
            self._refuse(operation, key)

    # -- identity, lifetime -----------------------------------------------------------------

    def __repr__(self) -> str:
        shown = repr(self.base)
        if self.prefix:
            shown += f".namespace({self.prefix!r})"
        return shown + (".readonly()" if self.is_readonly else "")

    def _identity(self) -> tuple[object, ...]:
        return (self.base, self.prefix, self.is_readonly)

    @property
    def closed(self) -> bool:
        """Whether this view or its base was closed: calls then raise StoreError."""
        return self._closed or self.base.closed

    def close(self) -> None:
        """Close this view (its calls then raise StoreError); its base stays open for its other users."""
        self._closed = True
