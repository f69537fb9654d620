"""The walks over a folder's keys: streaming, in no order, in chunks of names.

:meth:`Walks.walk` and its lighter forms (``iter_keys``, ``named_files``,
``count``) go depth first with one open descriptor per level, and cost
little more than their ``scandir`` calls (a chunk's names are told keys in
one match). With ``stale_before``, a walk also tidies: temporary files of
killed writers are removed, and each emptied folder on the way back up.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Final

from .files import BLOCKED_ERRNOS, DIR_FLAGS, lstat_file, try_rmdir, unlink_quietly
from .layout import TEMP_MARK, is_temp
from .naming import KeyFile, Naming, Stray, Strays, SubFolder

__all__ = ["BATCH", "Walks", "fresh_description", "open_child"]

#: keys per chunk of a walk: memory stays flat however many keys one folder holds
BATCH: Final = 1000


class Walks(Naming):
    """The unordered walks of a layout (:class:`~.listing.Layout` adds the sorted listings)."""

    def walk(
        self, root: int, stale_before: float | None = None, strays: Strays | None = None
    ) -> Iterator[tuple[int, str, str]]:
        """Yield ``(folder fd, file name, key)`` for every key below ``root``, streaming, in no order.

        Memory grows with the depth of the tree, not the number of keys.
        With ``stale_before`` (seconds on the clock of file ctimes),
        temporary files unchanged since then (killed writers') are removed,
        and each emptied folder on the way back up.
        """
        with fresh_description(root) as fd:
            for folder, names, keys in self._chunks(fd, "", SubFolder("", "", ""), stale_before, strays):
                for name, key in zip(names, keys, strict=True):
                    yield folder, name, key

    def iter_keys(self, root: int) -> Iterator[str]:
        """Yield every key below ``root``, streaming, in no order (:meth:`walk` without the rest)."""
        with fresh_description(root) as fd:
            for _, _, keys in self._chunks(fd, "", SubFolder("", "", ""), None, None):
                yield from keys

    def named_files(self, root: int) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(folder fd, names of key files)`` in chunks, for every key below ``root``, in no order."""
        with fresh_description(root) as fd:
            for folder, names, _ in self._chunks(fd, "", SubFolder("", "", ""), None, None):
                yield folder, names

    def count(self, root: int) -> int:
        """How many keys there are below ``root``."""
        with fresh_description(root) as fd:
            return sum(len(keys) for _, _, keys in self._chunks(fd, "", SubFolder("", "", ""), None, None))

    def _chunks(
        self, top: int, path: str, here: SubFolder, stale_before: float | None, strays: Strays | None
    ) -> Iterator[tuple[int, list[str], list[str]]]:
        """Yield ``(folder fd, file names, their keys)``: the keys below ``top`` in chunks
        of at most :data:`BATCH` entries.

        Depth first, in one loop: a folder's sub-folders are walked once its
        own scan is done, so the open descriptors are one per level (``top``
        stays the caller's).
        """
        # each level: its descriptor, path, its SubFolder, and the sub-folders still to walk
        levels: list[tuple[int, str, SubFolder, list[SubFolder]]] = []
        folder = top
        while True:
            below: list[SubFolder] = []
            yield from self._scan(folder, path, here, below, stale_before=stale_before, strays=strays)
            below.reverse()  # popped from the end: walked in the order met
            levels.append((folder, path, here, below))
            # The next folder to walk: a sub-folder of the deepest level that has one left.
            while levels:
                folder, path, here, below = levels[-1]
                if below:
                    child = below.pop()
                    fd = open_child(folder, child.name)
                    if fd is not None:
                        folder, path, here = fd, f"{path}{child.name}/", child
                        break
                    continue
                levels.pop()
                if folder == top:
                    return
                os.close(folder)
                if stale_before is not None:
                    try_rmdir(here.name, levels[-1][0])
            else:
                return

    def _scan(
        self,
        folder: int,
        path: str,
        here: SubFolder,
        below: list[SubFolder],
        *,
        stale_before: float | None,
        strays: Strays | None,
    ) -> Iterator[tuple[int, list[str], list[str]]]:
        """Yield one folder's keys in chunks; its sub-folders go to ``below``.

        A chunk's names are told keys all at once (:meth:`file_keys`: one
        regular-expression match over the joined names), name by name only
        when that fails, so a walk costs little more than its ``scandir`` calls.
        """
        prefix, pending = here.prefix, here.pending
        with os.scandir(folder) as entries:
            while True:
                names: list[str] = []
                others: list[os.DirEntry[str]] = []
                for entry in islice(entries, BATCH):
                    if entry.is_file(follow_symlinks=False):
                        names.append(entry.name)
                    else:
                        others.append(entry)
                if not names and not others:
                    return
                keys = self.file_keys(names, prefix, pending)
                if keys is None:  # own files, strays or escaped names among them
                    names, keys = self._one_by_one(
                        folder, path, here, names, stale_before=stale_before, strays=strays
                    )
                for entry in others:
                    kind = self.classify(entry, prefix, pending)
                    if isinstance(kind, SubFolder):
                        below.append(kind)
                    elif isinstance(kind, Stray) and strays is not None:
                        strays(Stray(path + kind.path, kind.reason))
                if keys:
                    yield folder, names, keys

    def _one_by_one(
        self,
        folder: int,
        path: str,
        here: SubFolder,
        names: list[str],
        *,
        stale_before: float | None,
        strays: Strays | None,
    ) -> tuple[list[str], list[str]]:
        """The names among ``names`` (regular files) that hold keys, and their keys."""
        prefix, pending = here.prefix, here.pending
        kept: list[str] = []
        keys: list[str] = []
        for name in names:
            key = self.file_key(name, prefix, pending) if name[0] != TEMP_MARK else None
            kind = KeyFile(name, key) if key is not None else self.file_kind(name, prefix, pending)
            if isinstance(kind, KeyFile):
                kept.append(name)
                keys.append(kind.key)
            elif kind is not None:
                if strays is not None:
                    strays(Stray(path + kind.path, kind.reason))
            elif stale_before is not None and is_temp(name):
                _sweep(folder, name, stale_before)
        return kept, keys


@contextmanager
def fresh_description(root: int) -> Iterator[int]:
    """A fresh open file description of ``root``: ``scandir(fd)`` dups the descriptor, and
    dups share the read position, so two listings over one descriptor would each skip
    what the other read."""
    fd = os.open(".", DIR_FLAGS, dir_fd=root)
    try:
        yield fd
    finally:
        os.close(fd)


def open_child(folder: int, name: str) -> int | None:
    """The sub-folder ``name`` of ``folder`` opened (never through a symlink); None if it is gone."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ENOENT or exc.errno in BLOCKED_ERRNOS:
            return None  # removed or replaced since it was listed
        raise


def _sweep(folder: int, name: str, stale_before: float) -> None:
    """Remove a temporary file left by a killed process, if unchanged since ``stale_before``.

    The ctime is used: a writer cannot set it (a cache sets the mtime of its
    files to their deadline), and every write to the file moves it on.
    """
    status = lstat_file(folder, name)
    if status is not None and status.st_ctime < stale_before:
        unlink_quietly(name, folder)
