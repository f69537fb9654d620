"""The value families of a folder: JSON, text and raw (streamed from and to files), and ``file://`` URLs."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from ..base import MISSING
from ..codecs import JsonCodec, RawCodec, TextCodec
from ..errors import PermissionDeniedError, StoreError
from ..schemes import as_bool, local_path, parse_query, register_scheme
from ..transfers import FileTransfers, PathOrFile, copy_stream
from .store import FileSystemBackend

__all__ = ["FileSystemJsonBackend", "FileSystemRawBackend", "FileSystemTextBackend"]


class FileSystemJsonBackend(FileSystemBackend[Any]):
    """JSON values (strict: no NaN, only str object keys), one UTF-8 file per key."""

    codec = JsonCodec()


class FileSystemTextBackend(FileSystemBackend[str]):
    """``str`` values stored as UTF-8, byte-exact (``\\r\\n`` stays ``\\r\\n``)."""

    codec = TextCodec()


class FileSystemRawBackend(FileTransfers, FileSystemBackend[bytes]):
    """``bytes`` values; also streamed from and to files with ``dump_file``/``load_file``."""

    codec = RawCodec()

    def _dump_stream(self, key: str, source: PathOrFile, if_absent: bool) -> bool:
        # The source is opened before anything is written: a file that cannot
        # be read (missing, a folder) is the caller's, and said so, naming it;
        # never taken for something in the way inside the root.
        with self._users_file(source, "rb", "dump_file", key) as reader:

            def fill(fd: int) -> None:
                with open(fd, "wb", closefd=False) as target:
                    copy_stream(reader, target)

            return self._write(key, fill, if_absent)

    @contextmanager
    def _users_file(self, path: PathOrFile, mode: str, operation: str, key: str) -> Iterator[Any]:
        """``path`` opened with ``mode`` (or the file object given); a StoreError naming it if it cannot."""
        if not isinstance(path, (str, os.PathLike)):
            yield path
            return
        try:
            opened = open(path, mode)  # noqa: SIM115 - closed below
        except OSError as exc:
            cls = PermissionDeniedError if isinstance(exc, PermissionError) else StoreError
            role = "source" if "r" in mode else "target"
            reason = f"the {role} file {os.fspath(path)!r} cannot be opened: {exc.strerror or exc}"
            raise cls(reason, backend=repr(self), operation=operation, key=key) from exc
        with opened:
            yield opened

    def open(self, key: str) -> BinaryIO:
        """The value of ``key`` as a binary file open for reading (close it, or ``with``); KeyError if absent.

        Opened as every read is (folders walked without following symlinks);
        the file read is the one that was there: a later write replaces the
        name, never this file's contents.
        """
        key = self._check(key, "open")
        if not self._streams_raw():  # the stored file is a frame of the codec: its value, decoded
            value = self.load(key, MISSING)
            if value is MISSING:
                raise KeyError(key)
            return io.BytesIO(value)
        with self._translating("open", key):
            opened = self._open_value(key)
        if opened is None:
            raise KeyError(key)
        return open(opened[0], "rb")

    def _load_stream(self, key: str, target: PathOrFile) -> bool:
        opened = self._open_value(key)
        if opened is None:
            return False
        with open(opened[0], "rb") as source, self._users_file(target, "wb", "load_file", key) as out:
            copy_stream(source, out)
        return True


def _open_url(url: str, options: dict[str, Any]) -> FileSystemBackend[Any]:
    """``file:///path`` or a plain path, ``?format=json|text|raw&durable=1&layout=plain``."""
    fmt, kwargs = parse_query(url, {"durable": as_bool, "layout": str}, options)
    families = {"json": FileSystemJsonBackend, "text": FileSystemTextBackend, "raw": FileSystemRawBackend}
    return families[fmt](local_path(url), **kwargs)


register_scheme("file", _open_url)
register_scheme("", _open_url)
