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
import zlib
from typing import Any, Final

from .layers import GZIP_MAGIC, ZSTD_MAGIC, Layer, check_size

__all__ = ["GZIP_MAGIC", "ZSTD_MAGIC", "Gzip", "Zstd", "decompress"]

#: the default largest value, either side (1 GiB)
DEFAULT_MAX: Final = 1 << 30
ZSTD_EXTRA: Final = "the zstd codec needs zstandard (or Python 3.14): pip install 'backends[zstd]'"
_CHUNK: Final = 1 << 20
#: each thread's zstandard decompression context (making one costs ~70 us; one is not for two threads)
_CONTEXTS = threading.local()


def _find_stdlib_zstd() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        return None
    return zstd  # pragma: no cover - Python 3.14+


_STDLIB_ZSTD: Final = _find_stdlib_zstd()  # once: a failed import costs ~30 us each time


def _stdlib_zstd() -> Any:
    return _STDLIB_ZSTD


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(ZSTD_EXTRA) from exc
    return zstandard


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
        self._stdlib = _stdlib_zstd()
        if self._stdlib is None:
            _zstandard()  # ImportError naming the extra, at construction
        self._local = threading.local()

    def _compress(self, data: bytes) -> bytes:
        if self._stdlib is not None:  # pragma: no cover - Python 3.14+
            return bytes(self._stdlib.compress(data, level=self.level))
        context = getattr(self._local, "context", None)
        if context is None:
            context = self._local.context = _zstandard().ZstdCompressor(level=self.level)
        return bytes(context.compress(data))

    def __getstate__(self) -> dict[str, Any]:
        # A thread's context is its own: a copy (pickle, a process pool) makes its own.
        state = self.__dict__.copy()
        del state["_local"], state["_stdlib"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stdlib = _stdlib_zstd()
        self._local = threading.local()


class Gzip(_Compressor):
    """gzip members (levels 1-9, default 6; stdlib ``zlib``), with no time or name in the header."""

    name = "gzip"
    magic = GZIP_MAGIC
    default_level = 6
    levels = (1, 9)

    def _compress(self, data: bytes) -> bytes:
        return _gzip.compress(data, compresslevel=self.level, mtime=0)


def decompress(data: bytes, max_size: int = DEFAULT_MAX) -> bytes:
    """``data`` decompressed if it starts with a zstd or gzip magic, else as it is.

    ValueError for a frame that is cut, corrupt, followed by other bytes, or
    larger than ``max_size`` once decompressed.
    """
    if data.startswith(ZSTD_MAGIC):
        return _unzstd(data, max_size)
    if data.startswith(GZIP_MAGIC):
        return _gunzip(data, max_size)
    return data


def _too_big(max_size: int) -> ValueError:
    return ValueError(f"it decompresses to more than max_size={max_size} bytes")


def _unzstd(data: bytes, max_size: int) -> bytes:
    stdlib = _stdlib_zstd()
    if stdlib is not None:  # pragma: no cover - Python 3.14+
        try:
            worker = stdlib.ZstdDecompressor()
            out = worker.decompress(data, max_length=max_size + 1)
        except stdlib.ZstdError as exc:
            raise ValueError(f"zstd frame does not decode ({exc})") from None
        if len(out) > max_size:
            raise _too_big(max_size)
        if not worker.eof or worker.unused_data:
            raise ValueError("zstd frame is cut short or followed by other bytes")
        return bytes(out)
    zstandard = _zstandard()
    try:
        size = zstandard.get_frame_parameters(data).content_size
        if size != zstandard.CONTENTSIZE_UNKNOWN:
            if size > max_size:
                raise _too_big(max_size)
            # libzstd stops with an error at a block past the size the header declares.
            worker = _decompressor(zstandard).decompressobj()
            out = worker.decompress(data)
            if not worker.eof or worker.unused_data:
                raise ValueError("zstd frame is cut short or followed by other bytes")
            return bytes(out)
        return _bounded(_decompressor(zstandard).stream_reader(data), max_size)
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd frame does not decode ({exc})") from None


def _decompressor(zstandard: Any) -> Any:
    context = getattr(_CONTEXTS, "context", None)
    if context is None:
        context = _CONTEXTS.context = zstandard.ZstdDecompressor()
    return context


def _bounded(reader: Any, max_size: int) -> bytes:
    chunks, total = [], 0
    while chunk := reader.read(_CHUNK):
        total += len(chunk)
        if total > max_size:
            raise _too_big(max_size)
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(data: bytes, max_size: int) -> bytes:
    """Every gzip member of ``data`` (``cat a.gz b.gz`` is one gzip file), bounded."""
    chunks, total, rest = [], 0, data
    try:
        while rest:
            worker = zlib.decompressobj(wbits=31)
            chunk = worker.decompress(rest, max_size + 1 - total)
            total += len(chunk)
            if total > max_size:
                raise _too_big(max_size)
            if not worker.eof:
                raise ValueError("gzip data is cut short")
            chunks.append(chunk)
            rest = worker.unused_data
            if rest and not rest.startswith(GZIP_MAGIC):
                raise ValueError("gzip data is followed by other bytes")
    except zlib.error as exc:
        raise ValueError(f"gzip data does not decode ({exc})") from None
    return b"".join(chunks)
