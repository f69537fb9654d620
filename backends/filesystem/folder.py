"""FolderRoot: the folder of a filesystem backend, held open, under its store hooks.

The root is held as a descriptor, and every path is opened relative to it,
one component at a time with ``O_NOFOLLOW`` (:mod:`.files`): a symlink inside
the root is never followed, so no key reads or writes outside it. A deleted
root is noticed (one ``fstat``, on misses only) and the folder at its path
opened again; a missing root is made at the first write, never by reading.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from pathlib import Path
from typing import Any, TypeVar

from ..base import BaseBackend
from ..codecs.layers import CodecOption
from ..errors import BackendError, KeyConflictError, PermissionDeniedError, StoreError
from .files import BLOCKED_ERRNOS, DIR_FLAGS, NEW_FLAGS, ROOT_FLAGS, deleted_folder, retire
from .listing import Layout
from .lock import LOCK_FOLDER
from .tree import ESCAPED, LAYOUTS, MARKER, PLAIN, is_own

__all__ = ["LOOK_AT", "FolderRoot"]

#: top-level entries an unmarked folder's layout is guessed from (a folder of
#: this library's versions before the marker has a "+" folder among them)
LOOK_AT = 1000

_CONFLICT = (
    "the plain layout cannot hold this key: a key or folder of the same name is in the way "
    "of its path ('a' and 'a/b' cannot coexist in an ordinary folder tree); "
    "use layout='escaped' to keep both"
)

V = TypeVar("V")

#: every open root in the process: a forked child gives each a new lock (see _after_fork)
#: (by id: backends that are equal, the same folder, are still two roots with two locks)
_ROOTS: weakref.WeakValueDictionary[int, FolderRoot[Any]] = weakref.WeakValueDictionary()


def _after_fork() -> None:
    """In a forked child: a root's lock that another thread of the parent held at the fork
    (reopening a deleted root) would stay held for ever, with no thread to release it.
    The child has only the forking thread, and the descriptor that thread saw is whole
    (``dup2`` is atomic), so a new lock is all it needs."""
    for root in list(_ROOTS.values()):
        root._forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _root_path(root: object) -> Path:
    """The absolute path of a root given as a str or path; TypeError or ValueError naming ``root``."""
    if isinstance(root, bytes) or not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root is a str or a path, not {type(root).__name__}")
    path = os.fspath(root)
    if not isinstance(path, str):
        raise TypeError(f"root is a str or a path, not a path of {type(path).__name__}")
    if "\0" in path:
        raise ValueError(f"root is the path of a folder, with no NUL character, not {path!r}")
    return Path(os.path.abspath(path))


def _own_entry(entry: os.DirEntry[str]) -> bool:
    """Whether a top-level entry is one this library made (a lock taken before any write)."""
    return is_own(entry.name, folder=entry.is_dir(follow_symlinks=False))


class FolderRoot(BaseBackend[V, bytes]):
    """The root folder of :class:`~backends.filesystem.FileSystemBackend` (see there)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = False,
        layout: str = "auto",
        codec: CodecOption[V] = None,
    ) -> None:
        self._check_codec(codec)
        if not isinstance(layout, str) or (layout != "auto" and layout not in LAYOUTS):
            raise ValueError(f"layout is 'auto', 'escaped' or 'plain', not {layout!r}")
        self.root = _root_path(root)
        # Until the folder is opened and its layout read, errors name it with this one.
        self.layout: Layout = LAYOUTS.get(layout, ESCAPED)
        if not isinstance(durable, (bool, int)) or durable not in (0, 1):
            raise TypeError(f"durable is True or False, not {durable!r}")
        self.durable = bool(durable)
        self._lock = threading.Lock()
        _ROOTS[id(self)] = self  # before anything another thread could hold at a fork
        self._root_fd = -1
        self._closed = False
        self._finalizer: Any = None
        self._unmarked = False
        try:
            self._open_root(create=False)  # made at the first write: reading creates nothing
            self.layout = self._choose_layout(layout)
        except OSError as exc:
            self._reraise(exc, "open", None)
        self._parts = self.layout.parts
        self._key_rule = self.layout.problem if self.layout is PLAIN else None
        self._unmarked = self.layout is ESCAPED and not self._marked()

    def _forked_child(self) -> None:
        """In a forked child: new locks for those another thread of the parent may have held
        at the fork (a layer with locks of its own makes those anew too)."""
        self._lock = threading.Lock()

    # -- layout -----------------------------------------------------------------

    def _marked(self) -> bool:
        try:
            return os.stat(MARKER, dir_fd=self._root_fd, follow_symlinks=False).st_size >= 0
        except FileNotFoundError:
            return False

    def _choose_layout(self, requested: str) -> Layout:
        """The layout asked for, or with "auto" the folder's: escaped if it records it
        (or is new or empty: this library makes it), plain for a tree it did not make."""
        if self._marked():
            if requested == "plain":
                raise ValueError(
                    f"{str(self.root)!r} holds the escaped layout ({MARKER} says so); "
                    "open it with layout='auto' or 'escaped'"
                )
            return ESCAPED
        if requested != "auto":
            return LAYOUTS[requested]
        with os.scandir(self._root_fd) as entries:
            # Only this library's own files (a lock taken before any write): still ours to lay out.
            theirs = (entry for entry in entries if not _own_entry(entry))
            found = [entry for entry, _ in zip(theirs, range(LOOK_AT), strict=False)]
        if not found:
            return ESCAPED
        # Written before folders recorded their layout: a "+" or "=" folder is ours.
        legacy = any(entry.name[-1] in "+=" and entry.is_dir(follow_symlinks=False) for entry in found)
        return ESCAPED if legacy else PLAIN

    def _mark(self) -> None:
        """Record the escaped layout in the root (at the first write), so "auto" reads it back."""
        try:
            fd = os.open(MARKER, NEW_FLAGS, 0o666, dir_fd=self._root_fd)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, b"escaped\n")
            finally:
                os.close(fd)
        self._unmarked = False

    # -- root -------------------------------------------------------------------

    def _open_root(self, create: bool = True) -> None:
        """Open the folder at the root's path (made first, with ``create``).

        Without ``create``, a missing root is held as a deleted folder: every
        read of it misses, and the first write makes the root (see _root_gone).
        """
        if create:
            os.makedirs(self.root, exist_ok=True)
            self._unmarked = getattr(self, "layout", None) is ESCAPED
        try:
            fd = os.open(self.root, ROOT_FLAGS)
        except FileNotFoundError:
            if create:
                raise
            fd = deleted_folder()
        if self._root_fd < 0:
            self._root_fd = fd
            self._finalizer = weakref.finalize(self, os.close, fd)
            return
        # The number stays the root's until close(): another thread's call
        # that took it a moment ago reaches the new folder, never a closed
        # descriptor or one the next open() reused for another file.
        try:
            os.dup2(fd, self._root_fd, inheritable=False)
        finally:
            os.close(fd)

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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: every call then raises StoreError."""
        return self._closed

    def close(self) -> None:
        """Close the root's file descriptor; every later call raises StoreError saying so."""
        with self._lock:
            # The number is forgotten: a call made afterwards fails with EBADF.
            self._closed = True
            number, self._root_fd = self._root_fd, -1
            # A call of another thread that took the number a moment ago must not act on
            # whatever folder the next open() would get it for: the number now names a
            # deleted folder (nothing is found or made in it) until the backend is freed.
            if number >= 0:
                retire(number)

    # -- paths, stat, URLs ------------------------------------------------------------

    def path(self, key: str) -> Path:
        """Return the path of the file holding ``key`` (which may not exist)."""
        key = self._check(key, "path")
        folders, name = self._parts(key)
        return self.root.joinpath(*folders, name)

    def _open_folders(self, folders: tuple[str, ...], create: bool) -> list[int] | None:
        """Open each folder below the root without following symlinks.

        Returns the descriptors, root first (the caller closes all but the
        root), or None when a folder is missing (or blocked) and not created.
        """
        if create and self._unmarked:
            self._mark()
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

    # -- errors, identity -------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:  # noqa: PLR0911 - a table
        if self._closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        if isinstance(exc, PermissionError):
            return PermissionDeniedError, f"permission denied ({exc.strerror})"
        if self._root_fd < 0 and isinstance(exc, NotADirectoryError):
            return StoreError, "the root is not a folder: it, or a folder above it, is a file"
        if isinstance(exc, OSError) and exc.filename == LOCK_FOLDER and exc.errno in BLOCKED_ERRNOS:
            return StoreError, (
                f"something that is not a folder (another tool's file, symlink or FIFO) is at the "
                f"lock folder {LOCK_FOLDER!r}; it is left alone"
            )
        if self.layout is PLAIN and isinstance(exc, OSError) and exc.errno in (errno.EISDIR, errno.ENOTDIR):
            return KeyConflictError, _CONFLICT
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
        if self.layout is PLAIN:
            return f"{str(self.root)!r}, layout='plain'"
        return f"{str(self.root)!r}"

    def _identity(self) -> tuple[object, ...]:
        return (str(self.root), self.codec.identity(), self.layout.name)
