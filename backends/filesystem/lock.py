"""FileLock: the lock of a key in a folder, shared by every process using the folder.

A lease file per key in ``<root>/~locks/`` (a reserved name, never a key),
holding the holder's token, with the lease's end as its mtime. Every read
and change of it happens under ``flock``, which the kernel drops when a
process dies, so there is no check-then-write race.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from typing import Any, Final

from ..locks import Lock, lock_name
from .files import DIR_FLAGS
from .layout import TEMP_MARK

__all__ = ["LOCK_FOLDER", "FileLock"]

#: the folder of lease files below the root: reserved, so never a key
LOCK_FOLDER: Final = f"{TEMP_MARK}locks"

_FILE_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_TOKEN_BYTES = 64


class FileLock(Lock):
    """A lease file ``<root>/~locks/<sha256 of the key>``: our token inside, the lease's end as mtime.

    Every look at the file and every change to it is made under ``flock``
    (held for a few system calls, dropped by the kernel if the process
    dies), so two processes never both find the lease free. Release deletes
    the file; a waiter that opened the deleted file sees its link count at
    zero and opens the new one.
    """

    def __init__(
        self, key: str, timeout: float | None, ttl: float, root: Callable[[], int], **context: Any
    ) -> None:
        super().__init__(key, timeout, ttl, **context)
        self._root = root
        self._name = lock_name(key)

    @property
    def _token(self) -> bytes:
        return self.token.encode("ascii")  # renewed in a forked child (Lock._in_this_process)

    def _try_acquire(self) -> bool:
        return self._under_flock(create=True, change=self._take)

    def _renew(self) -> bool:
        return self._under_flock(create=False, change=self._extend)

    def _release(self) -> bool:
        return self._under_flock(create=False, change=self._drop)

    def _taken(self) -> bool:
        def other(fd: int, folder: int, holder: bytes, end_ns: int) -> bool:
            return bool(holder) and holder != self._token and end_ns > self._now_ns()

        return self._under_flock(create=False, change=other)

    def _while_held(self, action: Callable[[], object]) -> bool:
        # Under the lease file's flock, which every acquirer takes before it
        # looks at the lease: nobody can take the lock while action runs.
        def run(fd: int, folder: int, holder: bytes, end_ns: int) -> bool:
            if holder != self._token:
                return False
            action()
            return True

        return self._under_flock(create=False, change=run)

    def _take(self, fd: int, folder: int, holder: bytes, end_ns: int) -> bool:
        now = self._now_ns()
        if holder and holder != self._token and end_ns > now:
            return False
        if holder != self._token:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._token, 0)
        os.utime(fd, ns=(now, now + int(self.ttl * 1e9)))
        return True

    def _extend(self, fd: int, folder: int, holder: bytes, end_ns: int) -> bool:
        now = self._now_ns()
        if holder != self._token or end_ns <= now:
            return False
        os.utime(fd, ns=(now, now + int(self.ttl * 1e9)))
        return True

    def _drop(self, fd: int, folder: int, holder: bytes, end_ns: int) -> bool:
        if holder != self._token:
            return False
        os.unlink(self._name, dir_fd=folder)
        return True

    def _under_flock(self, create: bool, change: Callable[[int, int, bytes, int], bool]) -> bool:
        folder = self._folder(create)
        if folder is None:
            return False
        flags = _FILE_FLAGS | (os.O_CREAT if create else 0)
        try:
            while True:
                try:
                    fd = os.open(self._name, flags, 0o666, dir_fd=folder)
                except FileNotFoundError:
                    return False  # no lease file: not ours to renew or release
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    status = os.fstat(fd)
                    if status.st_nlink == 0:
                        continue  # released (deleted) while we waited for flock: open the new one
                    holder = os.pread(fd, _TOKEN_BYTES, 0)
                    return change(fd, folder, holder, status.st_mtime_ns)
                finally:
                    os.close(fd)  # also drops the flock
        finally:
            os.close(folder)

    def _folder(self, create: bool) -> int | None:
        root = self._root()
        try:
            return os.open(LOCK_FOLDER, DIR_FLAGS, dir_fd=root)
        except FileNotFoundError:
            if not create:
                return None
        try:
            os.mkdir(LOCK_FOLDER, 0o777, dir_fd=root)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
        return os.open(LOCK_FOLDER, DIR_FLAGS, dir_fd=root)
