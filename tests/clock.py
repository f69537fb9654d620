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


class RedisLeaseClock(FrozenClock):
    """For Redis, whose leases run on the server's clock: advancing takes the
    time off every lease under the backend's prefix (PTTL, then PEXPIRE or DEL)."""

    def __init__(self, client: object, prefix: str) -> None:
        super().__init__()
        self.client = client
        self.pattern = prefix + "\x7flock/*"

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        for name in self.client.scan_iter(match=self.pattern):  # type: ignore[attr-defined]
            left = self.client.pttl(name) - int(seconds * 1000)  # type: ignore[attr-defined]
            if left > 0:
                self.client.pexpire(name, left)  # type: ignore[attr-defined]
            else:
                self.client.delete(name)  # type: ignore[attr-defined]
