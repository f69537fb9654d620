"""Compressed frames read back: a zstd frame or a gzip member, bounded by a size.

The reading side of :mod:`~backends.codecs.compress`, below the families
(:mod:`~backends.codecs.families`): a text or JSON store decompresses what
a compressing codec wrote, whatever its own setting. The stdlib's
``compression.zstd`` (Python 3.14) is used when there is one, else
``zstandard``, imported at the first zstd frame.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any, Final

__all__ = [
    "DEFAULT_MAX",
    "GZIP_MAGIC",
    "ZSTD_EXTRA",
    "ZSTD_MAGIC",
    "decompress",
    "stdlib_zstd",
    "zstandard_module",
]

#: the first bytes of a zstd frame and of a gzip member (the compressing layers' frames)
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC: Final = b"\x1f\x8b"
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


def stdlib_zstd() -> Any:
    """The stdlib's ``compression.zstd`` module (Python 3.14+), or None."""
    return _STDLIB_ZSTD


def zstandard_module() -> Any:
    """The ``zstandard`` module; ImportError naming the extra without it."""
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(ZSTD_EXTRA) from exc
    return zstandard


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
    stdlib = stdlib_zstd()
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
    zstandard = zstandard_module()
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
