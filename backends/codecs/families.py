"""Value families: how a value becomes the stored form and back.

A codec's ``encode`` raises :class:`TypeError` or :class:`ValueError` for a
value it cannot store exactly, and ``decode`` raises :class:`ValueError` for
stored data it cannot read; the backend turns those into
:class:`~backends.errors.SerializationError` and
:class:`~backends.errors.CorruptValueError`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, Generic, NoReturn, TypeVar

from .frames import decompress

__all__ = ["Codec", "IdentityCodec", "JsonCodec", "RawCodec", "TextCodec", "inflated"]

V = TypeVar("V")
S = TypeVar("S")


class Codec(ABC, Generic[V, S]):
    """Turns values of type ``V`` into the stored form ``S`` and back."""

    #: a short name used in messages and URLs ("json", "text", "raw", "object")
    name: str = ""
    #: the media type of the stored form, or None to guess it from the key
    content_type: str | None = None
    #: whether some value encodes to empty data (no JSON value does)
    can_be_empty: bool = True
    #: whether ``decode`` reads a zstd or gzip frame too (a text or JSON store reads what a
    #: compressing codec wrote); bounded by the default ``max_size``, not a layer's
    inflates: bool = False

    @abstractmethod
    def encode(self, value: V) -> S:
        """Return the stored form of ``value``; raise TypeError/ValueError if impossible."""

    @abstractmethod
    def decode(self, data: S) -> V:
        """Return the value of stored ``data``; raise ValueError if undecodable."""

    def identity(self) -> Hashable:
        """What tells this codec from another (two backends are equal only through equal codecs)."""
        return type(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IdentityCodec(Codec[Any, Any]):
    """Stores the object itself (memory backends): any object, loaded back as is."""

    name = "object"

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, data: Any) -> Any:
        return data


class RawCodec(Codec[bytes, bytes]):
    """``bytes``, ``bytearray`` or ``memoryview`` in, ``bytes`` out."""

    name = "raw"

    def encode(self, value: bytes) -> bytes:
        if type(value) is bytes:
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"raw values are bytes-like, not {type(value).__name__}")

    def decode(self, data: bytes) -> bytes:
        return data


class TextCodec(Codec[str, bytes]):
    """``str`` stored as UTF-8, byte-exact (no newline translation)."""

    name = "text"
    inflates = True
    content_type = "text/plain; charset=utf-8"

    def encode(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"text values are str, not {type(value).__name__}")
        # Strict: a lone surrogate raises UnicodeEncodeError (a ValueError).
        return value.encode("utf-8")

    def decode(self, data: bytes) -> str:
        return inflated(data).decode("utf-8")


def inflated(data: bytes) -> bytes:
    """``data``, decompressed if it is a zstd frame or a gzip member.

    Neither magic can begin UTF-8 text (``28 B5`` and ``1F 8B`` are no
    UTF-8), so a text or JSON store reads the values a compressing codec
    wrote whatever its own setting: turning compression off strands none.
    """
    if data[:1] in (b"\x28", b"\x1f"):
        return decompress(data)
    return data


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_dumps_utf8 = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_dumps_ascii = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode
_loads = json.JSONDecoder(parse_constant=_reject_constant).decode


def _check_dict_keys(value: object) -> None:
    """Raise TypeError if any dict inside ``value`` has a non-str key.

    ``json.dumps`` would silently turn ``{1: "a"}`` into ``{"1": "a"}``, which
    does not load back equal, so the keys are checked before encoding. Each
    container is looked at once: a circular value (``a = []; a.append(a)``)
    ends the walk and is then refused by the encoder, and a shared one costs
    no more than once.
    """
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise TypeError(f"JSON object keys are str, not {type(key).__name__}")
            stack.extend(v for v in item.values() if isinstance(v, (dict, list, tuple)))
        elif isinstance(item, (list, tuple)):
            stack.extend(v for v in item if isinstance(v, (dict, list, tuple)))


class JsonCodec(Codec[Any, bytes]):
    """Strict JSON as compact UTF-8: no NaN or infinities, only ``str`` object keys."""

    name = "json"
    inflates = True
    content_type = "application/json"
    can_be_empty = False

    def encode(self, value: Any) -> bytes:
        _check_dict_keys(value)
        text = _dumps_utf8(value)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate cannot be UTF-8; \\u escapes keep it exactly.
            return _dumps_ascii(value).encode("ascii")

    def decode(self, data: bytes) -> Any:
        return _loads(inflated(data).decode("utf-8"))
