"""What a cached call answers besides the value: its outcomes, its counts, a cached error, a bound method."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Final

from ..errors import BackendError

__all__ = ["OUTCOMES", "BoundCached", "CachedError", "CachedStats", "classes_by_name", "rebuild"]

#: what ``f.counters`` counts (operation "cached"), and the outcomes of its events
OUTCOMES: Final = (
    "hit",
    "miss",
    "stale",
    "computed",
    "failed",
    "lock timed out",
    "foreign",
    "lost",
    "refresh failed",
)


class CachedError(BackendError):
    """A cached exception whose class could not be rebuilt (not among ``cache_errors``).

    ``error_class`` is the qualified name of the class, ``message`` its text.
    """

    error_class: str = ""
    message: str = ""


@dataclass(frozen=True)
class CachedStats:
    """What a decorated function did in this process (``f.stats``)."""

    #: calls answered by a fresh entry (also after waiting for another caller's result)
    hits: int = 0
    #: calls that found no fresh entry and ran the function themselves
    misses: int = 0
    #: calls answered by a stale entry (refreshing, or the function failed)
    stale: int = 0
    #: runs of the function body in this process (misses, refreshes, ``refresh()``)
    computed: int = 0


def rebuild(classes: dict[str, type[Exception]], kind: str, message: str, name: str, store: str) -> Exception:
    """A cached error raised again: its class (found in ``classes``, by qualified name) with the
    stored message, or CachedError if no class there takes the message alone."""
    found = classes.get(kind)
    if found is not None:
        try:
            error = found(message)
        except Exception:  # a class that takes no message: CachedError below
            pass
        else:
            if sys.version_info >= (3, 11):
                error.add_note(f"cached by {name}")
            return error
    failure = CachedError(f"the cached error {kind}: {message}", backend=store, operation="cached")
    failure.error_class, failure.message = kind, message
    return failure


def classes_by_name(kinds: tuple[type[Exception], ...]) -> dict[str, type[Exception]]:
    """The classes of ``kinds`` and all their subclasses, by qualified name."""
    found: dict[str, type[Exception]] = {}
    todo = list(kinds)
    while todo:
        kind = todo.pop()
        name = f"{kind.__module__}.{kind.__qualname__}"
        if name not in found:
            found[name] = kind
            todo.extend(kind.__subclasses__())
    return found


class BoundCached:
    """A cached method bound to its instance: ``obj.method(...)``, ``obj.method.invalidate(...)``."""

    def __init__(self, cached: Any, instance: object) -> None:
        self.__func__ = cached
        self.__self__ = instance
        functools.update_wrapper(self, cached.function, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return str(self.__func__.cache_key(self.__self__, *args, **kwargs))

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.invalidate(self.__self__, *args, **kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__.refresh(self.__self__, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__func__, name)
