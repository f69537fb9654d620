"""FileSystemBackend: one folder on local disk, one file per key (the value families: :mod:`.families`).

The key's path comes from :mod:`.layout` (README.rst, "Filesystem layout").
Every path is opened relative to a descriptor of the root, one component at
a time with ``O_NOFOLLOW`` (:mod:`.files`): a symlink inside the root is
never followed, so no key reads or writes outside it. Writes go to a unique
temporary file in the target folder, then ``os.replace`` (or ``os.link`` for
``if_absent``), so a reader sees the old value or the new one, even if the
writer is killed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, Final, TypeVar

from ..base import MISSING, Missing
from ..errors import StoreUnavailableError
from ..hooks import fold_listing
from ..info import Stat
from ..locks import Lock
from .counts import changed
from .files import (
    At,
    create_temp,
    lstat_file,
    open_file,
    place,
    prune_folders,
    read_all,
    read_file,
    unlink_quietly,
    write_all,
)
from .folder import FolderRoot
from .layout import temp_name
from .lock import FileLock
from .naming import Stray

__all__ = ["STALE_TEMP", "WRITE_RETRIES", "FileSystemBackend"]

V = TypeVar("V")
T = TypeVar("T")

#: attempts of a write whose folder a concurrent delete keeps pruning
WRITE_RETRIES: Final = 8
#: seconds since its last change after which a ``~*.tmp`` file is a killed
#: writer's leftover: a live write changes its file far more often than this
STALE_TEMP: Final = 3600.0


class FileSystemBackend(FolderRoot[V]):
    """A folder on local disk (created if missing), one file per key.

    ``durable=True`` fsyncs each file and its folder, so a written value
    survives a power cut, at the cost of a disk flush per write. Safe across
    threads and processes sharing the folder. POSIX only.
    """

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return FileLock(key, timeout, ttl, self._live_root, **self._lock_context())

    def __reduce__(self) -> tuple[Any, ...]:
        # The root descriptor cannot cross processes; a copy reopens the root.
        return (_rebuild, (type(self), str(self.root), self.durable, self.layout.name, self._codec_option()))

    # -- stat, URLs ---------------------------------------------------------------------

    def stat(self, key: str) -> Stat | None:
        """Size, time written and content type of ``key`` (one walk, one ``lstat``); None if absent."""
        key = self._check(key, "stat")
        with self._translating("stat", key):
            status = self._at_live_key(key, lambda at: at.status if self._live(at.status) else None)
        if status is None:
            return None
        return Stat(
            key=key,
            size=status.st_size,
            last_modified=datetime.fromtimestamp(self._written(status), timezone.utc),
            content_type=self.codec.content_type,
        )

    def stat_many(self, prefix: str = "") -> Iterator[Stat]:
        """The :class:`~backends.info.Stat` of every key below ``prefix``, sorted (an ``lstat`` each)."""
        for key in self.list(prefix, None):
            found = self.stat(key)
            if found is not None:  # not removed since it was listed
                yield found

    def _written(self, status: os.stat_result) -> float:
        """When the file with this status was written (a cache keeps its deadline as the mtime)."""
        return status.st_mtime

    def url(self, key: str, expires: float | None = None) -> str:
        """The ``file://`` URL of ``key``'s file (which may not exist); no I/O.

        ``expires`` is for stores with presigned URLs (S3): a file URL does
        not expire, so any value raises ValueError.
        """
        key = self._check(key, "url")
        if expires is not None:
            raise ValueError("a file:// URL does not expire: expires is for presigned S3 URLs")
        return self.path(key).as_uri()

    # -- reading ----------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        data = self._read_key(key)
        if data is MISSING and self._root_gone(create=False):
            return self._read_key(key)
        return data

    def _read_key(self, key: str) -> bytes | Missing:
        folders, name = self._parts(key)
        if not folders:
            return read_file(self._root_fd, name)
        fds = self._open_folders(folders, create=False)
        if fds is None:
            return MISSING
        try:
            return read_file(fds[-1], name)
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
        folders, name = self._parts(key)
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
        folders, name = self._parts(key)
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
        folders, name = self._parts(key)
        for _ in range(WRITE_RETRIES):
            try:
                fds = self._open_folders(folders, create=True)
                assert fds is not None  # create=True makes every folder
            except FileNotFoundError:
                self._root_gone()  # the root was removed: reopen it and retry
                continue
            try:
                temp = create_temp(fds[-1])
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
            unlink_quietly(temp_name, folder)
            raise
        if placed and self.durable:
            os.fsync(folder)
        return placed

    # Every change is told to the remembered len of this process's folder caches
    # (:func:`.counts.changed`, after it is made): a plain store opened on a cache's
    # folder changes it as another cache object would (a cache counts its own).

    def _place(self, folder: int, temp_name: str, name: str, if_absent: bool) -> bool:
        """Move the written temporary file to ``name``; with ``if_absent``, only if it is free."""
        try:
            return place(folder, temp_name, name, if_absent)[0]
        finally:
            changed()

    # -- deleting ---------------------------------------------------------------

    def _delete(self, key: str) -> bool:
        return bool(self._at_live_key(key, self._remove))

    def _remove(self, at: At) -> bool:
        """Unlink a key's file and prune its emptied folders; False if it was not there."""
        if not self._unlink_entry(at.folder, at.name):
            return False
        prune_folders(at.fds, at.folders)
        return True

    def _unlink_entry(self, folder: int, name: str) -> bool:
        """Unlink the key's file ``name``; False if it was not there (a bounded cache counts it)."""
        try:
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            return False
        finally:
            changed()
        return True

    def _rename_aside(self, folder: int, name: str, aside: str) -> bool:
        """Rename the key's file ``name`` to ``aside``; False if it was not there (a bounded cache counts)."""
        try:
            os.rename(name, aside, src_dir_fd=folder, dst_dir_fd=folder)
        except FileNotFoundError:
            return False
        finally:
            changed()
        return True

    def _pop(self, key: str) -> bytes | Missing:
        taken = self._at_live_key(key, self._take)
        return MISSING if taken is None else taken

    def _take(self, at: At) -> bytes | None:
        """Take the file of a key: rename it aside, read it, remove it; None if it was gone.

        The rename is what makes ``pop`` atomic: of racing callers exactly
        one moves the file, and the value read is exactly the one removed.
        """
        aside = temp_name()
        if not self._rename_aside(at.folder, at.name, aside):
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
            unlink_quietly(aside, at.folder)
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
        folders, name = self._parts(key)
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
        try:
            for folder, name, _ in self._walk(tidy=True):
                self._still_open()
                unlink_quietly(name, folder)
        finally:
            changed()

    def _still_open(self) -> None:
        """Raise OSError (EBADF: translated to "closed") once close() was called.

        A walk holds descriptors of its own, which close() does not reach:
        each key it would change is checked, so nothing is removed after close.
        """
        if self._closed:
            raise OSError(errno.EBADF, "closed")

    # -- listing ----------------------------------------------------------------

    def _iter_keys(self) -> Iterator[str]:
        self._root_gone(create=False)
        return self.layout.iter_keys(self._root_fd)

    def _len(self) -> int:
        self._root_gone(create=False)
        return self.layout.count(self._root_fd)

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # Sorted, as S3 lists; only the folder the prefix names is walked.
        self._root_gone(create=False)
        keep = self._keep()
        if delimiter == "/":
            return self.layout.folders(self._root_fd, prefix, keep)
        keys = self.layout.keys(self._root_fd, prefix, keep)
        return fold_listing(keys, prefix, delimiter) if delimiter else keys

    def _keep(self) -> Callable[[int, str], bool] | None:
        """Which key files a listing yields (a cache: the fresh ones); None: all."""
        return None

    def strays(self, prefix: str = "") -> Iterator[Stray]:
        """Yield what is in the folder but is not a key: its path below the root, and why; streaming.

        Files another tool put there (a name that is not a key, a symlink,
        a FIFO), reported instead of skipped silently; this library's own
        files (temporary files, locks, the layout marker) are not strays.
        With ``prefix``, only the folder holding the keys that start with it
        is looked into (the ``backends`` command reports these for ``ls`` and ``cp``).
        """
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        with self._translating("strays", None):
            self._root_gone(create=False)
            yield from self.layout.strays(self._root_fd, prefix)

    def _walk(self, tidy: bool) -> Iterator[tuple[int, str, str]]:
        """Yield ``(folder fd, file name, key)`` for every key (:func:`.layout.walk`).

        With ``tidy``, killed writers' temporary files (unchanged for
        :data:`STALE_TEMP` seconds) are removed, and emptied folders.
        """
        self._root_gone(create=False)
        return self.layout.walk(self._root_fd, self.clock() - STALE_TEMP if tidy else None)


def _rebuild(
    cls: type[FileSystemBackend[Any]],
    root: str,
    durable: bool,
    layout: str = "auto",
    codec: dict[str, Any] | None = None,
) -> FileSystemBackend[Any]:
    backend = cls.__new__(cls)
    FileSystemBackend.__init__(backend, root, durable=durable, layout=layout, **(codec or {}))
    return backend
