"""VolatileBackend: a thread-safe in-memory store of Python objects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from .base import MISSING, BaseBackend
from .codecs import IdentityCodec
from .locks import Leases, Lock, MemoryLock

__all__ = ["VolatileBackend"]


class VolatileBackend(BaseBackend[Any, Any]):
    """Keeps any Python object in this process's memory, loaded back as the same object.

    Safe across threads. Nothing is copied: mutating a loaded object mutates
    the stored one, as with a dict. Gone when the process ends.
    """

    def __init__(self) -> None:
        self.codec = IdentityCodec()
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._leases = Leases()

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return MemoryLock(self, key, timeout, ttl, self._leases)

    def __getstate__(self) -> dict[str, Any]:
        # The lock cannot be pickled; a copy gets its own (and a snapshot).
        with self._lock:
            return {"data": dict(self._data)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self._data.update(state["data"])

    def _load(self, key: str) -> Any:
        # dict.get is atomic under the GIL, but the lock keeps this correct
        # on free-threaded builds too.
        with self._lock:
            return self._data.get(key, MISSING)

    def _dump(self, key: str, data: Any, if_absent: bool) -> bool:
        with self._lock:
            if if_absent and key in self._data:
                return False
            self._data[key] = data
            return True

    def _delete(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, MISSING) is not MISSING

    def _pop(self, key: str) -> Any:
        with self._lock:
            return self._data.pop(key, MISSING)

    def _iter_keys(self) -> Iterator[str]:
        # A snapshot: iterating a dict that another thread changes raises
        # RuntimeError. The values are already in memory, so is this list.
        with self._lock:
            keys = list(self._data)
        return iter(keys)

    def _contains(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def _len(self) -> int:
        with self._lock:
            return len(self._data)

    def _load_many(self, keys: list[str]) -> dict[str, Any]:
        with self._lock:
            return {key: self._data[key] for key in keys if key in self._data}

    def _dump_many(self, items: list[tuple[str, Any]]) -> None:
        with self._lock:
            self._data.update(items)

    def _delete_many(self, keys: list[str]) -> int:
        with self._lock:
            return sum(self._data.pop(key, MISSING) is not MISSING for key in keys)

    def _clear(self) -> None:
        with self._lock:
            self._data.clear()
