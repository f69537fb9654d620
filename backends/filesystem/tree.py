"""The two layouts of keys in a folder, and the walks over a folder's keys.

- :data:`ESCAPED` (:mod:`.layout`): every valid key fits; folders carry a
  ``+``, names are percent-escaped. A folder this library creates uses it
  and records it in a :data:`MARKER` file.
- :data:`PLAIN`: key ``a/b`` is the file ``root/a/b``, an ordinary tree (a
  website, a build). It cannot hold a key and a folder of the same name
  (``a`` and ``a/b``), nor a segment of over 255 bytes or starting with ``~``.

Every entry of a folder is classified once, the same way for clearing,
listing and reporting: a key's file, a folder to descend, this library's own
file (temporary files, locks, the marker), or a *stray* (anything else,
reported by :meth:`Layout.walk`'s ``strays`` callback, never dropped silently).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from operator import itemgetter
from typing import Final, NamedTuple

from ..keys import MAX_KEY_BYTES, all_valid, is_valid_key
from .bound import BOUND_FILE
from .files import BLOCKED_ERRNOS, DIR_FLAGS, lstat_file, try_rmdir, unlink_quietly
from .layout import (
    CHUNK,
    DIR_MARK,
    PART_MARK,
    TEMP_MARK,
    decode_segment,
    is_temp,
    key_of,
    key_parts,
    piece_ok,
)
from .lock import LOCK_FOLDER

__all__ = ["ESCAPED", "LAYOUTS", "MARKER", "PLAIN", "Layout", "Stray", "Strays", "is_own"]

#: the file recording that a folder uses the escaped layout (a reserved name: never a key)
MARKER: Final = f"{TEMP_MARK}backends-layout"
NAME_MAX: Final = 255  # bytes in one file name (ext4, APFS, XFS...)
#: keys per chunk of a walk: memory stays flat however many keys one folder holds
BATCH: Final = 1000
#: a name made only of characters the escaped layout keeps as they are: the name of itself
_plain_name = re.compile(rf"[A-Za-z0-9._-]{{1,{CHUNK}}}").fullmatch
#: names of that kind joined by "/" (lengths checked apart)
_plain_names = re.compile(r"[A-Za-z0-9._/-]*").fullmatch


class Stray(NamedTuple):
    """A thing in the folder that is not a key: its path below the root, and why."""

    path: str
    reason: str


#: called with each stray a walk meets
Strays = Callable[[Stray], None]
#: whether a key's file counts (a cache: not expired), given its folder and name
Keep = Callable[[int, str], bool]


class _Dir(NamedTuple):
    name: str
    prefix: str  # the keys below start with this
    pending: str  # escaped text of a segment cut into pieces (escaped layout)


class _File(NamedTuple):
    name: str
    key: str


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "a symlink (never followed)"
    if entry.is_dir(follow_symlinks=False):
        return "a folder"
    if entry.is_file(follow_symlinks=False):
        return "a file"
    return "not a file (a FIFO, socket or device)"


def is_own(name: str, top: bool = True, folder: bool = False) -> bool:
    """Whether the file (or with ``folder``, the folder) ``name`` is one this library made.

    Exactly: a temporary file (:func:`.layout.is_temp`: ``~backends-`` and 32
    hex digits, ``.tmp``) anywhere, and at the root (``top``) the layout
    marker file, a bounded cache's tally file and the lock folder. Any other name, ``~notes.tmp`` or
    ``~WRL0001.tmp`` included, is a user's: a key or a stray, never hidden.
    """
    if folder:
        return top and name == LOCK_FOLDER
    return is_temp(name) or (top and name in (MARKER, BOUND_FILE))


class Layout:
    """How keys map to paths in a folder; :data:`ESCAPED` and :data:`PLAIN` are the two."""

    name = ""

    def parts(self, key: str) -> tuple[tuple[str, ...], str]:
        """The folder names and the file name of a valid key, relative to the root."""
        raise NotImplementedError

    def problem(self, key: str) -> str | None:
        """Why this layout cannot hold the valid ``key``, or None if it can."""
        return None

    def classify(self, entry: os.DirEntry[str], prefix: str, pending: str) -> _Dir | _File | Stray | None:
        """What an entry is: a folder of keys, a key's file, a stray, or None (our own file)."""
        raise NotImplementedError

    def file_key(self, name: str, prefix: str, pending: str) -> str | None:
        """The key stored in the regular file ``name`` (not a ``~`` name), or None."""
        raise NotImplementedError

    def file_keys(self, names: list[str], prefix: str, pending: str) -> list[str] | None:
        """The keys stored in the regular files ``names`` if every one holds a key, else None."""
        raise NotImplementedError

    def file_kind(self, name: str, prefix: str, pending: str) -> _File | Stray | None:
        """What the regular file ``name`` is: a key's file, a stray, or None (our own file)."""
        if name.startswith(TEMP_MARK):
            return None if is_own(name, not prefix and not pending) else Stray(name, _RESERVED)
        key = self.file_key(name, prefix, pending)
        return Stray(name, self.not_a_key) if key is None else _File(name, key)

    #: why a regular file is not a key's
    not_a_key = ""

    def __repr__(self) -> str:
        return f"<{self.name} layout>"

    # -- walks ------------------------------------------------------------------------

    def walk(
        self, root: int, stale_before: float | None = None, strays: Strays | None = None
    ) -> Iterator[tuple[int, str, str]]:
        """Yield ``(folder fd, file name, key)`` for every key below ``root``, streaming, in no order.

        Memory grows with the depth of the tree, not the number of keys.
        With ``stale_before`` (seconds on the clock of file ctimes),
        temporary files unchanged since then (killed writers') are removed,
        and each emptied folder on the way back up.
        """
        with _fresh(root) as fd:
            for folder, names, keys in self._chunks(fd, "", _Dir("", "", ""), stale_before, strays):
                for name, key in zip(names, keys, strict=True):
                    yield folder, name, key

    def iter_keys(self, root: int) -> Iterator[str]:
        """Yield every key below ``root``, streaming, in no order (:meth:`walk` without the rest)."""
        with _fresh(root) as fd:
            for _, _, keys in self._chunks(fd, "", _Dir("", "", ""), None, None):
                yield from keys

    def named_files(self, root: int) -> Iterator[tuple[int, list[str]]]:
        """Yield ``(folder fd, names of key files)`` in chunks, for every key below ``root``, in no order."""
        with _fresh(root) as fd:
            for folder, names, _ in self._chunks(fd, "", _Dir("", "", ""), None, None):
                yield folder, names

    def count(self, root: int) -> int:
        """How many keys there are below ``root``."""
        with _fresh(root) as fd:
            return sum(len(keys) for _, _, keys in self._chunks(fd, "", _Dir("", "", ""), None, None))

    def _chunks(
        self, top: int, path: str, here: _Dir, stale_before: float | None, strays: Strays | None
    ) -> Iterator[tuple[int, list[str], list[str]]]:
        """Yield ``(folder fd, file names, their keys)``: the keys below ``top`` in chunks
        of at most :data:`BATCH` entries.

        Depth first, in one loop: a folder's sub-folders are walked once its
        own scan is done, so the open descriptors are one per level (``top``
        stays the caller's).
        """
        # each level: its descriptor, path, its _Dir, and the sub-folders still to walk
        levels: list[tuple[int, str, _Dir, list[_Dir]]] = []
        folder = top
        while True:
            below: list[_Dir] = []
            yield from self._scan(folder, path, here, below, stale_before=stale_before, strays=strays)
            below.reverse()  # popped from the end: walked in the order met
            levels.append((folder, path, here, below))
            # The next folder to walk: a sub-folder of the deepest level that has one left.
            while levels:
                folder, path, here, below = levels[-1]
                if below:
                    child = below.pop()
                    fd = _open_child(folder, child.name)
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
        here: _Dir,
        below: list[_Dir],
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
                    if isinstance(kind, _Dir):
                        below.append(kind)
                    elif isinstance(kind, Stray) and strays is not None:
                        strays(Stray(path + kind.path, kind.reason))
                if keys:
                    yield folder, names, keys

    def _one_by_one(
        self,
        folder: int,
        path: str,
        here: _Dir,
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
            kind = _File(name, key) if key is not None else self.file_kind(name, prefix, pending)
            if isinstance(kind, _File):
                kept.append(name)
                keys.append(kind.key)
            elif kind is not None:
                if strays is not None:
                    strays(Stray(path + kind.path, kind.reason))
            elif stale_before is not None and is_temp(name):
                _sweep(folder, name, stale_before)
        return kept, keys

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
                for _ in self._chunks(fds[-1], path, _Dir("", start, ""), None, found.append):
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
                fd = _open_child(opened[-1], name)
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
            for entry in self._sorted(fds[-1], _Dir("", start, ""), keep, fold, start):
                if entry.startswith(prefix):
                    yield entry, None
                elif entry > prefix:
                    return  # sorted: nothing later can start with the prefix

    def _sorted(self, folder: int, here: _Dir, keep: Keep | None, fold: bool, top: str) -> Iterator[str]:
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
            elif (fd := _open_child(folder, item.name)) is not None:
                try:
                    yield from self._sorted(fd, item, keep, fold, top)
                finally:
                    os.close(fd)

    def _items(
        self, folder: int, here: _Dir, keep: Keep | None, fold: bool, top: str
    ) -> list[tuple[str, _Dir | str | None]]:
        """The entries of ``folder`` with the string they sort by: a key's file with its name,
        a folder, or a key already known (below a long segment's piece) with None."""
        file_key, prefix, pending = self.file_key, here.prefix, here.pending
        items: list[tuple[str, _Dir | str | None]] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name[0] != TEMP_MARK and entry.is_file(follow_symlinks=False):
                    key = file_key(name, prefix, pending)
                    if key is not None:
                        items.append((key, name))
                        continue
                found = self.classify(entry, prefix, pending)
                if isinstance(found, _File):
                    items.append((found.key, name))
                elif isinstance(found, _Dir) and not found.pending:
                    items.append((found.prefix, found))  # every key below starts with it
                elif isinstance(found, _Dir):
                    # The rest of a long segment (escaped layout): its keys sort
                    # among this folder's own, so they are read here and now.
                    items.extend((key, None) for key in self._part_keys(folder, found, keep, fold, top))
        items.sort(key=itemgetter(0))
        return items

    def _kept(self, folder: int, child: _Dir, keep: Keep | None) -> Iterator[str]:
        fd = _open_child(folder, child.name)
        if fd is None:
            return
        try:
            for at, names, keys in self._chunks(fd, "", child, None, None):
                for name, key in zip(names, keys, strict=True):
                    if keep is None or keep(at, name):
                        yield key
        finally:
            os.close(fd)

    def _part_keys(self, folder: int, child: _Dir, keep: Keep | None, fold: bool, top: str) -> set[str]:
        keys = self._kept(folder, child, keep)
        if not fold:
            return set(keys)
        depth = top.count("/")
        return {
            key if key.count("/") == depth else "/".join(key.split("/")[: depth + 1]) + "/" for key in keys
        }


@contextmanager
def _fresh(root: int) -> Iterator[int]:
    """A fresh open file description of ``root``: ``scandir(fd)`` dups the descriptor, and
    dups share the read position, so two listings over one descriptor would each skip
    what the other read."""
    fd = os.open(".", DIR_FLAGS, dir_fd=root)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_child(folder: int, name: str) -> int | None:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ENOENT or exc.errno in BLOCKED_ERRNOS:
            return None  # removed or replaced since it was listed
        raise


#: why a "~" name that is not this library's own is a stray
_RESERVED = "a name starting with '~' (reserved in a folder of keys) that this library did not make"


def _tilde_entry(entry: os.DirEntry[str], prefix: str, pending: str) -> Stray | None:
    """A ``~`` entry: None if this library made it (:func:`is_own`), else a stray."""
    top = not prefix and not pending
    if entry.is_dir(follow_symlinks=False):
        return None if is_own(entry.name, top, folder=True) else Stray(entry.name, _RESERVED)
    if entry.is_file(follow_symlinks=False) and is_own(entry.name, top):
        return None
    return Stray(entry.name, _RESERVED if entry.is_file(follow_symlinks=False) else _kind(entry))


def _sweep(folder: int, name: str, stale_before: float) -> None:
    """Remove a temporary file left by a killed process, if unchanged since ``stale_before``.

    The ctime is used: a writer cannot set it (a cache sets the mtime of its
    files to their deadline), and every write to the file moves it on.
    """
    status = lstat_file(folder, name)
    if status is not None and status.st_ctime < stale_before:
        unlink_quietly(name, folder)


class _Escaped(Layout):
    name = "escaped"

    def parts(self, key: str) -> tuple[tuple[str, ...], str]:
        return key_parts(key)

    def file_key(self, name: str, prefix: str, pending: str) -> str | None:
        if not pending and _plain_name(name):
            # The common case: a name that escapes to itself (scandir never gives "." or "..").
            key = prefix + name
            return key if len(key) <= MAX_KEY_BYTES // 4 or len(key.encode()) <= MAX_KEY_BYTES else None
        return key_of(prefix, pending, name)

    not_a_key = "a file whose name is not the escaped form of a key"

    def file_keys(self, names: list[str], prefix: str, pending: str) -> list[str] | None:
        # One match over the names joined by "/" (never in a name) tells that
        # each escapes to itself, as file_key's common case does name by name.
        if pending or not _plain_names("/".join(names)):
            return None
        longest = max(map(len, names), default=0)
        if longest > CHUNK or len(prefix.encode()) + longest > MAX_KEY_BYTES:
            return None
        return [prefix + name for name in names] if prefix else names

    def classify(self, entry: os.DirEntry[str], prefix: str, pending: str) -> _Dir | _File | Stray | None:
        name = entry.name
        if name.startswith(TEMP_MARK):
            return _tilde_entry(entry, prefix, pending)
        mark = name[-1]
        if mark in (DIR_MARK, PART_MARK) and entry.is_dir(follow_symlinks=False):
            piece = name[:-1]
            if mark == PART_MARK:
                if piece_ok(piece, full=True):
                    return _Dir(name, prefix, pending + piece)
            elif (
                segment := decode_segment(pending + piece) if piece_ok(piece, full=False) else None
            ) is not None:
                return _Dir(name, f"{prefix}{segment}/", "")
            return Stray(name, "a folder whose name is not the escaped form of a key's segment")
        if entry.is_file(follow_symlinks=False):
            return self.file_kind(name, prefix, pending)
        return Stray(name, _kind(entry))


class _Plain(Layout):
    name = "plain"

    def parts(self, key: str) -> tuple[tuple[str, ...], str]:
        if "/" not in key:
            return (), key
        *folders, name = key.split("/")
        return tuple(folders), name

    def file_key(self, name: str, prefix: str, pending: str) -> str | None:
        key = prefix + name
        return key if is_valid_key(key) else None

    not_a_key = "a file whose path is not a valid key (not UTF-8, a control character, too long)"

    def file_keys(self, names: list[str], prefix: str, pending: str) -> list[str] | None:
        if f"/{TEMP_MARK}" in "/" + "/".join(names):
            return None  # an own file or a stray among them
        if not all_valid(names, MAX_KEY_BYTES - len(prefix.encode())):
            return None
        return [prefix + name for name in names] if prefix else names

    def problem(self, key: str) -> str | None:
        for segment in key.split("/"):
            if segment.startswith(TEMP_MARK):
                return f"a segment starting with '~' ({segment[:40]!r}) is reserved for temporary files"
            if len(segment) * 4 > NAME_MAX and len(segment.encode("utf-8")) > NAME_MAX:
                return f"a segment of over {NAME_MAX} bytes cannot be a file name"
        return None

    def classify(self, entry: os.DirEntry[str], prefix: str, pending: str) -> _Dir | _File | Stray | None:
        name = entry.name
        if name.startswith(TEMP_MARK):
            return _tilde_entry(entry, prefix, pending)
        if entry.is_dir(follow_symlinks=False):
            if is_valid_key(f"{prefix}{name}/x"):
                return _Dir(name, f"{prefix}{name}/", "")
            return Stray(name, "a folder whose name cannot be in a key (not UTF-8, or a control character)")
        if entry.is_file(follow_symlinks=False):
            return self.file_kind(name, prefix, pending)
        return Stray(name, _kind(entry))


ESCAPED: Final[Layout] = _Escaped()
PLAIN: Final[Layout] = _Plain()
LAYOUTS: Final = {"escaped": ESCAPED, "plain": PLAIN}
