"""Raw values streamed from and to files, never read whole into memory.

A raw store (``bytes`` values) that can stream adds :class:`FileTransfers`
to its bases and implements its two hooks; ``dump_file`` and ``load_file``
are then public calls with the same validation and errors as the rest.
"""

from __future__ import annotations

import errno
import io
import os
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol, Union

from .base import MISSING, BaseBackend
from .codecs import RawCodec

__all__ = ["FileTransfers", "PathOrFile", "Reader", "Writer", "copy_stream", "open_source", "write_target"]

#: a path (``str`` or path-like) or a binary file object
PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


class FileTransfers(BaseBackend[bytes, bytes]):
    """Streaming of raw values from and to files, never read whole into memory."""

    @abstractmethod
    def _dump_stream(self, key: str, source: PathOrFile, if_absent: bool) -> bool:
        """Store the file at ``source`` (a path, or the rest of a file object) atomically."""

    @abstractmethod
    def _load_stream(self, key: str, target: PathOrFile) -> bool:
        """Write the value into ``target``; False, and a path target not created, if absent."""

    def dump_file(self, key: str, source: PathOrFile, *, if_absent: bool = False) -> bool:
        """Store the contents of a file (a path, or a binary file object) under ``key``.

        Streams in chunks; returns True, or False with ``if_absent`` when the
        key exists. Atomic like :meth:`dump`. Through a layered codec
        (compression, encryption) the file is read whole and stored as
        :meth:`dump` stores a value: the codec is never bypassed.
        """
        key = self._check(key, "dump_file")
        if not self._streams_raw():
            with open_source(source) as reader:
                return self.dump(key, reader.read(), if_absent=if_absent)
        return self._guarded("dump_file", key, lambda: self._dump_stream(key, source, if_absent))

    def load_file(self, key: str, target: PathOrFile) -> bool:
        """Write the value of ``key`` into a file (a path, or a binary file object).

        Streams in chunks. Returns False and leaves the target untouched (a
        path is not created) when the key is absent. Through a layered codec
        the value is loaded whole (decoded), then written.
        """
        key = self._check(key, "load_file")
        if isinstance(target, (str, os.PathLike)):
            folder = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(folder):
                # Said before any I/O, and naming the target (not a temporary file next to it).
                raise FileNotFoundError(errno.ENOENT, f"no folder {folder} to write into", os.fspath(target))
        if not self._streams_raw():
            value = self.load(key, MISSING)
            if value is MISSING:
                return False
            write_target(target, io.BytesIO(value))
            return True
        return self._guarded("load_file", key, lambda: self._load_stream(key, target))

    def _streams_raw(self) -> bool:
        """Whether stored bytes are the value's own (the raw family), so that a file streams as it is."""
        return isinstance(self.codec, RawCodec)


class Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


def copy_stream(source: Reader, target: Writer, digest: Any = None) -> int:
    """Copy ``source`` to ``target`` in 1 MiB chunks; return the number of bytes copied.

    ``digest`` (a :mod:`hashlib` object), if given, is updated with every chunk.
    """
    copied = 0
    while chunk := source.read(1 << 20):
        target.write(chunk)
        if digest is not None:
            digest.update(chunk)
        copied += len(chunk)
    return copied


@contextmanager
def open_source(source: PathOrFile) -> Iterator[IO[bytes]]:
    """A binary file object for ``source``: the path opened, or the object itself."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fileobj:
            yield fileobj
    else:
        yield source


def write_target(target: PathOrFile, source: Reader) -> None:
    """Copy ``source`` into ``target``: a path (created) or a binary file object."""
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as fileobj:
            copy_stream(source, fileobj)
    else:
        copy_stream(source, target)
