"""A clock for expiry and lease tests: it moves only when told to."""

from __future__ import annotations


class FrozenClock:
    """Wall-clock seconds that stand still until :meth:`advance`."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
