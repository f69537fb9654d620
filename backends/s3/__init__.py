"""S3 backends: S3JsonBackend, S3TextBackend, S3RawBackend over one S3 store.

Importing this package needs no boto3; constructing a backend does, and says
which extra to install when it is missing.
"""

from __future__ import annotations

from . import aio as aio  # registers the native twin of the obstore engine (store.py never imports it)
from .families import S3JsonBackend, S3TextBackend
from .raw import S3RawBackend, transfer_config
from .store import DEFAULT_GZIP, S3Backend
from .url import OPTIONS as URL_OPTIONS

__all__ = [
    "DEFAULT_GZIP",
    "URL_OPTIONS",
    "S3Backend",
    "S3JsonBackend",
    "S3RawBackend",
    "S3TextBackend",
    "transfer_config",
]
