"""A folder on local disk as a backend, a cache and a lock, one module each.

- :mod:`.layout`: the key <-> path rule (and the one rule for ``~`` names)
  and the one walk over a folder's keys;
- :mod:`.files`: file operations relative to folder descriptors, never
  following a symlink;
- :mod:`.store`: :class:`FileSystemBackend`, the hooks over one folder;
  :mod:`.families`: its value families and ``file://`` URLs;
- :mod:`.cache`: :class:`FileSystemCache` (``JsonCache``, ``TextCache``,
  ``RawCache``), entries that expire, in a folder bounded or not, built on
  :mod:`.expiry` (deadlines, reads, removal of what expired) and
  :mod:`.evict` (every change counted, eviction past the bound);
- :mod:`.bound`: the shared tally, use stamps and eviction pool of a bound;
- :mod:`.lock`: :class:`FileLock`, a lease file per key under ``flock``.

Each uses the others only through their public names.
"""

from __future__ import annotations

from .cache import FileSystemCache, JsonCache, RawCache, TextCache
from .families import FileSystemJsonBackend, FileSystemRawBackend, FileSystemTextBackend
from .lock import FileLock
from .store import FileSystemBackend

__all__ = [
    "FileLock",
    "FileSystemBackend",
    "FileSystemCache",
    "FileSystemJsonBackend",
    "FileSystemRawBackend",
    "FileSystemTextBackend",
    "JsonCache",
    "RawCache",
    "TextCache",
]
