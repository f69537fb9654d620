"""VolatileBackend: any Python object in this process's memory; the ``memory://`` scheme.

Also the one fork hook of every memory store (:func:`renew_at_fork`): a
forked child gives each new locks, since a thread of the parent may have
held one at the fork.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from ..base import MISSING, BaseBackend
from ..codecs import IdentityCodec
from ..codecs.layers import CodecOption
from ..locks import Leases, Lock, MemoryLock
from ..schemes import parse_query, register_scheme

__all__ = ["VolatileBackend", "renew_at_fork"]


class VolatileBackend(BaseBackend[Any, Any]):
    """Keeps any Python object in this process's memory, loaded back as the same object.

    Safe across threads. Nothing is copied: mutating a loaded object mutates
    the stored one, as with a dict. Gone when the process ends.
    """

    codec = IdentityCodec()
    _blocks = False  # in memory: its async twin calls it inline

    def __init__(self, *, codec: CodecOption[Any] = None) -> None:
        self._check_codec(codec)
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._leases = Leases()
        renew_at_fork(self)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._leases.forked()

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return MemoryLock(key, timeout, ttl, self._leases, **self._lock_context())

    def __getstate__(self) -> dict[str, Any]:
        # The lock cannot be pickled; a copy gets its own (and a snapshot).
        with self._lock:
            return {"data": dict(self._data), **self._codec_option()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(codec=state.get("codec"))  # type: ignore[misc]
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


#: every memory store of this process, by id: a forked child gives each new locks
_LIVE: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def renew_at_fork(store: Any) -> None:
    """Note a memory store: in a forked child its ``_forked()`` is called, to give it new locks."""
    _LIVE[id(store)] = store


def _after_fork_in_child() -> None:
    # Another thread may have held a store's lock at the fork; it does not
    # exist in the child, so the lock would never be released: each store
    # gets a new one (and a cache new counters: the child's counts are its own).
    for store in list(_LIVE.values()):
        store._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _open_url(url: str, options: dict[str, Any]) -> VolatileBackend:
    """``memory://``: a new, empty VolatileBackend."""
    _, kwargs = parse_query(url, {}, options)
    if url.split("://", 1)[1].split("?", 1)[0] not in ("", "/"):
        raise ValueError("memory:// takes no path: every memory backend is a new, empty store")
    if "codec" in kwargs:
        raise ValueError("memory:// holds the objects themselves: nothing to compress or encrypt")
    return VolatileBackend()


register_scheme("memory", _open_url)
