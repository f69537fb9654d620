"""Redis backends: RedisJsonBackend, RedisTextBackend, RedisRawBackend over one Redis store.

Importing this package needs no redis-py; constructing a backend does, and
says which extra to install when it is missing.
"""

from __future__ import annotations

from . import aio as aio  # registers the native twin of RedisBackend (store.py never imports it)
from .families import RedisJsonBackend, RedisRawBackend, RedisTextBackend
from .store import RedisBackend
from .url import OPTIONS as URL_OPTIONS

__all__ = ["URL_OPTIONS", "RedisBackend", "RedisJsonBackend", "RedisRawBackend", "RedisTextBackend"]
