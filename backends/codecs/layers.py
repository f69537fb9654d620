"""Layers: bytes-to-bytes steps (compression, encryption) stacked on a value codec.

``JsonCodec() | Zstd(threshold=1024) | Encrypt(keys)`` is one
:class:`Layered` codec: a value is encoded by the family codec, then by each
layer from left to right; stored data is decoded from right to left. A layer
raises :class:`ValueError` for data it cannot read, which the backend turns
into :class:`~backends.errors.CorruptValueError`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, TypeVar

from .families import Codec
from .frames import GZIP_MAGIC, ZSTD_MAGIC

__all__ = ["GZIP_MAGIC", "ZSTD_MAGIC", "CodecOption", "Layer", "Layered", "Layers", "check_size", "layered"]

V = TypeVar("V")

#: the largest threshold or size limit an option takes (1 TiB: past any value a store holds)
MAX_SIZE = 1 << 40


def check_size(name: str, value: object, *, low: int = 0, high: int = MAX_SIZE) -> int:
    """``value`` as an ``int`` from ``low`` to ``high``; TypeError/ValueError naming ``name`` otherwise.

    A ``bool``, a float (NaN, infinities, 1.5) and a ``str`` are refused:
    a byte count is an ``int``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} is a whole number of bytes, not {value!r}")
        raise TypeError(f"{name} is an int (bytes), not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} is from {low} to {high} bytes, not {value}")
    return value


class Layer(ABC):
    """One bytes-to-bytes step of a :class:`Layered` codec (a compressor, a cipher)."""

    #: a short name used in messages and URLs ("zstd", "gzip", "aesgcm")
    name: str = ""
    #: whether the layer compresses (a store then leaves its own compression off)
    compresses: bool = False
    #: whether its stored form is never empty (a cipher's frame)
    never_empty: bool = False

    @abstractmethod
    def wrap(self, data: bytes) -> bytes:
        """The stored form of ``data``."""

    @abstractmethod
    def unwrap(self, data: bytes) -> bytes:
        """``data`` as it was given to :meth:`wrap`; ValueError if it cannot be."""

    def identity(self) -> Hashable:
        """What tells this layer from another one (backends are equal only through equal codecs)."""
        return (type(self), self.name)

    def __or__(self, other: Layer) -> Layers:
        if not isinstance(other, Layer):
            return NotImplemented  # ``Zstd() | 5`` is a TypeError now, not at the first write
        return Layers((self, other))

    def __ror__(self, codec: Codec[V, Any]) -> Layered[V]:
        """``codec`` then this layer (``JsonCodec() | Zstd()``): a :class:`Codec` has no ``|`` of
        its own, so Python asks the layer, which knows the codecs below it."""
        if not isinstance(codec, Codec):
            return NotImplemented
        return Layered(codec, (self,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _checked_layers(layers: object) -> tuple[Layer, ...]:
    """``layers`` as a tuple of layers; TypeError naming the first that is none (before any I/O)."""
    if not isinstance(layers, (tuple, list)):
        raise TypeError(
            f"layers are a tuple of Layer (Zstd(), Gzip(), Encrypt(keys)), not {type(layers).__name__}"
        )
    for index, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"layers[{index}] is a Layer (Zstd(), Gzip(), Encrypt(keys)), not {type(layer).__name__}"
            )
    return tuple(layers)


class Layers:
    """Layers joined without a value codec (``Zstd() | Encrypt(keys)``): given as ``codec=``,
    they go on the store's own family codec."""

    def __init__(self, layers: tuple[Layer, ...]) -> None:
        self.layers = _checked_layers(layers)

    def __or__(self, other: Layer) -> Layers:
        if not isinstance(other, Layer):
            return NotImplemented
        return Layers((*self.layers, other))

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.layers))


class Layered(Codec[V, bytes]):
    """A value codec followed by layers; see the module docstring."""

    def __init__(self, base: Codec[V, Any], layers: tuple[Layer, ...]) -> None:
        if isinstance(base, Layered):
            layers = (*base.layers, *layers)
            base = base.base
        if not isinstance(base, Codec):
            raise TypeError(f"a layered codec's base is a Codec (JsonCodec()), not {type(base).__name__}")
        self.base: Codec[V, Any] = base
        self.layers: tuple[Layer, ...] = _checked_layers(layers)
        self.name = base.name
        # The stored bytes are a frame of ours (or the family's bytes, under a
        # threshold): no one media type is true of every object.
        self.content_type = "application/octet-stream"
        self.can_be_empty = base.can_be_empty and not any(layer.never_empty for layer in layers)
        # What the family would decompress again, unbounded by the layers' max_size: a frame
        # inside a frame, which no writer of this codec makes (no JSON or text starts with one).
        self._twice: tuple[bytes, ...] = (
            (ZSTD_MAGIC, GZIP_MAGIC)
            if base.inflates and any(layer.compresses for layer in self.layers)
            else ()
        )

    @property
    def compresses(self) -> bool:
        return any(layer.compresses for layer in self.layers)

    def encode(self, value: V) -> bytes:
        data = self.base.encode(value)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"the {self.base.name} codec makes no bytes for the layers")
        for layer in self.layers:
            data = layer.wrap(bytes(data))
        return bytes(data)

    def decode(self, data: bytes) -> V:
        for layer in reversed(self.layers):
            data = layer.unwrap(data)
        if self._twice and data.startswith(self._twice):
            raise ValueError(
                "it is compressed twice (a frame inside a frame), which max_size would not bound"
            )
        return self.base.decode(data)

    def identity(self) -> Hashable:
        return (self.base.identity(), tuple(layer.identity() for layer in self.layers))

    def __or__(self, other: Layer) -> Layered[V]:
        if not isinstance(other, Layer):
            return NotImplemented
        return Layered(self.base, (*self.layers, other))

    def __repr__(self) -> str:
        return " | ".join([repr(self.base), *map(repr, self.layers)])


#: what a store's ``codec=`` argument takes
CodecOption = Codec[V, Any] | Layer | Layers | None


def layered(base: Codec[Any, Any] | None, given: object) -> Codec[Any, Any] | None:
    """The codec a store uses given its family ``base`` and its ``codec=`` argument.

    ``None``: the family. A layer or layers (``Zstd() | Encrypt(keys)``): the
    family's codec under them. A codec: that codec. Anything else is a
    TypeError naming the argument.
    """
    if given is None:
        return base
    if isinstance(given, Layer):
        given = Layers((given,))
    if isinstance(given, Layers):
        if base is None or base.name == "object":
            raise TypeError(
                "codec= layers apply to bytes, and this store holds objects: give a whole codec, "
                "e.g. codec=JsonCodec() | Zstd()"
            )
        return Layered(base, given.layers)
    if isinstance(given, Codec):
        return given
    raise TypeError(
        f"codec is a Codec (JsonCodec() | Zstd()), a layer (Zstd(), Gzip(), Encrypt(keys)) "
        f"or None, not {type(given).__name__}"
    )
