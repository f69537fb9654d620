"""Review of the changes between 5d8d383 and fa31ae4: each defect found, as a test through the public API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from clock import FrozenClock

from backends import FileSystemJsonBackend, LockError, VolatileBackend

# -- AsyncLock (backends/aiolock.py) ------------------------------------------------------------


@pytest.mark.parametrize("name", ["memory", "folder"])
def test_async_with_lock_keeps_the_bodys_error_when_the_lease_was_lost(name: str, tmp_path: Path) -> None:
    """As ``with lock:`` does (Lock.__exit__): the body's own error is the one raised, the lost
    lease a note on it; ``async with`` raised the release's LockError instead, the body's error
    only its ``__context__``."""
    clock = FrozenClock()
    store = VolatileBackend() if name == "memory" else FileSystemJsonBackend(tmp_path / "f")
    store.clock = clock
    other = store.lock("k", ttl=5, timeout=0)

    def lose_the_lease() -> None:
        clock.advance(10)
        other.acquire()  # another holder takes the lock once our lease ran out
        raise ValueError("the body's own error")

    with pytest.raises(ValueError, match="body's own") as sync:
        with store.lock("k", ttl=5):
            lose_the_lease()
    other.release()

    async def run() -> None:
        twin = store.aio()
        try:
            async with twin.lock("k", ttl=5):
                lose_the_lease()
        finally:
            await twin.aclose()

    with pytest.raises(ValueError, match="body's own") as awaited:
        asyncio.run(run())
    assert getattr(awaited.value, "__notes__", None) == getattr(sync.value, "__notes__", None)


def test_async_with_lock_still_raises_a_lost_lease_when_the_body_succeeded(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = FileSystemJsonBackend(tmp_path / "f")
    store.clock = clock
    other = store.lock("k", ttl=5, timeout=0)

    async def run() -> None:
        twin = store.aio()
        try:
            async with twin.lock("k", ttl=5):
                clock.advance(10)
                other.acquire()
        finally:
            await twin.aclose()

    with pytest.raises(LockError, match="another holder took the lock before release"):
        asyncio.run(run())
