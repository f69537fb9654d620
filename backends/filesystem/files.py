"""File operations relative to folder descriptors, never following a symlink.

The store, the cache and the file lock build on these; each takes an open
folder descriptor and a name in it, so a path is never resolved twice and
nothing outside the root is reached. :class:`At` is where a key's file was
found (its open folders, its name, its lstat); :func:`create_temp` makes the
temporary file a write fills before it is moved into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from typing import NamedTuple

from ..base import MISSING, Missing
from .layout import temp_name

__all__ = [
    "BLOCKED_ERRNOS",
    "DIR_FLAGS",
    "NEW_FLAGS",
    "ROOT_FLAGS",
    "At",
    "check_file",
    "create_temp",
    "deleted_folder",
    "lstat_file",
    "open_file",
    "open_guard",
    "place",
    "prune_folders",
    "read_all",
    "read_file",
    "retire",
    "try_rmdir",
    "unlink_quietly",
    "write_all",
]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: opens the root (which may be reached through a symlink the user gave)
ROOT_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
#: opens a folder below the root, never through a symlink
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO named like a key must not wait for a writer
# (it is then seen not to be a regular file); it changes nothing for files.
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)
#: creates a new file, never through a symlink
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
#: what opening through a symlink with O_NOFOLLOW fails with (ELOOP, or
#: ENOTDIR for O_DIRECTORY); a file where a folder should be gives ENOTDIR
BLOCKED_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK})


def read_file(folder: int, name: str) -> bytes | Missing:
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


def write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def unlink_quietly(name: str, folder: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=folder)


def try_rmdir(name: str, parent: int) -> bool:
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


def check_file(folder: int, name: str) -> os.stat_result | None:
    """The lstat of the regular file at ``name`` (None if nothing is there); IsADirectoryError
    if something other than a regular file is there.

    A folder, symlink or FIFO of another tool at a key's name reads as
    absent; a write there must not replace (delete) it either.
    """
    status = _lstat(folder, name)
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "in the way")
    return status


def place(folder: int, temp_name: str, name: str, if_absent: bool) -> tuple[bool, os.stat_result | None]:
    """Move the written temporary file to ``name`` (with ``if_absent``, only if it is free):
    whether it was placed, and the lstat of the file it replaced (or found) there, if any."""
    if if_absent:
        # link() fails if the name exists, atomically: one winner.
        try:
            os.link(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
        except FileExistsError:
            return False, check_file(folder, name)
        finally:
            unlink_quietly(temp_name, folder)
        return True, None
    old = check_file(folder, name)
    os.replace(temp_name, name, src_dir_fd=folder, dst_dir_fd=folder)
    return True, old


def prune_folders(fds: list[int], folders: tuple[str, ...]) -> None:
    """Remove the now-empty folders of a deleted key, deepest first."""
    for depth in range(len(folders) - 1, -1, -1):
        if not try_rmdir(folders[depth], fds[depth]):
            return


def deleted_folder() -> int:
    """A descriptor of a folder that no longer exists: nothing can be found or made in it."""
    path = tempfile.mkdtemp(prefix="backends-absent-")
    try:
        return os.open(path, ROOT_FLAGS)
    finally:
        os.rmdir(path)


#: a descriptor of a deleted folder, made at the first :func:`retire` (racing threads may make
#: one each: one is kept)
_dead: list[int] = []


def retire(number: int) -> None:
    """Make descriptor ``number`` name a deleted folder, in place of closing it.

    A call of another thread that took the number a moment ago then finds
    nothing and makes nothing (a folder: ENOENT; a pwrite: EISDIR), never
    acting on whatever file the next ``open()`` would get the number for.
    The number is closed by whoever owns it, once no call can hold it (its
    object freed).
    """
    if not _dead:
        _dead.append(deleted_folder())
    os.dup2(_dead[0], number, inheritable=False)


def open_guard(folder: int, kind: int) -> int:
    """A new descriptor of ``folder`` holding a flock of ``kind``; closing it releases the flock.

    A new open file description each time: flocks belong to it, so two
    threads sharing one descriptor would share (and convert) one lock.
    """
    guard = os.open(".", DIR_FLAGS, dir_fd=folder)
    try:
        fcntl.flock(guard, kind)
    except BaseException:
        os.close(guard)
        raise
    return guard


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


def create_temp(folder: int) -> tuple[str, int]:
    """Create a new temporary file in ``folder``: its name and a descriptor open for writing."""
    while True:
        name = temp_name()
        try:
            return name, os.open(name, NEW_FLAGS, 0o666, dir_fd=folder)
        except FileExistsError:
            continue
