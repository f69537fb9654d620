"""FileSystem*Backend: one folder on local disk, one file per key.

Layout (see README.rst, "Filesystem layout"): a key is split at ``/``; each
segment is percent-escaped so that only ``[A-Za-z0-9._-]`` and ``%XX`` remain.
The last segment names the value file; every other segment names a folder
with a ``+`` suffix, so ``a`` (file ``a``) and ``a/b`` (file ``a+/b``)
coexist. An escaped segment longer than 200 characters is cut into pieces,
all but the last stored as folders with a ``=`` suffix, so no name passes the
255-byte limit. Names starting with ``~`` (temporary files, locks) are never
keys. The mapping is a bijection: listing gives back exactly the keys.

Every path is opened relative to a descriptor of the root, one component at
a time with ``O_NOFOLLOW``: a symlink inside the root is never followed, so
no key reads or writes outside it. Writes go to a unique temporary file in
the target folder, then ``os.replace`` (or ``os.link`` for ``if_absent``),
so a reader sees the old value or the new one, even if the writer is killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
import weakref
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from .base import (
    MISSING,
    BaseBackend,
    FileTransfers,
    Missing,
    PathOrFile,
    copy_stream,
    open_source,
    write_target,
)
from .codecs import Codec, JsonCodec, RawCodec, TextCodec
from .errors import BackendError, PermissionDeniedError, StoreError, StoreUnavailableError
from .keys import is_valid_key
from .locks import FileLock, Lock

__all__ = [
    "FileSystemBackend",
    "FileSystemJsonBackend",
    "FileSystemRawBackend",
    "FileSystemTextBackend",
]

V = TypeVar("V")

DIR_MARK = "+"  # suffix of a folder holding the keys below a segment
PART_MARK = "="  # suffix of a folder holding the rest of a long segment
TEMP_MARK = "~"  # prefix of names that are never keys (temporary files, locks)
CHUNK = 200  # longest escaped piece of a segment in one name

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_KEY = re.compile(rf"[A-Za-z0-9._-]{{1,{CHUNK}}}(?:/[A-Za-z0-9._-]{{1,{CHUNK}}})*")
# Opening through a symlink with O_NOFOLLOW fails with ELOOP (or ENOTDIR
# for O_DIRECTORY); a file where a folder should be gives ENOTDIR.
_BLOCKED = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}
_RETRIES = 8  # folder pruned by a concurrent delete while we wrote into it


def _escape(segment: str) -> str:
    # quote() keeps "~" unescaped; "~" starts names that are never keys.
    return quote(segment, safe="").replace("~", "%7E")


def _pieces(escaped: str) -> list[str]:
    return [escaped[i : i + CHUNK] for i in range(0, len(escaped), CHUNK)]


def key_parts(key: str) -> tuple[tuple[str, ...], str]:
    """Return the folder names and the file name of a valid key, relative to the root."""
    if _PLAIN_KEY.fullmatch(key):
        # The common case: every segment is its own name, no cache needed.
        if "/" not in key:
            return (), key
        *folders, name = key.split("/")
        return tuple(folder + DIR_MARK for folder in folders), name
    return _escaped_parts(key)


def key_path(key: str) -> str:
    """The path of a valid key's file relative to the root, as one string."""
    if _PLAIN_KEY.fullmatch(key):
        return key.replace("/", DIR_MARK + "/")
    folders, name = _escaped_parts(key)
    return "/".join((*folders, name))


@lru_cache(maxsize=8192)
def _escaped_parts(key: str) -> tuple[tuple[str, ...], str]:
    folders: list[str] = []
    segments = key.split("/")
    for index, segment in enumerate(segments):
        pieces = _pieces(_escape(segment))
        folders.extend(piece + PART_MARK for piece in pieces[:-1])
        last = pieces[-1]
        if index < len(segments) - 1:
            folders.append(last + DIR_MARK)
        else:
            return tuple(folders), last
    raise AssertionError("unreachable: split() returns at least one segment")


