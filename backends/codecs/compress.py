"""Compression layers: zstd and gzip, each with a size threshold; either reads both.

A value is stored as the family's bytes when it is smaller than the
threshold, or when compressing would not make it smaller; otherwise as a
standard zstd frame (magic ``28 B5 2F FD``) or gzip member (``1F 8B``),
which ``zstd -d`` and ``gunzip`` read. Reading looks at the magic, whatever
layer the store is set to: a store holding plain, zstd and gzip values
reads them all. A small value whose bytes begin with one of the magics (a
raw value that is itself a ``.gz`` file) is compressed whatever its size,
so that what is stored plain never looks compressed. Output is bounded by
``max_size`` on both sides: a value that would decompress to more (a
compression bomb planted in the store) is a CorruptValueError, and a value
larger than it is refused at the write.
"""

from __future__ import annotations

import gzip as _gzip
import threading
from typing import Any

from .frames import DEFAULT_MAX, GZIP_MAGIC, ZSTD_MAGIC, decompress, stdlib_zstd, zstandard_module
from .layers import Layer, check_size

__all__ = ["GZIP_MAGIC", "ZSTD_MAGIC", "Gzip", "Zstd", "decompress"]


def _check_level(name: str, level: object, low: int, high: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"{name} level is an int from {low} to {high}, not {type(level).__name__}")
    if not low <= level <= high:
        raise ValueError(f"{name} level is from {low} to {high}, not {level}")
    return level


class _Compressor(Layer):
    """What zstd and gzip share: the threshold, the bound, the magics."""

    compresses = True
    magic: bytes = b""
    default_level = 0
    levels = (0, 0)

    def __init__(
        self, threshold: int = 1024, *, level: int | None = None, max_size: int = DEFAULT_MAX
    ) -> None:
        self.threshold = check_size("threshold", threshold)
        self.max_size = check_size("max_size", max_size, low=1)
        self.level = _check_level(self.name, self.default_level if level is None else level, *self.levels)

    def wrap(self, data: bytes) -> bytes:
        if len(data) > self.max_size:
            raise ValueError(f"the value is {len(data)} bytes, over max_size={self.max_size} of {self.name}")
        looks_compressed = data.startswith((ZSTD_MAGIC, GZIP_MAGIC))
        if len(data) < self.threshold and not looks_compressed:
            return data
        packed = self._compress(data)
        return packed if looks_compressed or len(packed) < len(data) else data

    def unwrap(self, data: bytes) -> bytes:
        return decompress(data, self.max_size)

    def _compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, level={self.level})"


class Zstd(_Compressor):
    """zstd frames (levels 1-22, default 3): the stdlib's ``compression.zstd``, else ``zstandard``.

    Each thread keeps its own compression context (a zstandard context is not
    safe to share between threads); a forked child makes its own at first use.
    """

    name = "zstd"
    magic = ZSTD_MAGIC
    default_level = 3
    levels = (1, 22)

    def __init__(
        self, threshold: int = 1024, *, level: int | None = None, max_size: int = DEFAULT_MAX
    ) -> None:
        super().__init__(threshold, level=level, max_size=max_size)
        self._stdlib = stdlib_zstd()
        if self._stdlib is None:
            zstandard_module()  # ImportError naming the extra, at construction
        self._local = threading.local()

    def _compress(self, data: bytes) -> bytes:
        if self._stdlib is not None:  # pragma: no cover - Python 3.14+
            return bytes(self._stdlib.compress(data, level=self.level))
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = zstandard_module().ZstdCompressor(level=self.level)
        return bytes(context.compress(data))

    def __getstate__(self) -> dict[str, Any]:
        # A thread's context is its own: a copy (pickle, a process pool) makes its own.
        state = self.__dict__.copy()
        del state["_local"], state["_stdlib"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stdlib = stdlib_zstd()
        self._local = threading.local()


class Gzip(_Compressor):
    """gzip members (levels 1-9, default 6; stdlib ``zlib``), with no time or name in the header."""

    name = "gzip"
    magic = GZIP_MAGIC
    default_level = 6
    levels = (1, 9)

    def _compress(self, data: bytes) -> bytes:
        return _gzip.compress(data, compresslevel=self.level, mtime=0)
