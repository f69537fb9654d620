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
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
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
    "BLOCKED_ERRNOS",
    "DIR_FLAGS",
    "WRITE_RETRIES",
    "At",
    "FileSystemBackend",
    "FileSystemJsonBackend",
    "FileSystemRawBackend",
    "FileSystemTextBackend",
    "key_parts",
    "key_path",
    "lstat_file",
    "open_file",
    "prune_folders",
    "read_all",
    "write_all",
]

V = TypeVar("V")
T = TypeVar("T")

DIR_MARK = "+"  # suffix of a folder holding the keys below a segment
PART_MARK = "="  # suffix of a folder holding the rest of a long segment
TEMP_MARK = "~"  # prefix of names that are never keys (temporary files, locks)
CHUNK = 200  # longest escaped piece of a segment in one name

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_ROOT_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO named like a key must not wait for a writer
# (it is then seen not to be a regular file); it changes nothing for files.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
_PLAIN = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_KEY = re.compile(rf"[A-Za-z0-9._-]{{1,{CHUNK}}}(?:/[A-Za-z0-9._-]{{1,{CHUNK}}})*")
# Opening through a symlink with O_NOFOLLOW fails with ELOOP (or ENOTDIR
# for O_DIRECTORY); a file where a folder should be gives ENOTDIR.
BLOCKED_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}
WRITE_RETRIES = 8  # folder pruned by a concurrent delete while we wrote into it
#: seconds since its last change after which a ``~*.tmp`` file is a killed
#: writer's leftover: a live write changes its file far more often than this
STALE_TEMP = 3600.0
_LEFTOVERS = (".tmp", ".expired")  # ".expired": removal aside, before 0.2
_RESERVED = {".", ".."}  # names no file can have


def _escape(segment: str) -> str:
    # quote() keeps "~" unescaped; "~" starts names that are never keys.
    return quote(segment, safe="").replace("~", "%7E")


def _escape_name(segment: str) -> str:
    """The escaped form of a key's last segment, which names the value file.

    As :func:`_escape`, except that when a long segment is cut, a last piece
    that would be ``.`` or ``..`` (names the filesystem reserves) has its
    dots escaped, so every valid key has a file name (``"x" * 200 + ".."``).
    """
    escaped = _escape(segment)
    cut = (len(escaped) - 1) // CHUNK * CHUNK
    if cut and escaped[cut:] in _RESERVED:
        return escaped[:cut] + escaped[cut:].replace(".", "%2E")
    return escaped


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
    last_index = len(segments) - 1
    for index, segment in enumerate(segments):
        pieces = _pieces(_escape_name(segment) if index == last_index else _escape(segment))
        folders.extend(piece + PART_MARK for piece in pieces[:-1])
        last = pieces[-1]
        if index < last_index:
            folders.append(last + DIR_MARK)
        else:
            return tuple(folders), last
    raise AssertionError("unreachable: split() returns at least one segment")


