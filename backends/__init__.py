"""One dict-like interface to key-value storage: memory, local disk, S3, Redis.

See README.rst for the contract every backend keeps.
"""

from __future__ import annotations

from . import aio as aio  # registers every backend's twin
from . import codecs as codecs
from .base import MISSING, UNCHANGED, Backend, BaseBackend, Versioned
from .cache import Entry, ExpiringCache
from .codecs import Codec, Encrypt, Gzip, IdentityCodec, JsonCodec, RawCodec, TextCodec, Typed, Zstd
from .errors import (
    BackendError,
    BucketNotFoundError,
    CorruptValueError,
    InvalidKeyError,
    KeyConflictError,
    LockError,
    LockTimeoutError,
    PermissionDeniedError,
    ReadOnlyError,
    SerializationError,
    StoreError,
    StoreUnavailableError,
)
from .events import Event, subscribe
from .filesystem import (
    FileSystemBackend,
    FileSystemCache,
    FileSystemJsonBackend,
    FileSystemRawBackend,
    FileSystemTextBackend,
    JsonCache,
    RawCache,
    TextCache,
)
from .info import Stat
from .keys import MAX_KEY_BYTES, is_valid_key
from .locks import Lock
from .memo import CachedError, CacheKeyError, cached
from .memory import MemoryCache, MemoryRawCache, MemoryTextCache, VolatileBackend
from .redis import RedisBackend, RedisJsonBackend, RedisRawBackend, RedisTextBackend
from .rotation import reencrypt
from .s3 import S3Backend, S3JsonBackend, S3RawBackend, S3TextBackend
from .sqlite import SqliteBackend, SqliteJsonBackend, SqliteRawBackend, SqliteTextBackend
from .tier import TieredBackend, TierStats
from .urls import open_url
from .views import View

# The path reencrypt had, kept: codecs/ imports no store, so the package sets it.
codecs.reencrypt = reencrypt

# Not in __all__: a star import must not shadow the builtin open().
open = open_url

__version__ = "0.1.0"

__all__ = [
    "MAX_KEY_BYTES",
    "MISSING",
    "UNCHANGED",
    "Backend",
    "BackendError",
    "BaseBackend",
    "BucketNotFoundError",
    "CacheKeyError",
    "CachedError",
    "Codec",
    "CorruptValueError",
    "Encrypt",
    "Entry",
    "Event",
    "ExpiringCache",
    "FileSystemBackend",
    "FileSystemCache",
    "FileSystemJsonBackend",
    "FileSystemRawBackend",
    "FileSystemTextBackend",
    "Gzip",
    "IdentityCodec",
    "InvalidKeyError",
    "JsonCache",
    "JsonCodec",
    "KeyConflictError",
    "Lock",
    "LockError",
    "LockTimeoutError",
    "MemoryCache",
    "MemoryRawCache",
    "MemoryTextCache",
    "PermissionDeniedError",
    "RawCache",
    "RawCodec",
    "ReadOnlyError",
    "RedisBackend",
    "RedisJsonBackend",
    "RedisRawBackend",
    "RedisTextBackend",
    "S3Backend",
    "S3JsonBackend",
    "S3RawBackend",
    "S3TextBackend",
    "SerializationError",
    "SqliteBackend",
    "SqliteJsonBackend",
    "SqliteRawBackend",
    "SqliteTextBackend",
    "Stat",
    "StoreError",
    "StoreUnavailableError",
    "TextCache",
    "TextCodec",
    "TierStats",
    "TieredBackend",
    "Typed",
    "Versioned",
    "View",
    "VolatileBackend",
    "Zstd",
    "__version__",
    "cached",
    "is_valid_key",
    "open_url",
    "reencrypt",
    "subscribe",
]
