"""The changing layer of a folder cache: every change placed, counted and told, and eviction past the bound.

- Entries are placed under a shared ``flock`` of their folder (held on a
  descriptor of the writer's own, :mod:`.guards`), so a remover of expired
  entries (:mod:`.expiry`) never removes one placed meanwhile.
- A bounded cache (``maxbytes``/``maxsize``) counts every placing, unlink
  and rename aside in the folder's shared tally, under its lock
  (:mod:`.bound`, :mod:`.tally`); an unbounded one pays nothing for it.
- Every change is told to the ``len`` memo (:func:`.counts.changed`) after
  it is made.
- A write past the bound evicts: least recently used entries first, expired
  ones before any fresh one, each checked under the tally's lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from typing import Final, TypeVar

from ..cache import to_ns
from .bound import FLOCKS, Candidate, slot_of
from .counts import begin, changed, ended
from .entries import NEVER_BELOW
from .expiry import ExpiringFolder, guarded
from .files import At, lstat_file, place, prune_folders
from .guards import GuardPool

__all__ = ["EVICT_TRIES", "CountedFolder"]

V = TypeVar("V")

#: candidates one write of a bounded cache looks at, at most, to get back within the bound
EVICT_TRIES: Final = 1024


class CountedFolder(ExpiringFolder[V]):
    """An expiring folder whose changes are counted if bounded, and which evicts past its bound."""

    #: whether this thread's last counted write went past the bound
    _placing: threading.local
    #: descriptors of the root, to hold a writer's flock on
    _guards: GuardPool

    # -- placing, under the shared flock ----------------------------------------------

    def _place(self, folder: int, temp_name: str, name: str, if_absent: bool) -> bool:
        # Entries are placed under a shared flock of their folder; a remover
        # of expired entries holds it exclusively from its look to its unlink
        # (see _discard_at), so it never removes an entry placed meanwhile.
        # The shared flock is held on an open file description of this caller's
        # own (:mod:`.guards`): a nested folder's, opened by this call's walk, or
        # one of the root's lent by the pool; no descriptor opened per write.
        seen = begin()  # before the look at the old file (counts.CountMemo.placed)
        try:
            with FLOCKS:
                own = folder != self._root_fd
                era, guard = (None, folder) if own else self._guards.borrow(folder)
                try:
                    fcntl.flock(guard, fcntl.LOCK_SH)
                    try:
                        if self._pool is None:
                            placed, old = place(folder, temp_name, name, if_absent)
                        else:
                            placed, old = self._place_counted(folder, temp_name, name, if_absent)
                    finally:
                        fcntl.flock(guard, fcntl.LOCK_UN)
                finally:
                    if era is not None:
                        self._guards.give_back(era, guard)
        except BaseException:
            ended()  # placed or not: a remembered len no longer holds
            raise
        self._count_placed(seen, placed, old)
        return placed

    def _place_counted(
        self, folder: int, temp_name: str, name: str, if_absent: bool
    ) -> tuple[bool, os.stat_result | None]:
        # The tally's lock is held from the look at the old file to the
        # count: every counted change of the folder is serialised, so the
        # tally is exact however writers race on one key.
        assert self._pool is not None
        temp = os.stat(temp_name, dir_fd=folder, follow_symlinks=False)
        with self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None  # waited for
            placed, old = place(folder, temp_name, name, if_absent)
            if placed:  # the temp file's mtime is the entry's deadline
                tally.add(temp.st_size - (old.st_size if old else 0), 0 if old else 1, temp.st_mtime_ns)
            self._placing.over = placed and tally.over
        return placed, old

    def _count_placed(self, seen: int, placed: bool, old: os.stat_result | None) -> None:
        """Tell the len memo of a write (placed or not, its temporary file came and went):
        counted into the memo if it holds (:mod:`.counts`); ends what ``begin`` began."""
        deadline: int | None = getattr(self._placing, "deadline", None)  # set by the write (cache._put)
        before: os.stat_result | None = getattr(self._placing, "root", None)  # the root then (cache._put)
        counted = False
        try:
            if self._counts.kept is not None and deadline is not None and before is not None:
                now = to_ns(self.clock())
                after = self._root_after()
                if after is None:
                    return  # closed meanwhile: the write is placed, nothing counted
                fresh = placed and (deadline < NEVER_BELOW or deadline > now)
                was = placed and old is not None and (old.st_mtime_ns < NEVER_BELOW or old.st_mtime_ns > now)
                expires = deadline if fresh and deadline >= NEVER_BELOW else None
                counted = True
                self._counts.placed(seen, int(fresh) - int(was), expires, now, (before, after))
        finally:
            if not counted:
                ended()

    def _root_after(self) -> os.stat_result | None:
        try:
            return os.fstat(self._root_fd)
        except OSError:
            return None

    # -- every change counted (if bounded) and told ----------------------------------

    # Every change of the folder is recorded after it is made (counts.changed), a
    # placed entry by _count_placed: a remembered len never outlives one of this
    # process's changes.

    def _unlink_entry(self, folder: int, name: str) -> bool:
        try:
            return self._unlink_counted(folder, name)
        finally:
            changed()

    def _unlink_counted(self, folder: int, name: str) -> bool:
        # A bounded cache counts the removal under the tally's lock (see _place_counted).
        if self._pool is None:
            return super()._unlink_entry(folder, name)
        with self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None
            status = lstat_file(folder, name)
            if status is None or not super()._unlink_entry(folder, name):
                return False
            tally.remove(status.st_size)
            return True

    def _rename_aside(self, folder: int, name: str, aside: str) -> bool:
        try:
            return self._rename_counted(folder, name, aside)
        finally:
            changed()

    def _rename_counted(self, folder: int, name: str, aside: str) -> bool:
        if self._pool is None:
            return super()._rename_aside(folder, name, aside)
        with self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None
            status = lstat_file(folder, name)
            if status is None or not super()._rename_aside(folder, name, aside):
                return False
            tally.remove(status.st_size)
            return True

    def _clear(self) -> None:
        try:
            super()._clear()
        finally:
            changed()
        if self._pool is not None:
            # Recounted under the tally's lock: what writers placed meanwhile stays counted.
            with self._pool.counting(self._root_fd, self._scan, recount=True):
                pass

    # -- the size bound -------------------------------------------------------------

    def _shrink(self, written: str) -> None:
        """Remove least recently used entries (expired ones first) until the folder is within its bound.

        Never the entry of ``written``, the key this write placed (its stamp
        can rank it oldest: a clock stepped back in another process, or every
        other entry used since). Each removal is checked under the tally's
        lock: never more than needed, whichever processes evict at once. At
        most :data:`EVICT_TRIES` candidates and two scans per call; the
        second scan's candidates go even if used since it, so that the write
        returns within the bound however hot the other entries are.
        """
        assert self._pool is not None
        scans = 0
        # Taken but left in the folder, still candidates of later writes in their rank:
        # this write's own entry, and the one found when another process had got the
        # folder within the bound (dropped, the next eviction took a newer entry and left it).
        left: list[Candidate] = []
        try:
            for _ in range(EVICT_TRIES):
                self._still_open()
                candidate = self._pool.next(to_ns(self.clock()))
                if candidate is None:
                    scans += 1
                    if scans > 2 or not self._rescan():
                        return
                    continue
                if candidate.key == written:
                    left.append(candidate)
                    continue
                # The last scan's ranking is the last there is: its candidates go even if
                # used since (else readers hitting every entry would keep the folder past it).
                outcome = self._evict(candidate, strict=scans < 2)
                if outcome is _WITHIN:
                    left.append(candidate)
                    return
                if outcome is _DONE:
                    return
                if outcome is _RESCAN:
                    scans += 1
                    if scans > 2 or not self._rescan():
                        return
        finally:
            self._pool.put_back(left)

    def _rescan(self) -> bool:
        """Rank every entry and recount, under the tally's lock; False if within the bound (or empty)."""
        assert self._pool is not None
        now = to_ns(self.clock())
        found: list[Candidate] = []

        def scan() -> Iterator[tuple[str, os.stat_result]]:
            # The stamps are read under the tally's lock, which every placing holds: each entry
            # the walk finds was stamped before they were read. (Read before the lock, an entry
            # another process stamped and placed in between ranked by its slot's old stamp, 0
            # for a new key: the least recently used of all.)
            assert self._pool is not None
            stamps = self._pool.stamps(self._root_fd)
            for key, status in self._scan():
                deadline = status.st_mtime_ns
                fresh = not (NEVER_BELOW <= deadline <= now)
                found.append(
                    Candidate(fresh, stamps[slot_of(key)], status.st_ctime_ns, key, status.st_ino, deadline)
                )
                yield key, status

        with self._pool.counting(self._root_fd, scan, recount=True) as tally:
            assert tally is not None
            over, entries = tally.over, tally.entries
            generation = tally.next_generation()  # what others write from now on is in its slot
        if over:
            self._pool.fill(found, entries, generation)
        return over and bool(found)

    def _evict(self, candidate: Candidate, strict: bool = True) -> object:
        """Remove the candidate if it is still the file scanned (and, ``strict``, unused since):
        _DONE once within the bound, _WITHIN if it was already (nothing removed)."""
        done = self._at_key(candidate.key, lambda at: self._evict_at(at, candidate, strict))
        return _SKIPPED if done is None else done

    def _evict_at(self, at: At, candidate: Candidate, strict: bool) -> object:
        assert self._pool is not None
        # Under the folder's exclusive flock, like removing an expired entry:
        # no writer can place a new value between the look and the unlink.
        with guarded(at.folder, fcntl.LOCK_EX), self._pool.counting(self._root_fd, self._scan) as tally:
            assert tally is not None
            if not tally.over:
                return _WITHIN
            status = lstat_file(at.folder, at.name)
            if status is None or (status.st_ino, status.st_ctime_ns) != (
                candidate.ino,
                candidate.ctime_ns,
            ):
                return _SKIPPED  # removed, rewritten or renewed since the scan
            if strict and not self._expired(status.st_mtime_ns):
                if self._pool.stamp_of(self._root_fd, candidate.key) > candidate.stamp:
                    return _SKIPPED  # used since the scan: no longer among the least recent
                if self._pool.outdated(tally, to_ns(self.clock())):
                    return _RESCAN  # an entry written since the scan (by another process) has expired
            os.unlink(at.name, dir_fd=at.folder)
            changed()
            tally.remove(status.st_size)
            outcome = _MORE if tally.over else _DONE
        with self._memo_lock:
            memo = self._memo.pop(candidate.key, None)
            if memo is not None:
                self._memo_bytes -= len(memo[1])
        if at.folders:
            prune_folders(at.fds, at.folders)
        return outcome

    # -- a forked child -------------------------------------------------------------------

    def _forked_child(self) -> None:
        # The pool's and the guards' locks are held an instant outside the fork gate (a write
        # past the bound ranking or taking candidates, a root reopened, a close).
        super()._forked_child()
        self._guards.forked()
        if self._pool is not None:
            self._pool.forked()

    # -- the root reopened, the cache closed ---------------------------------------------

    def _open_root(self, create: bool = True) -> None:
        super()._open_root(create)
        changed()
        if hasattr(self, "_guards"):
            self._guards.reopened()
        if self._pool is not None:
            self._pool.forget()  # the tally file kept for hits was the old folder's

    def close(self) -> None:
        super().close()
        self._guards.close()
        if self._pool is not None:
            self._pool.forget()


_SKIPPED: Final = object()  # an eviction candidate that is no longer one
_MORE: Final = object()  # one removed; still past the bound
_DONE: Final = object()  # within the bound
_WITHIN: Final = object()  # within the bound already (another process evicted): the candidate left
_RESCAN: Final = object()  # an entry no scan of this process saw has expired: scan again
