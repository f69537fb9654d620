"""The sorted listings of a folder's keys, and the strays below a prefix: :class:`Layout`.

Only the folder a prefix names is walked; each folder's entries are sorted
in memory, one folder at a time, by code point (UTF-8 byte order, as S3).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter

from ..keys import is_valid_key
from .files import DIR_FLAGS
from .layout import TEMP_MARK
from .naming import Keep, KeyFile, Stray, SubFolder
from .walks import Walks, open_child

__all__ = ["Layout"]


class Layout(Walks):
    """How keys map to paths in a folder, with its walks and listings; :data:`.tree.ESCAPED` and
    :data:`.tree.PLAIN` are the two."""

    def keys(self, root: int, prefix: str = "", keep: Keep | None = None) -> Iterator[str]:
        """Yield the keys starting with ``prefix``, sorted (by code point: UTF-8 byte order, as S3).

        Only the folder the prefix names is walked. Each folder's entries are
        sorted in memory, one folder at a time.
        """
        for key, _ in self._listing(root, prefix, keep, fold=False):
            yield key

    def folders(self, root: int, prefix: str = "", keep: Keep | None = None) -> Iterator[str]:
        """Yield the keys and the ``/``-ended sub-folders directly below ``prefix``, sorted.

        A sub-folder is yielded once it is seen to hold a key; the rest of it is not walked.
        """
        for entry, _ in self._listing(root, prefix, keep, fold=True):
            yield entry

    def strays(self, root: int, prefix: str = "") -> Iterator[Stray]:
        """Yield the strays in the folder the prefix names (all of them for ``""``), streaming."""
        found: list[Stray] = []
        with self._start(root, prefix) as (fds, start, path):
            if fds:
                for _ in self._chunks(fds[-1], path, SubFolder("", start, ""), None, found.append):
                    yield from found
                    found.clear()
        yield from found

    @contextmanager
    def _start(self, root: int, prefix: str) -> Iterator[tuple[list[int], str, str]]:
        """The folders down to the one holding every key that starts with ``prefix``
        (none if no such key can exist), the keys' common start, and that folder's path."""
        cut = prefix.rfind("/") + 1
        start = prefix[:cut]
        folders: tuple[str, ...] = ()
        if cut:
            if not is_valid_key(start + "x") or self.problem(start + "x") is not None:
                yield [], start, ""  # no key this layout holds starts with it
                return
            folders = self.parts(start + "x")[0]
        opened = [os.open(".", DIR_FLAGS, dir_fd=root)]
        try:
            for name in folders:
                fd = open_child(opened[-1], name)
                if fd is None:
                    yield [], start, ""  # the folder is not there: no such key
                    return
                opened.append(fd)
            yield opened, start, "".join(f"{name}/" for name in folders)
        finally:
            for fd in opened:
                os.close(fd)

    def _listing(self, root: int, prefix: str, keep: Keep | None, fold: bool) -> Iterator[tuple[str, None]]:
        with self._start(root, prefix) as (fds, start, _):
            if not fds:
                return
            for entry in self._sorted(fds[-1], SubFolder("", start, ""), keep, fold, start):
                if entry.startswith(prefix):
                    yield entry, None
                elif entry > prefix:
                    return  # sorted: nothing later can start with the prefix

    def _sorted(self, folder: int, here: SubFolder, keep: Keep | None, fold: bool, top: str) -> Iterator[str]:
        """The keys below ``folder`` sorted; with ``fold``, sub-folders of ``top`` as one entry."""
        for sort_key, item in self._items(folder, here, keep, fold, top):
            if item is None:
                yield sort_key
            elif isinstance(item, str):
                if keep is None or keep(folder, item):
                    yield sort_key
            elif fold and item.prefix.count("/") > top.count("/"):
                if any(True for _ in self._kept(folder, item, keep)):
                    yield item.prefix
            elif (fd := open_child(folder, item.name)) is not None:
                try:
                    yield from self._sorted(fd, item, keep, fold, top)
                finally:
                    os.close(fd)

    def _items(
        self, folder: int, here: SubFolder, keep: Keep | None, fold: bool, top: str
    ) -> list[tuple[str, SubFolder | str | None]]:
        """The entries of ``folder`` with the string they sort by: a key's file with its name,
        a folder, or a key already known (below a long segment's piece) with None."""
        file_key, prefix, pending = self.file_key, here.prefix, here.pending
        items: list[tuple[str, SubFolder | str | None]] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name[0] != TEMP_MARK and entry.is_file(follow_symlinks=False):
                    key = file_key(name, prefix, pending)
                    if key is not None:
                        items.append((key, name))
                        continue
                found = self.classify(entry, prefix, pending)
                if isinstance(found, KeyFile):
                    items.append((found.key, name))
                elif isinstance(found, SubFolder) and not found.pending:
                    items.append((found.prefix, found))  # every key below starts with it
                elif isinstance(found, SubFolder):
                    # The rest of a long segment (escaped layout): its keys sort
                    # among this folder's own, so they are read here and now.
                    items.extend((key, None) for key in self._part_keys(folder, found, keep, fold, top))
        items.sort(key=itemgetter(0))
        return items

    def _kept(self, folder: int, child: SubFolder, keep: Keep | None) -> Iterator[str]:
        fd = open_child(folder, child.name)
        if fd is None:
            return
        try:
            for at, names, keys in self._chunks(fd, "", child, None, None):
                for name, key in zip(names, keys, strict=True):
                    if keep is None or keep(at, name):
                        yield key
        finally:
            os.close(fd)

    def _part_keys(self, folder: int, child: SubFolder, keep: Keep | None, fold: bool, top: str) -> set[str]:
        keys = self._kept(folder, child, keep)
        if not fold:
            return set(keys)
        depth = top.count("/")
        return {
            key if key.count("/") == depth else "/".join(key.split("/")[: depth + 1]) + "/" for key in keys
        }
