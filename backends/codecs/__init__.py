"""Codecs: how a value becomes the stored form and back.

:mod:`~backends.codecs.families` are the value families (identity, text,
JSON, raw); :mod:`~backends.codecs.layers` stacks bytes-to-bytes layers on
one (``JsonCodec() | Zstd() | Encrypt(keys)``):
:mod:`~backends.codecs.compress` (zstd, gzip) and
:mod:`~backends.codecs.encrypt` (AES-256-GCM with key rotation);
:mod:`~backends.codecs.typed` stores models as JSON. Importing this package
imports no optional library: each is imported when a codec needing it is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compress import Gzip, Zstd
from .encrypt import KEY_VARIABLE, Encrypt
from .families import Codec, IdentityCodec, JsonCodec, RawCodec, TextCodec
from .layers import Layer, Layered, layered
from .typed import Typed

if TYPE_CHECKING:
    # backends.codecs.reencrypt, the path it had, is kept: the package backends sets it from
    # backends.rotation (a call over a store, a layer above the codecs, which import no store).
    from ..rotation import reencrypt as reencrypt

__all__ = [
    "KEY_VARIABLE",
    "Codec",
    "Encrypt",
    "Gzip",
    "IdentityCodec",
    "JsonCodec",
    "Layer",
    "Layered",
    "RawCodec",
    "TextCodec",
    "Typed",
    "Zstd",
    "layered",
]
