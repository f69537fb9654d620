"""The sinks: :class:`MemorySink` (a bounded ring), :class:`LoggingSink` (the ``backends``
logger, one line per event) and :class:`Counters` (counts and latency histograms per backend,
operation and outcome). Each is a callable to :func:`~backends.subscribe`."""

from __future__ import annotations

import bisect
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from ..forkgate import new_locks_in_child
from .record import Event

__all__ = ["LATENCY_BUCKETS", "Counter", "Counters", "LoggingSink", "MemorySink", "Tally"]

#: upper bounds (seconds) of the latency histogram's buckets; the last one is open
LATENCY_BUCKETS: Final = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


class MemorySink:
    """The last ``size`` events, in a ring: for tests, and for the command."""

    def __init__(self, size: int = 10_000) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size is an int >= 1, not {size!r}")
        self.events: deque[Event] = deque(maxlen=size)

    def __call__(self, event: Event) -> None:
        self.events.append(event)  # deque.append is atomic

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self.events))

    def __len__(self) -> int:
        return len(self.events)

    def clear(self) -> None:
        self.events.clear()


class LoggingSink:
    """One log line per event on the ``backends`` logger (DEBUG; failures and lost locks at WARNING)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("backends")

    def __call__(self, event: Event) -> None:
        level = logging.WARNING if event.outcome in ("failed", "lost", "timed out") else logging.DEBUG
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level, "%s [%s pid %d] %s", event.backend, event.host, event.pid, event.describe()
            )


@dataclass(frozen=True)
class Tally:
    """What :class:`Counters` holds for one backend, operation and outcome."""

    count: int
    #: events of the histogram bucket at the same index of LATENCY_BUCKETS (one more: above them)
    buckets: tuple[int, ...]
    #: the sum of the durations, seconds
    seconds: float


class Counter:
    """One count of :class:`Counters`, kept at hand (``Counters.counter``)."""

    __slots__ = ("_counters", "_tally")

    def __init__(self, tally: list[Any], counters: Counters) -> None:
        self._tally = tally
        self._counters = counters  # its lock, read at each add: made anew in a forked child

    def add(self, amount: int = 1) -> None:
        with self._counters._lock:
            self._tally[0] += amount


class Counters:
    """Counts and latency histograms per (backend, operation, outcome)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], list[Any]] = {}
        # Every hit or miss of a cache holds it an instant, in any thread: new in a forked child.
        new_locks_in_child(self, "_lock")

    def __call__(self, event: Event) -> None:
        self.add(event.backend, event.operation, event.outcome, 1, event.duration)

    def counter(self, backend: str, operation: str, outcome: str) -> Counter:
        """The count of one (backend, operation, outcome), to add to directly: for a hot path."""
        with self._lock:
            return Counter(self._tally(backend, operation, outcome), self)

    def _tally(self, backend: str, operation: str, outcome: str) -> list[Any]:
        slot = (backend, operation, outcome)
        tally = self._counts.get(slot)
        if tally is None:
            tally = self._counts[slot] = [0, [0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        return tally

    def add(
        self, backend: str, operation: str, outcome: str, amount: int = 1, duration: float | None = None
    ) -> None:
        """Count ``amount`` of ``operation``/``outcome`` for ``backend`` (and a duration, if given)."""
        with self._lock:
            tally = self._tally(backend, operation, outcome)
            tally[0] += amount
            if duration is not None:
                tally[1][bisect.bisect_left(LATENCY_BUCKETS, duration)] += 1
                tally[2] += duration

    def get(self, operation: str, outcome: str, backend: str | None = None) -> Tally:
        """The tally of ``operation``/``outcome``, for one backend (its repr) or summed over all."""
        count, buckets, seconds = 0, [0] * (len(LATENCY_BUCKETS) + 1), 0.0
        with self._lock:
            for (name, op, out), tally in self._counts.items():
                if op == operation and out == outcome and (backend is None or name == backend):
                    count += tally[0]
                    buckets = [a + b for a, b in zip(buckets, tally[1], strict=True)]
                    seconds += tally[2]
        return Tally(count, tuple(buckets), seconds)

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        """Every count, by (backend, operation, outcome)."""
        with self._lock:
            return {slot: tally[0] for slot, tally in self._counts.items()}
