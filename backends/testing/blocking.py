"""Blocking: an :class:`~backends.aio.AsyncBackend` driven from blocking code, so the
parity suite runs through the async twin of a backend unchanged in what it asserts.

Every call runs its coroutine to the end on the adapter's own event loop, in
the calling thread (no loop is ever driven from another thread).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from ..aio import AsyncBackend
from ..base import MISSING

__all__ = ["Blocking"]

T = TypeVar("T")


class Blocking:
    """The calls of a backend (those the parity machine makes), each an awaited call of ``twin``."""

    def __init__(self, twin: AsyncBackend[Any]) -> None:
        self.twin = twin
        self._loop = asyncio.new_event_loop()

    def __repr__(self) -> str:
        return f"Blocking({self.twin!r})"

    def _do(self, call: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(call)

    def _all(self, entries: AsyncIterator[T]) -> list[T]:
        async def collect() -> list[T]:
            return [entry async for entry in entries]

        return self._do(collect())

    def load(self, key: str, default: Any = None) -> Any:
        return self._do(self.twin.load(key, default))

    def dump(self, key: str, value: Any, *, if_absent: bool = False) -> bool:
        return self._do(self.twin.dump(key, value, if_absent=if_absent))

    def delete(self, key: str) -> bool:
        return self._do(self.twin.delete(key))

    def pop(self, key: str, default: Any = MISSING) -> Any:
        return self._do(self.twin.pop(key, default))

    def setdefault(self, key: str, default: Any = None) -> Any:
        return self._do(self.twin.setdefault(key, default))

    def load_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return self._do(self.twin.load_many(keys))

    def dump_many(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        self._do(self.twin.dump_many(items))

    def delete_many(self, keys: Iterable[str]) -> int:
        return self._do(self.twin.delete_many(keys))

    def clear(self) -> None:
        self._do(self.twin.clear())

    def list(self, prefix: str = "", delimiter: str | None = "/") -> Iterator[str]:
        return iter(self._all(self.twin.list(prefix, delimiter)))

    def keys(self) -> set[str]:
        return set(self._all(self.twin.keys()))

    def items(self) -> builtins.list[tuple[str, Any]]:
        return self._all(self.twin.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all(aiter(self.twin)))

    def __len__(self) -> int:
        return self._do(self.twin.len())

    def __bool__(self) -> bool:
        return len(self) > 0

    def __contains__(self, key: object) -> bool:
        return self._do(self.twin.contains(key))  # type: ignore[arg-type]  # invalid keys raise there

    def __getitem__(self, key: str) -> Any:
        value = self.load(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.dump(key, value)

    def __delitem__(self, key: str) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def close(self) -> None:
        try:
            self._do(self.twin.aclose())
        finally:
            self._loop.close()