def _decode_segment(escaped: str, last: bool = False) -> str | None:
    """Return the segment that escapes exactly to ``escaped`` (as a last segment, with ``last``), or None."""
    if _PLAIN.fullmatch(escaped):
        return escaped
    try:
        segment = unquote(escaped, errors="strict")
    except UnicodeDecodeError:
        return None
    canonical = _escape_name(segment) if last else _escape(segment)
    return segment if canonical == escaped else None


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
        self._closed = False
        self._finalizer: Any = None
        try:
            self._open_root(create=False)  # made at the first write: reading creates nothing
        except OSError as exc:
            self._reraise(exc, "open", None)

    # -- root -------------------------------------------------------------------

    def _open_root(self, create: bool = True) -> None:
        """Open the folder at the root's path (made first, with ``create``).

        Without ``create``, a missing root is held as a deleted folder: every
        read of it misses, and the first write makes the root (see _root_gone).
        """
        if create:
            os.makedirs(self.root, exist_ok=True)
        try:
            fd = os.open(self.root, _ROOT_FLAGS)
        except FileNotFoundError:
            if create:
                raise
            fd = _deleted_folder()
        old, self._root_fd = self._root_fd, fd
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, os.close, fd)
        if old >= 0:
            os.close(old)

    def _root_gone(self, create: bool = True) -> bool:
        """If the root we hold was deleted, open the folder now at its path; say whether we did.

        Called when a write finds no folder, when a read misses and when a
        listing starts: a deleted folder has no entries, so every read in it
        misses, and the one check covers reads too. Without ``create`` the
        folder is not made (reading never creates anything). Raises OSError
        (EBADF) once the backend is closed: it never touches a descriptor
        number that may since belong to another file.
        """
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "closed")
            if os.fstat(self._root_fd).st_nlink > 0:
                return False
            if not create and not os.path.isdir(self.root):
                return False
            self._open_root(create)
            return True

    def _live_root(self) -> int:
        self._root_gone()
        return self._root_fd

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return FileLock(self, key, timeout, ttl, self._live_root)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: every call then raises StoreError."""
        return self._closed

    def close(self) -> None:
        """Close the root's file descriptor; every later call raises StoreError saying so."""
        with self._lock:
            # The number is forgotten before the descriptor is closed: a
            # call made afterwards fails with EBADF instead of acting on
            # whatever folder the next open() gets that number for.
            self._closed = True
            self._root_fd = -1
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
            if exc.errno in BLOCKED_ERRNOS and not create:
                return None  # a symlink or file is in the way: no key lives there
            raise
        return fds

    def _open_folder(self, parent: int, name: str, create: bool) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(name, 0o777, dir_fd=parent)
            if self.durable:
                os.fsync(parent)
        except FileExistsError:
            pass  # another writer made it first
        return os.open(name, DIR_FLAGS, dir_fd=parent)

    def _close(self, fds: list[int]) -> None:
        for fd in fds[1:]:
            os.close(fd)

    # -- reading ----------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        data = self._read_key(key)
        if data is MISSING and self._root_gone(create=False):
            return self._read_key(key)
        return data

    def _read_key(self, key: str) -> bytes | Missing:
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

    def _open_value(self, key: str) -> tuple[int, os.stat_result] | None:
        """Open the file of ``key`` for reading, with its fstat (folders walked without symlinks).

        None if absent (after making sure the root was not deleted meanwhile).
        """
        opened = self._open_key(key)
        if opened is None and self._root_gone(create=False):
            return self._open_key(key)
        return opened

    def _open_key(self, key: str) -> tuple[int, os.stat_result] | None:
        folders, name = key_parts(key)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return None
        try:
            return open_file(fds[-1], name)
        finally:
            self._close(fds)

    def _contains(self, key: str) -> bool:
        found = self._has_file(key)
        if not found and self._root_gone(create=False):
            return self._has_file(key)
        return found

    def _has_file(self, key: str) -> bool:
        # _at_key without building an At: ``in`` is a hot path.
        folders, name = key_parts(key)
        if not folders:
            return lstat_file(self._root_fd, name) is not None
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return False
        try:
            return lstat_file(fds[-1], name) is not None
        finally:
            self._close(fds)

    # -- writing ----------------------------------------------------------------

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._write(key, lambda fd: write_all(fd, data), if_absent)

    def _write(self, key: str, fill: Callable[[int], None], if_absent: bool) -> bool:
        """Write a new file with ``fill`` and move it into place atomically."""
        folders, name = key_parts(key)
        for _ in range(WRITE_RETRIES):
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
        raise StoreUnavailableError(f"folder kept disappearing after {WRITE_RETRIES} attempts")

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
            placed = self._place(folder, temp_name, name, if_absent)
        except BaseException:
            _unlink(temp_name, folder)
            raise
        if placed and self.durable:
            os.fsync(folder)
        return placed

    def _place(self, folder: int, temp_name: str, name: str, if_absent: bool) -> bool:
        """Move the written temporary file to ``name``; with ``if_absent``, only if it is free."""
        if if_absent:
            # link() fails if the name exists, atomically: one winner.
            try:
                os.link(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            except FileExistsError:
                _check_file(folder, name)
                return False
            finally:
                _unlink(temp_name, folder)
            return True
        _check_file(folder, name)
        os.replace(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder)
        return True

    # -- deleting ---------------------------------------------------------------

    def _delete(self, key: str) -> bool:
        return bool(self._at_live_key(key, self._remove))

    def _remove(self, at: At) -> bool:
        """Unlink a key's file and prune its emptied folders; False if it was not there."""
        try:
            os.unlink(at.name, dir_fd=at.folder)
        except FileNotFoundError:
            return False
        prune_folders(at.fds, at.folders)
        return True

    def _pop(self, key: str) -> bytes | Missing:
        taken = self._at_live_key(key, self._take)
        return MISSING if taken is None else taken

    def _take(self, at: At) -> bytes | None:
        """Take the file of a key: rename it aside, read it, remove it; None if it was gone.

        The rename is what makes ``pop`` atomic: of racing callers exactly
        one moves the file, and the value read is exactly the one removed.
        """
        aside = f"{TEMP_MARK}{os.urandom(8).hex()}.tmp"
        try:
            os.rename(at.name, aside, src_dir_fd=at.folder, dst_dir_fd=at.folder)
        except FileNotFoundError:
            return None
        try:
            opened = open_file(at.folder, aside)
            if opened is None:
                return None
            fd, status = opened
            try:
                data = read_all(fd, status.st_size) if self._live(status) else None
            finally:
                os.close(fd)
        finally:
            _unlink(aside, at.folder)
        prune_folders(at.fds, at.folders)
        return data

    def _live(self, status: os.stat_result) -> bool:
        """Whether the file with this status holds a value (a cache says no once it expired)."""
        return True

    def _at_live_key(self, key: str, act: Callable[[At], T]) -> T | None:
        """``act(at)`` if ``key`` has a regular file, else None (after checking the root is not gone)."""
        done = self._at_key(key, act)
        if done is None and self._root_gone(create=False):
            return self._at_key(key, act)
        return done

    def _at_key(self, key: str, act: Callable[[At], T]) -> T | None:
        """``act(at)`` if ``key`` has a regular file, else None.

        Only a regular file is ever a key: a folder, FIFO or symlink of
        another tool at a key's name is absent, and never moved or deleted.
        """
        folders, name = key_parts(key)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return None
        try:
            status = lstat_file(fds[-1], name)
            if status is None:
                return None
            return act(At(fds, folders, name, status))
        finally:
            self._close(fds)

    def _clear(self) -> None:
        for folder, name, _ in self._walk(tidy=True):
            _unlink(name, folder)

    # -- listing ----------------------------------------------------------------

    def _iter_keys(self) -> Iterator[str]:
        return (key for _, _, key in self._walk(tidy=False))

    def _walk(self, tidy: bool) -> Iterator[tuple[int, str, str]]:
        """Yield ``(folder fd, file name, key)`` for every key, streaming.

        Memory grows with the depth of the tree, not the number of keys.
        With ``tidy``, killed writers' temporary files (unchanged for
        :data:`STALE_TEMP` seconds) are removed, and each emptied folder on
        the way back up.
        """
        self._root_gone(create=False)
        # A fresh open file description: scandir(fd) dups the descriptor, and
        # dups share the read position, so two listings over the one root
        # descriptor would each skip what the other read.
        root = os.open(".", DIR_FLAGS, dir_fd=self._root_fd)
        stale_before = self.clock() - STALE_TEMP if tidy else None
        try:
            yield from self._walk_folder(root, "", "", stale_before)
        finally:
            os.close(root)

    def _walk_folder(
        self, folder: int, prefix: str, pending: str, stale_before: float | None
    ) -> Iterator[tuple[int, str, str]]:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(TEMP_MARK):
                    if stale_before is not None and name.endswith(_LEFTOVERS):
                        _sweep(folder, name, stale_before)
                    continue
                mark = name[-1]
                if mark in (DIR_MARK, PART_MARK):
                    if entry.is_dir(follow_symlinks=False):
                        yield from self._walk_child(folder, entry.name, prefix, pending, stale_before)
                elif entry.is_file(follow_symlinks=False):
                    key = _key_of(prefix, pending, name)
                    if key is not None:
                        yield folder, name, key

    def _walk_child(
        self, folder: int, name: str, prefix: str, pending: str, stale_before: float | None
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
            child = os.open(name, DIR_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ENOENT or exc.errno in BLOCKED_ERRNOS:
                return  # removed or replaced since it was listed
            raise
        try:
            yield from self._walk_folder(child, child_prefix, child_pending, stale_before)
        finally:
            os.close(child)
        if stale_before is not None:
            _try_rmdir(name, folder)

    # -- errors, identity -------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if self._closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        if isinstance(exc, PermissionError):
            return PermissionDeniedError, f"permission denied ({exc.strerror})"
        if isinstance(exc, IsADirectoryError):
            return (
                StoreError,
                "something that is not a file (a folder, symlink or FIFO of another tool) is at "
                "the key's name; it is left alone",
            )
        if isinstance(exc, OSError) and exc.errno in BLOCKED_ERRNOS:
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


class At(NamedTuple):
    """Where a key's file is: the open folders (root first), their names, the file's name and lstat."""

    fds: list[int]
    folders: tuple[str, ...]
    name: str
    status: os.stat_result

    @property
    def folder(self) -> int:
        """The descriptor of the folder holding the file."""
        return self.fds[-1]


def _deleted_folder() -> int:
    """A descriptor of a folder that no longer exists: nothing can be found or made in it."""
    path = tempfile.mkdtemp(prefix="backends-absent-")
    try:
        return os.open(path, _ROOT_FLAGS)
    finally:
        os.rmdir(path)


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
    segment = _decode_segment(pending + name, last=True)
    if segment is None:
        return None
    key = prefix + segment
    return key if is_valid_key(key) else None


def _read(folder: int, name: str) -> bytes | Missing:
    opened = open_file(folder, name)
    if opened is None:
        return MISSING
    fd, status = opened
    try:
        return read_all(fd, status.st_size)
    finally:
        os.close(fd)


def open_file(folder: int, name: str) -> tuple[int, os.stat_result] | None:
    """Open a key's file for reading, with its fstat; None if there is no regular file.

    A symlink is never followed; a folder, FIFO, socket or device of
    another tool at a key's name is not a key (absent for every call, as
    for listing), and opening it never blocks.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in BLOCKED_ERRNOS or exc.errno == errno.ENXIO:
            return None  # a symlink (never followed) or a socket: never a key
        raise
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        return None
    return fd, status


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


def write_all(fd: int, data: bytes) -> None:
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


def _lstat(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def lstat_file(folder: int, name: str) -> os.stat_result | None:
    """The lstat of ``name`` if it is a regular file (the only kind a key is), else None."""
    status = _lstat(folder, name)
    return status if status is not None and stat.S_ISREG(status.st_mode) else None


def _check_file(folder: int, name: str) -> None:
    """Raise IsADirectoryError if something other than a regular file is at ``name``.

    A folder, symlink or FIFO of another tool at a key's name reads as
    absent; a write there must not replace (delete) it either.
    """
    status = _lstat(folder, name)
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "in the way")


def _sweep(folder: int, name: str, stale_before: float) -> None:
    """Remove a temporary file left by a killed process, if unchanged since ``stale_before``.

    The ctime is used: a writer cannot set it (a cache sets the mtime of its
    files to their deadline), and every write to the file moves it on.
    """
    status = lstat_file(folder, name)
    if status is not None and status.st_ctime < stale_before:
        _unlink(name, folder)


def prune_folders(fds: list[int], folders: tuple[str, ...]) -> None:
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
        opened = self._open_value(key)
        if opened is None:
            return False
        with open(opened[0], "rb") as source:
            write_target(target, source)
        return True
