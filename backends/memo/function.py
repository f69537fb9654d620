"""CachedFunction: a function whose results are kept in a store, computed once per key.

A call (README.rst, "Caching a function"): build the key; load the entry;
a fresh one is the answer (a hit). An entry past its timeout but inside
``stale_while_revalidate`` is served at once, and a background thread
(one per key and process) refreshes it if it takes the key's lock without
waiting (through a tier, it first reads the origin, where another machine
may have stored a fresh value). Anything else is a miss: take the key's lock (the
store's, held across threads, processes and machines), look again (a
caller that waited finds the holder's value: a hit), else run the function,
store its result, release. Past ``lock_timeout`` a waiter computes by
itself (``on_lock_timeout="compute"``) or raises LockTimeoutError.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, Generic, ParamSpec, TypeVar

from ..base import MISSING, BaseBackend
from ..errors import BackendError, CorruptValueError, LockError, LockTimeoutError
from ..events import HUB, Counters
from ..locks import Lock
from .answers import OUTCOMES, BoundCached, CachedError, CachedStats, classes_by_name, rebuild
from .entries import Found, error_entry, read_entry, value_entry
from .holding import forget, hold, holding_of
from .keys import KeyRule
from .options import Options, keeps_timeouts, tiers_of

__all__ = ["CORRUPT", "OUTCOMES", "BoundCached", "CachedError", "CachedFunction", "CachedStats"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("backends.cached")

#: what ``_look`` found for bytes the store's codec cannot decode
CORRUPT: Final = object()

#: every decorated function of this process, made ready again in a forked child
_FUNCTIONS: weakref.WeakSet[CachedFunction[Any, Any]] = weakref.WeakSet()


class CachedFunction(Generic[P, R]):
    """A function decorated with :func:`~backends.cached`: call it as the function itself."""

    def __init__(
        self, function: Callable[P, R], store: BaseBackend[Any, Any], options: Options, rule: KeyRule
    ):
        functools.update_wrapper(self, function, updated=())  # never its __dict__ over ours
        self.function = function
        self.store = store
        self.options = options
        self._rule = rule
        self._name = rule.name
        #: what this function did in this process: operation "cached", the outcomes of OUTCOMES
        self.counters = Counters()
        self._counts = {outcome: self.counters.counter("", "cached", outcome) for outcome in OUTCOMES}
        self._timed = keeps_timeouts(store)
        self._error_classes: dict[str, type[Exception]] | None = None
        self._tiers = tiers_of(store)
        self._start()
        _FUNCTIONS.add(self)

    def _start(self) -> None:
        self._guard = threading.Lock()
        self._refreshing: set[str] = set()
        self._threads: set[threading.Thread] = set()

    # -- the public API ------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key = self._rule(args, kwargs)
        return self._get(key, lambda: self.function(*args, **kwargs))  # type: ignore[no-any-return]

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key of this call (no I/O)."""
        return self._rule(args, kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry of this call; True if there was one."""
        return self.store.delete(self._rule(args, kwargs))

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function for this call under its key's lock, store and return the result."""
        key = self._rule(args, kwargs)
        call = lambda: self.function(*args, **kwargs)  # noqa: E731 - the same call as __call__'s
        lock = self._lock(key, self.options.lock_timeout)
        held = self._acquire(lock, key)
        try:
            result = self._compute(key, call, self._look(key))
        except BaseException as exc:
            self._let_go(lock if held else None, exc)
            raise
        self._release(lock if held else None, key)
        return result  # type: ignore[no-any-return]

    @property
    def stats(self) -> CachedStats:
        """A snapshot of the counts of hits, misses, stale values served and runs of the body."""
        count = self.counters.get
        return CachedStats(
            count("cached", "hit").count,
            count("cached", "miss").count,
            count("cached", "stale").count,
            count("cached", "computed").count,
        )

    def join(self, timeout: float | None = None) -> bool:
        """Wait for this process's background refreshes (stale-while-revalidate); True once none runs."""
        with self._guard:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        with self._guard:
            return not self._threads

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        # A method: the instance is bound as the first argument (left out of the key: self/cls).
        if instance is None:
            return self
        return BoundCached(self, instance)

    def __repr__(self) -> str:
        return f"<cached {self._name} in {self.store!r}>"

    # -- one call ------------------------------------------------------------------------

    def _get(self, key: str, call: Callable[[], Any]) -> Any:
        found = self._look(key)
        if found is not None:
            now = self.options.clock()
            if found.fresh(now):
                return self._hit(key, found)
            if found.error is None and 0 <= found.stale_for(now) < self.options.stale_while_revalidate:
                self._revalidate(key, call)
                return self._stale(key, found)
        return self._compute_once(key, call, found)

    def _compute_once(self, key: str, call: Callable[[], Any], found: Found | None) -> Any:
        lock = self._lock(key, self.options.lock_timeout)
        held = self._acquire(lock, key)
        try:
            if held:
                again = self._look_again(key)
                if again is not None and again.fresh(self.options.clock()):
                    result = self._hit(key, again)  # another caller computed it while we waited
                else:
                    result = self._miss(key, call, again or found)
            else:
                result = self._miss(key, call, found)
        except BaseException as exc:
            self._let_go(lock if held else None, exc)
            raise
        self._release(lock if held else None, key)
        return result

    def _miss(self, key: str, call: Callable[[], Any], found: Found | None) -> Any:
        return self._compute(key, call, found, miss=True)

    def _compute(self, key: str, call: Callable[[], Any], found: Found | None, *, miss: bool = False) -> Any:
        """Run the body once; store its result (or a cached error); stale if it fails within the grace.

        ``miss``: the call is told a miss, unless a stale value is its answer (one outcome a call):
        where stale_if_error may answer, the miss is told once the body has not failed into it.
        """
        later = miss and self._stale_on_error(found)
        if miss and not later:
            self._tell(key, "miss")
        self._tell(key, "computed")
        try:
            result = call()
        except Exception as exc:
            return self._failed(key, exc, found, miss=later)
        if later:
            self._tell(key, "miss")
        self._keep(key, result)
        return result

    def _keep(self, key: str, result: Any) -> None:
        if result is None and not self.options.cache_none:
            return
        ttl = self.options.none_timeout if result is None else self.options.timeout
        self._dump(key, value_entry(result, self.options.clock(), ttl), ttl)

    def _failed(self, key: str, exc: Exception, found: Found | None, *, miss: bool = False) -> Any:
        if self._stale_on_error(found):
            assert found is not None
            self._tell(key, "failed", type(exc).__name__)
            return self._stale(key, found)
        if miss:
            self._tell(key, "miss")
        if isinstance(exc, self.options.cache_errors):
            ttl = self.options.error_timeout
            self._dump(key, error_entry(exc, self.options.clock(), ttl), ttl)
        self._tell(key, "failed", type(exc).__name__)
        raise exc

    def _stale_on_error(self, found: Found | None) -> bool:
        if found is None or found.error is not None or not self.options.stale_if_error:
            return False
        return found.stale_for(self.options.clock()) < self.options.stale_if_error

    # -- refreshing in the background ----------------------------------------------------

    def _revalidate(self, key: str, call: Callable[[], Any]) -> None:
        """Start one refresh of ``key`` in a background thread, unless this process runs one already."""
        with self._guard:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
            thread = threading.Thread(
                target=self._refresh_stale, args=(key, call), name=f"cached refresh {self._name}", daemon=True
            )
            self._threads.add(thread)
        try:
            thread.start()
        except BaseException:
            self._done(key, thread)
            raise

    def _refresh_stale(self, key: str, call: Callable[[], Any]) -> None:
        """Refresh a stale entry: only the caller anywhere that takes the key's lock at once computes.

        Through a tier, the origin is read first: a value another machine
        stored there already refreshes this machine's caches, with no lock.
        """
        try:
            if self._tiers and self._look_again(key, fresh_only=True) is not None:
                return
            lock = self._lock(key, 0)
            if not self._acquire(lock, key, quiet=True):
                return  # another caller, here or elsewhere, refreshes it
            try:
                again = self._look_again(key)
                if again is None or not again.fresh(self.options.clock()):
                    self._compute(key, call, None)
            except BaseException as exc:
                self._let_go(lock, exc)
                raise
            self._release(lock, key)
        except Exception as exc:
            self._tell(key, "refresh failed", type(exc).__name__)
            log.warning("background refresh of %s failed: %s", self._name, type(exc).__name__)
        finally:
            self._done(key, threading.current_thread())

    def _done(self, key: str, thread: threading.Thread | None) -> None:
        with self._guard:
            self._refreshing.discard(key)
            self._threads.discard(thread)

    # -- the store -------------------------------------------------------------------------

    def _look(self, key: str, *, again: bool = False) -> Found | None:
        """The entry under ``key``; None if absent, or foreign (not an entry of ours: a miss).

        Foreign data is told once per call, at the first look (not ``again``, under the lock).
        """
        try:
            stored = self.store.load(key, MISSING)
        except CorruptValueError:  # bytes that are no JSON: foreign, replaced on the next store
            stored = CORRUPT
        return None if stored is MISSING else self._read(key, stored, again)

    def _look_again(self, key: str, *, fresh_only: bool = False) -> Found | None:
        """The look under the key's lock: through a tier, a stale copy in its caches is dropped and the
        origin read, so that a value another machine stored there meanwhile is found.

        ``fresh_only``: None unless the entry found is fresh.
        """
        found = self._look(key, again=True)
        if found is not None and self._tiers and not found.fresh(self.options.clock()):
            self._drop_copies(key)
            found = self._look(key, again=True)
        if fresh_only and (found is None or not found.fresh(self.options.clock())):
            return None
        return found

    def _drop_copies(self, key: str) -> None:
        for tier in self._tiers:
            tier.cache.delete(key)

    def _read(self, key: str, stored: Any, again: bool) -> Found | None:
        found = None if stored is CORRUPT else read_entry(stored)
        if found is None and not again:
            self._tell(key, "foreign")
        return found

    def _dump(self, key: str, entry: dict[str, Any], ttl: float | None) -> None:
        """Store ``entry``; under a lock whose lease may have run out, only while it is still ours."""
        holding = holding_of(key)
        if holding is None or holding.covers(self.options.clock()):
            self._write(key, entry, ttl)
        elif not holding.lock.while_held(lambda: self._write(key, entry, ttl)):
            holding.lost = True  # another caller may have stored a newer value: ours is not written
            self._tell(key, "lost")

    def _write(self, key: str, entry: dict[str, Any], ttl: float | None) -> None:
        if self._timed:
            self.store.dump(key, entry, timeout=self.options.kept_for(ttl))  # type: ignore[call-arg]
        else:
            self.store.dump(key, entry)

    def _lock(self, key: str, timeout: float | None) -> Lock:
        return self.store.lock(key, timeout=timeout, ttl=self.options.lease)

    def _acquire(self, lock: Lock, key: str, *, quiet: bool = False) -> bool:
        """Take ``lock``; False past its timeout when the caller goes on without it."""
        since = self.options.clock()
        try:
            lock.acquire()
        except LockTimeoutError:
            if quiet:
                return False
            self._tell(key, "lock timed out")
            if self.options.on_lock_timeout == "raise":
                raise
            return False
        hold(key, lock, since, lock.ttl)
        return True

    def _release(self, lock: Lock | None, key: str) -> None:
        """Release after a result: a lease lost meanwhile is counted ("lost"), the result still returned."""
        if lock is None:
            return
        holding = forget(lock)
        try:
            lock.release()
        except LockError:
            # The lease ran out and another caller took the key: it may have run the body too.
            if holding is None or not holding.lost:  # told once, when its write was skipped
                self._tell(key, "lost")

    def _let_go(self, lock: Lock | None, exc: BaseException) -> None:
        """Release after an error: a failed release is a note on the error, which stays the one raised."""
        if lock is not None:
            forget(lock)
        if lock is None or not lock.held:
            return
        try:
            lock.release()
        except BackendError as also:
            if sys.version_info >= (3, 11):
                exc.add_note(f"the key's lock was not released: {also}")

    # -- answers ---------------------------------------------------------------------------

    def _hit(self, key: str, found: Found) -> Any:
        self._tell(key, "hit")
        if found.error is not None:
            raise self._rebuilt(key, *found.error)
        return found.value

    def _stale(self, key: str, found: Found) -> Any:
        self._tell(key, "stale")
        return found.value

    def _rebuilt(self, key: str, kind: str, message: str) -> Exception:
        """The cached error: its class with the stored message if among cache_errors, else CachedError."""
        if self._error_classes is None:
            self._error_classes = classes_by_name(self.options.cache_errors)
        return rebuild(self._error_classes, kind, message, self._name, repr(self.store))

    def _tell(self, key: str, outcome: str, detail: str = "") -> None:
        self._counts[outcome].add()
        if HUB.on:
            HUB.emit(self.store, "cached", key, outcome, detail=f"{self._name} {detail}".rstrip())


def _after_fork() -> None:
    # A child has none of its parent's refresh threads: it must not wait for them.
    for function in list(_FUNCTIONS):
        function._start()


os.register_at_fork(after_in_child=_after_fork)
