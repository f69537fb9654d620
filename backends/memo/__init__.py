"""``@cached``: a function's results kept in any store, computed once per key across machines.

README.rst, "Caching a function". The parts: :mod:`.keys` (the key of a
call), :mod:`.entries` (what is stored: the value and when it was computed),
:mod:`.options` (the decorator's arguments, checked at decoration),
:mod:`.function` (a call: look, lock, look again, compute, store) and
:mod:`.aio` (the same for ``async def``, through the store's twin).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from ..base import BaseBackend
from .aio import AsyncCachedFunction
from .entries import MARK
from .function import OUTCOMES, CachedError, CachedFunction, CachedStats
from .keys import LONGEST_ARGUMENTS, CacheKeyError, KeyRule
from .options import check_store, make_options

__all__ = [
    "LONGEST_ARGUMENTS",
    "MARK",
    "OUTCOMES",
    "AsyncCachedFunction",
    "CacheKeyError",
    "CachedError",
    "CachedFunction",
    "CachedStats",
    "cached",
]


def cached(
    store: BaseBackend[Any, Any],
    timeout: float | None = 300,
    *,
    key: Callable[..., str] | None = None,
    prefix: str = "cached/",
    version: int | str = 1,
    lock_timeout: float | None = 30,
    lease: float = 60,
    on_lock_timeout: Literal["compute", "raise"] = "compute",
    stale_while_revalidate: float = 0,
    stale_if_error: float = 0,
    cache_none: bool = False,
    none_timeout: float | None = None,
    cache_errors: type[Exception] | tuple[type[Exception], ...] = (),
    error_timeout: float | None = None,
    clock: Callable[[], float] | None = None,
) -> Callable[[Callable[..., Any]], CachedFunction[Any, Any]]:
    """Keep the results of the decorated function (or ``async def``, or method) in ``store``.

    Every argument is checked here, before any I/O: a TypeError or
    ValueError naming it. ``store`` keeps JSON values (or any object, in
    memory); a text or raw store is a TypeError.
    """
    checked = check_store(store)
    options = make_options(checked, dict(locals()))
    if key is not None and not callable(key):
        raise TypeError(f"key is None or a callable returning a str, not {type(key).__name__}")

    def decorate(function: Callable[..., Any]) -> CachedFunction[Any, Any]:
        if not callable(function):
            raise TypeError(f"cached decorates a function, not {type(function).__name__}")
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
            raise TypeError(f"cached cannot keep a generator's results: {function.__name__} yields")
        rule = KeyRule(function, options.prefix, options.version, key)
        kind = AsyncCachedFunction if inspect.iscoroutinefunction(function) else CachedFunction
        return kind(function, checked, options, rule)

    return decorate