def _decode_segment(escaped: str) -> str | None:
    """Return the segment that escapes exactly to ``escaped``, or None."""
    if _PLAIN.fullmatch(escaped):
        return escaped
    try:
        segment = unquote(escaped, errors="strict")
    except UnicodeDecodeError:
        return None
    return segment if _escape(segment) == escaped else None


def _piece_ok(piece: str, full: bool) -> bool:
    # A canonical layout cuts at exactly CHUNK characters; any other cut
    # would be a second path for the same key.
    return len(piece) == CHUNK if full else 0 < len(piece) <= CHUNK


class FileSystemBackend(BaseBackend[V, bytes]):
    """A folder on local disk (created if missing), one file per key.

    ``durable=True`` fsyncs each file and its folder, so a written value
    survives a power cut, at the cost of a disk flush per write. Safe across
    threads and processes sharing the folder. POSIX only.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, codec: Codec[V, bytes], durable: bool = False
    ) -> None:
        self.codec = codec
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.durable = durable
        self._lock = threading.Lock()
        self._root_fd = -1
        self._finalizer: Any = None
        try:
            self._open_root()
        except OSError as exc:
            raise self._error(exc, "open", None) from exc

    # -- root -------------------------------------------------------------------

    def _open_root(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        old, self._root_fd = self._root_fd, fd
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, os.close, fd)
        if old >= 0:
            os.close(old)

    def _root_gone(self) -> bool:
        """Reopen the root if it was deleted since we opened it; say whether it was."""
        with self._lock:
            try:
                if os.fstat(self._root_fd).st_nlink > 0:
                    return False
            except OSError:
                pass
            self._open_root()
            return True

    def _live_root(self) -> int:
        self._root_gone()
        return self._root_fd

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return FileLock(self, key, timeout, ttl, self._live_root)

    def close(self) -> None:
        """Close the root's file descriptor; the backend is unusable afterwards."""
        if self._finalizer is not None:
            self._finalizer()

    # -- paths ------------------------------------------------------------------

    def path(self, key: str) -> Path:
        """Return the path of the file holding ``key`` (which may not exist)."""
        key = self._check(key, "path")
        folders, name = key_parts(key)
        return self.root.joinpath(*folders, name)

    def _open_folders(self, folders: tuple[str, ...], create: bool) -> list[int] | None:
        """Open each folder below the root without following symlinks.

        Returns the descriptors, root first (the caller closes all but the
        root), or None when a folder is missing (or blocked) and not created.
        """
        fds = [self._root_fd]
        try:
            for name in folders:
                fds.append(self._open_folder(fds[-1], name, create))
        except FileNotFoundError:
            self._close(fds)
            if create:
                raise
            return None
        except OSError as exc:
            self._close(fds)
            if exc.errno in _BLOCKED and not create:
                return None  # a symlink or file is in the way: no key lives there
            raise
        return fds

    def _open_folder(self, parent: int, name: str, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
            if self.durable:
                os.fsync(parent)
        except FileExistsError:
            pass  # another writer made it first
        return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def _close(self, fds: list[int]) -> None:
        for fd in fds[1:]:
            os.close(fd)

    # -- reading ----------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        folders, name = key_parts(key)
        if not folders:
            return _read(self._root_fd, name)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return MISSING
        try:
            return _read(fds[-1], name)
        finally:
            self._close(fds)

    def _open_value(self, key: str) -> int | None:
        """Open the file of ``key`` for reading (folders walked without symlinks); None if absent."""
        folders, name = key_parts(key)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return None
        try:
            return open_file(fds[-1], name)
        finally:
            self._close(fds)

    def _contains(self, key: str) -> bool:
        folders, name = key_parts(key)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return False
        try:
            mode = os.stat(name, dir_fd=fds[-1], follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        finally:
            self._close(fds)
        return stat.S_ISREG(mode)

    # -- writing ----------------------------------------------------------------

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._write(key, lambda fd: _write_all(fd, data), if_absent)

    def _write(self, key: str, fill: Callable[[int], None], if_absent: bool) -> bool:
        """Write a new file with ``fill`` and move it into place atomically."""
        folders, name = key_parts(key)
        for _ in range(_RETRIES):
            try:
                fds = self._open_folders(folders, create=True)
                assert fds is not None  # create=True makes every folder
            except FileNotFoundError:
                self._root_gone()  # the root was removed: reopen it and retry
                continue
            try:
                temp = _create_temp(fds[-1])
            except FileNotFoundError:
                # A concurrent delete pruned our (empty) folder between our
                # open and our create, or the root was removed: walk again.
                self._close(fds)
                self._root_gone()
                continue
            try:
                return self._commit(fds[-1], temp, name, fill, if_absent)
            finally:
                self._close(fds)
        raise StoreUnavailableError(f"folder kept disappearing after {_RETRIES} attempts")

    def _commit(
        self, folder: int, temp: tuple[str, int], name: str, fill: Callable[[int], None], if_absent: bool
    ) -> bool:
        temp_name, fd = temp
        try:
            try:
                fill(fd)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if if_absent:
                # link() fails if the name exists, atomically: one winner.
                try:
                    os.link(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
                except FileExistsError:
                    return False
                finally:
                    _unlink(temp_name, folder)
            else:
                os.replace(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            _unlink(temp_name, folder)
            raise
        if self.durable:
            os.fsync(folder)
        return True

    # -- deleting ---------------------------------------------------------------

    def _delete(self, key: str) -> bool:
        folders, name = key_parts(key)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return False
        try:
            return _remove(fds, folders, name)
        finally:
            self._close(fds)

    def _clear(self) -> None:
        for folder, name, _ in self._walk(prune=True):
            _unlink(name, folder)

    # -- listing ----------------------------------------------------------------

    def _iter_keys(self) -> Iterator[str]:
        return (key for _, _, key in self._walk(prune=False))

    def _walk(self, prune: bool) -> Iterator[tuple[int, str, str]]:
        """Yield ``(folder fd, file name, key)`` for every key, streaming.

        Memory grows with the depth of the tree, not the number of keys.
        With ``prune``, each emptied folder is removed on the way back up.
        """
        # A fresh open file description: scandir(fd) dups the descriptor, and
        # dups share the read position, so two listings over the one root
        # descriptor would each skip what the other read.
        root = os.open(".", _DIR_FLAGS, dir_fd=self._root_fd)
        try:
            yield from self._walk_folder(root, "", "", prune)
        finally:
            os.close(root)

    def _walk_folder(
        self, folder: int, prefix: str, pending: str, prune: bool
    ) -> Iterator[tuple[int, str, str]]:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(TEMP_MARK):
                    continue
                mark = name[-1]
                if mark in (DIR_MARK, PART_MARK):
                    if entry.is_dir(follow_symlinks=False):
                        yield from self._walk_child(folder, entry.name, prefix, pending, prune)
                elif entry.is_file(follow_symlinks=False):
                    key = _key_of(prefix, pending, name)
                    if key is not None:
                        yield folder, name, key

    def _walk_child(
        self, folder: int, name: str, prefix: str, pending: str, prune: bool
    ) -> Iterator[tuple[int, str, str]]:
        piece = name[:-1]
        if name[-1] == PART_MARK:
            if not _piece_ok(piece, full=True):
                return
            child_prefix, child_pending = prefix, pending + piece
        else:
            segment = _decode_segment(pending + piece) if _piece_ok(piece, full=False) else None
            if segment is None:
                return
            child_prefix, child_pending = f"{prefix}{segment}/", ""
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ENOENT or exc.errno in _BLOCKED:
                return  # removed or replaced since it was listed
            raise
        try:
            yield from self._walk_folder(child, child_prefix, child_pending, prune)
        finally:
            os.close(child)
        if prune:
            _try_rmdir(name, folder)

    # -- errors, identity -------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if isinstance(exc, PermissionError):
            return PermissionDeniedError, f"permission denied ({exc.strerror})"
        if isinstance(exc, OSError) and exc.errno in _BLOCKED:
            return (
                StoreError,
                "a symlink or a file is in the way inside the root; symlinks are never followed",
            )
        if isinstance(exc, OSError):
            return StoreError, exc.strerror or str(exc)
        return StoreError, str(exc)

    def _describe(self) -> str:
        return f"{str(self.root)!r}"

    def _identity(self) -> tuple[object, ...]:
        return (str(self.root), type(self.codec))

    def __reduce__(self) -> tuple[Any, ...]:
        # The root descriptor cannot cross processes; a copy reopens the root.
        return (_rebuild, (type(self), str(self.root), self.codec, self.durable))


def _rebuild(
    cls: type[FileSystemBackend[Any]], root: str, codec: Codec[Any, bytes], durable: bool
) -> FileSystemBackend[Any]:
    backend = cls.__new__(cls)
    FileSystemBackend.__init__(backend, root, codec=codec, durable=durable)
    return backend


def _key_of(prefix: str, pending: str, name: str) -> str | None:
    """Return the key stored in file ``name``, or None if it is not a key's file."""
    if not _piece_ok(name, full=False):
        return None
    segment = _decode_segment(pending + name)
    if segment is None:
        return None
    key = prefix + segment
    return key if is_valid_key(key) else None


def _read(folder: int, name: str) -> bytes | Missing:
    fd = open_file(folder, name)
    if fd is None:
        return MISSING
    try:
        return read_all(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def open_file(folder: int, name: str) -> int | None:
    """Open a key's file for reading, without following a symlink; None if there is none."""
    try:
        return os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _BLOCKED:
            return None  # a symlink: never followed, never a key
        raise


def read_all(fd: int, size: int) -> bytes:
    """Read a file whose size fstat gave, until EOF."""
    # Size the first read from fstat, then read until EOF: the file is
    # never rewritten in place, so this is the whole value.
    chunks = [os.read(fd, size + 1)]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _create_temp(folder: int) -> tuple[str, int]:
    while True:
        name = f"{TEMP_MARK}{os.urandom(8).hex()}.tmp"
        try:
            return name, os.open(name, _NEW_FLAGS, 0o666, dir_fd=folder)
        except FileExistsError:
            continue


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def _unlink(name: str, folder: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def _try_rmdir(name: str, parent: int) -> bool:
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY):
            return False
        raise
    return True


def _remove(fds: list[int], folders: tuple[str, ...], name: str) -> bool:
    """Unlink a key's file and prune its emptied folders; False if it was not there."""
    try:
        os.unlink(name, dir_fd=fds[-1])
    except FileNotFoundError:
        return False
    _prune(fds, folders)
    return True


def _prune(fds: list[int], folders: tuple[str, ...]) -> None:
    """Remove the now-empty folders of a deleted key, deepest first."""
    for depth in range(len(folders) - 1, -1, -1):
        if not _try_rmdir(folders[depth], fds[depth]):
            return


class FileSystemJsonBackend(FileSystemBackend[Any]):
    """JSON values (strict: no NaN, only str object keys), one UTF-8 file per key."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        super().__init__(root, codec=JsonCodec(), durable=durable)


class FileSystemTextBackend(FileSystemBackend[str]):
    """``str`` values stored as UTF-8, byte-exact (``\\r\\n`` stays ``\\r\\n``)."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        super().__init__(root, codec=TextCodec(), durable=durable)


class FileSystemRawBackend(FileTransfers, FileSystemBackend[bytes]):
    """``bytes`` values; also streamed from and to files with ``dump_file``/``load_file``."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        super().__init__(root, codec=RawCodec(), durable=durable)

    def _dump_stream(self, key: str, source: PathOrFile, if_absent: bool) -> bool:
        def fill(fd: int) -> None:
            with open_source(source) as reader, open(fd, "wb", closefd=False) as target:
                copy_stream(reader, target)

        return self._write(key, fill, if_absent)

    def _load_stream(self, key: str, target: PathOrFile) -> bool:
        fd = self._open_value(key)
        if fd is None:
            return False
        with open(fd, "rb") as source:
            write_target(target, source)
        return True
