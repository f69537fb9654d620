"""In this process's memory: VolatileBackend (a store of Python objects) and MemoryCache.

:mod:`.volatile`: VolatileBackend, the ``memory://`` scheme, the fork hook
of every memory store; :mod:`.cache`: the bounded, expiring caches.
"""

from __future__ import annotations

from .cache import (
    DEFAULT_MAXBYTES,
    DEFAULT_MAXSIZE,
    MemoryCache,
    MemoryCacheBase,
    MemoryRawCache,
    MemoryTextCache,
)
from .volatile import VolatileBackend

__all__ = [
    "DEFAULT_MAXBYTES",
    "DEFAULT_MAXSIZE",
    "MemoryCache",
    "MemoryCacheBase",
    "MemoryRawCache",
    "MemoryTextCache",
    "VolatileBackend",
]
