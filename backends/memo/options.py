"""The options of ``@cached``, each checked at decoration: a TypeError or ValueError naming it;
and what the store is, read once at decoration (its family, its timeouts, its tiers)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..base import BaseBackend
from ..cache import MAX_TIMEOUT, ExpiringCache
from ..keys import key_problem
from ..locks import check_lease, check_wait
from ..tier.base import TierBase

__all__ = ["ON_LOCK_TIMEOUT", "Options", "check_store", "keeps_timeouts", "make_options", "tiers_of"]

#: what a caller does when the key's lock is not had within ``lock_timeout``
ON_LOCK_TIMEOUT: Final = ("compute", "raise")


@dataclass(frozen=True)
class Options:
    """The checked options of one decorated function."""

    timeout: float | None
    prefix: str
    version: int | str
    lock_timeout: float | None
    lease: float
    on_lock_timeout: str
    stale_while_revalidate: float
    stale_if_error: float
    cache_none: bool
    none_timeout: float | None
    cache_errors: tuple[type[Exception], ...]
    error_timeout: float | None
    clock: Callable[[], float]

    @property
    def grace(self) -> float:
        """How long past its timeout an entry may still be served (stale)."""
        return max(self.stale_while_revalidate, self.stale_if_error)

    def kept_for(self, ttl: float | None) -> float | None:
        """The store's own timeout for an entry of ``ttl``: the grace on top (None: never expires)."""
        return None if ttl is None else min(ttl + self.grace, MAX_TIMEOUT)


def _seconds(value: object, name: str, *, never: bool) -> float | None:
    """Seconds from 0 (finite, at most 100 years); None or math.inf mean never where ``never``."""
    if value is None and never:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "None (never), math.inf or seconds" if never else "seconds"
        raise TypeError(f"{name} is {what}, not {type(value).__name__}")
    if never and value == math.inf:
        return None
    if not 0 <= value <= MAX_TIMEOUT:
        raise ValueError(f"{name} is seconds from 0 to {MAX_TIMEOUT:.0f} (100 years), not {value!r}")
    return float(value)


def _prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix is a str, not {type(prefix).__name__}")
    problem = key_problem(prefix + "x")
    if problem is not None:
        raise ValueError(f"prefix must start a valid key ({problem}), not {prefix!r}")
    return prefix


def _version(version: object) -> int | str:
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise TypeError(f"version is an int or a str, not {type(version).__name__}")
    if isinstance(version, int):
        if version < 0:
            raise ValueError(f"version is an int from 0, not {version!r}")
        return version
    if not version or "/" in version or key_problem(version) is not None:
        raise ValueError(f"version is a non-empty str without '/' or control characters, not {version!r}")
    return version


def _errors(cache_errors: object) -> tuple[type[Exception], ...]:
    kinds = (cache_errors,) if isinstance(cache_errors, type) else cache_errors
    if not isinstance(kinds, tuple):
        raise TypeError(f"cache_errors is a tuple of exception classes, not {type(cache_errors).__name__}")
    for kind in kinds:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            raise TypeError(f"cache_errors holds subclasses of Exception, not {kind!r}")
    return kinds


def _timeout_of(value: object, name: str, default: float | None) -> float | None:
    """A negative-cache timeout: None is the main ``timeout``."""
    return default if value is None else _seconds(value, name, never=True)


def make_options(store: BaseBackend[Any, Any], given: dict[str, Any]) -> Options:
    """Check every option (a TypeError or ValueError naming it) and fill in the defaults."""
    timeout = _seconds(given["timeout"], "timeout", never=True)
    if given["on_lock_timeout"] not in ON_LOCK_TIMEOUT:
        raise ValueError(f"on_lock_timeout is 'compute' or 'raise', not {given['on_lock_timeout']!r}")
    if not isinstance(given["cache_none"], bool):
        raise TypeError(f"cache_none is a bool, not {type(given['cache_none']).__name__}")
    clock = given["clock"]
    if clock is not None and not callable(clock):
        raise TypeError(f"clock is a callable returning seconds since the epoch, not {type(clock).__name__}")
    return Options(
        timeout=timeout,
        prefix=_prefix(given["prefix"]),
        version=_version(given["version"]),
        lock_timeout=_wait(given["lock_timeout"]),
        lease=_lease(given["lease"]),
        on_lock_timeout=given["on_lock_timeout"],
        stale_while_revalidate=_seconds(
            given["stale_while_revalidate"], "stale_while_revalidate", never=False
        )
        or 0.0,
        stale_if_error=_seconds(given["stale_if_error"], "stale_if_error", never=False) or 0.0,
        cache_none=given["cache_none"],
        none_timeout=_timeout_of(given["none_timeout"], "none_timeout", timeout),
        cache_errors=_errors(given["cache_errors"]),
        error_timeout=_timeout_of(given["error_timeout"], "error_timeout", timeout),
        clock=clock if clock is not None else store.clock,
    )


def _wait(value: object) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"lock_timeout is None (no limit) or seconds, not {type(value).__name__}")
    return check_wait(value, "lock_timeout")


def _lease(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"lease is seconds, not {type(value).__name__}")
    return check_lease(value, "lease")


def check_store(store: object) -> BaseBackend[Any, Any]:
    """The store, if it keeps JSON values (or any object); else TypeError, at decoration."""
    if not isinstance(store, BaseBackend):
        raise TypeError(f"cached takes a backend as its store, not {type(store).__name__}")
    for part in _parts(store):
        if part.codec.name not in ("json", "object"):
            raise TypeError(
                f"cached keeps JSON values and {part!r} stores {part.codec.name} values: "
                "use a Json store (JsonCache, S3JsonBackend, RedisJsonBackend...) or a memory one"
            )
    return store


def _parts(store: BaseBackend[Any, Any]) -> list[BaseBackend[Any, Any]]:
    """The store and, for a tier, every level under it (a tier itself stores any object)."""
    found, todo = [], [store]
    while todo:
        part = todo.pop()
        found.append(part)
        todo.extend(
            inner
            for inner in (getattr(part, "cache", None), getattr(part, "origin", None))
            if inner is not None
        )
    return [part for part in found if isinstance(part, BaseBackend)]


def keeps_timeouts(store: BaseBackend[Any, Any]) -> bool:
    """Whether ``store.dump`` takes a timeout per entry: caches, SQLite, Redis, and a tier whose
    cache does (a tier of a cache without expiry refuses one)."""
    if "timeout" not in inspect.signature(store.dump).parameters:
        return False
    return not isinstance(store, TierBase) or isinstance(store.cache, ExpiringCache)


def tiers_of(store: BaseBackend[Any, Any]) -> list[TierBase]:
    """The tiers of ``store`` from the top: itself if a tier, and its origin if that is one too."""
    found: list[TierBase] = []
    while isinstance(store, TierBase):
        found.append(store)
        store = store.origin
    return found
