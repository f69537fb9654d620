"""Attacks on the remembered ``len`` of the folder caches (backends/filesystem/counts.py).

The claim (docs/howto/caches.rst, "len, remembered"): ``len`` is exact for
this process's own changes and for expiry; another process's changes show
at the next ``len`` for a top-level key and within a second in a sub-folder.
Each test compares the remembered count with a fresh object's walk, after
every kind of write and removal, through every path (views, tiers, the async
twin, ``@cached``), with threads racing a walk (9), forks (9), other
processes (2), codec-refused and too-big values and a full disk (8).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import servers
from clock import FrozenClock
from conftest import LONG

from backends import (
    FileSystemJsonBackend,
    JsonCache,
    RawCache,
    SerializationError,
    TextCache,
    TieredBackend,
    VolatileBackend,
    cached,
)
from backends.errors import BackendError
from backends.filesystem import counts, expiry

#: rounds of the thread races (more behind the project's switch)
ROUNDS = 400 if LONG else 60


def _settle(root: str | os.PathLike[str]) -> None:
    """Date the root's last change back a minute (a quiet folder), no sleep."""
    past = os.stat(root).st_mtime_ns - 60 * 10**9
    os.utime(root, ns=(past, past))


def _walked(cache: JsonCache | TextCache | RawCache, clock: Callable[[], float] | None = None) -> int:
    """What a fresh object's walk counts (nothing remembered)."""
    return len(type(cache)(cache.root, timeout=60, clock=clock or cache.clock))


def _run_child(code: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


_CHILD = (
    "import sys\nfrom backends import JsonCache\nc = JsonCache(sys.argv[1], timeout=60)\nexec(sys.argv[2])\n"
)


class _Steered:
    """A stand-in for the ``time`` module of counts.py whose monotonic clock moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _steer(monkeypatch: pytest.MonkeyPatch) -> _Steered:
    """Steer the monotonic clock that dates a remembered count (its walk, and its age)."""
    steered = _Steered()
    monkeypatch.setattr(counts, "time", steered)
    monkeypatch.setattr(expiry, "time", steered)
    return steered


# -- every path of this process: exact at once ---------------------------------------------


@pytest.mark.parametrize("family", [JsonCache, TextCache, RawCache])
def test_len_is_exact_after_every_kind_of_change_through_every_path(
    tmp_path: Path, family: type[Any]
) -> None:
    clock = FrozenClock()
    cache = family(tmp_path / "c", timeout=60, clock=clock)
    value: Any = {JsonCache: 1, TextCache: "v", RawCache: b"v"}[family]
    cache["a"] = value
    cache["users/1"] = value
    view = cache.namespace("users/")
    tier = TieredBackend(cache, VolatileBackend())
    twin = cache.aio()
    json = JsonCache(tmp_path / "c", timeout=60, clock=clock)  # another object on the folder

    @cached(json)
    def doubled(x: int) -> int:
        return x * 2

    steps: list[Callable[[], object]] = [
        lambda: cache.dump("x", value),
        lambda: cache.dump("x", value, if_absent=True),  # loses
        lambda: cache.dump("users/x", value, if_absent=True),  # wins
        lambda: cache.dump_many({"m1": value, "users/m2": value, "x": value}),
        lambda: cache.update({"u1": value, "users/u2": value}),
        lambda: cache.setdefault("sd", value),
        lambda: cache.setdefault("sd", value),
        lambda: cache.pop("sd"),
        cache.popitem,
        lambda: cache.delete_many(["m1", "users/m2", "absent"]),
        lambda: cache.dump("gone", value, timeout=0),  # already expired: never counted
        lambda: cache.dump("users/u2", value, timeout=0),  # a fresh entry replaced by an expired one
        lambda: cache.dump("gone", value),  # an expired one replaced by a fresh one
        cache.purge,
        lambda: view.__setitem__("v", value),
        lambda: view.pop("v"),
        lambda: tier.__setitem__("users/t", value),
        lambda: tier.__delitem__("users/t"),
        lambda: asyncio.run(twin.dump("users/as", value)),
        lambda: asyncio.run(twin.pop("users/as")),
        lambda: doubled(3),
        lambda: clock.advance(30),
        lambda: cache.dump("users/soon", value, timeout=1),
        lambda: clock.advance(1),  # its deadline reached
        lambda: clock.advance(30),  # every older entry expired
        cache.clear,
    ]
    for number, step in enumerate(steps):
        len(cache)  # a count to remember
        step()
        walked = _walked(cache)
        assert (number, len(cache), asyncio.run(twin.len())) == (number, walked, walked)


def test_a_value_refused_by_the_codec_or_the_bound_counts_nothing(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60, maxbytes=64)
    cache["users/a"] = 1
    assert len(cache) == 1
    for key, value in (("users/nan", float("nan")), ("users/big", "x" * 100), ("big", "x" * 100)):
        with pytest.raises(SerializationError):
            cache[key] = value
        assert len(cache) == 1 == _walked(cache)
    text = TextCache(tmp_path / "t", timeout=60)
    text["a"] = "v"
    assert len(text) == 1
    with pytest.raises(SerializationError):
        text["b"] = "\ud800"
    assert len(text) == 1 == _walked(text)


def test_a_bounded_cache_evicting_past_its_bound_is_counted_at_once(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60, maxsize=3)
    for i in range(8):
        len(cache)
        cache[f"users/{i}" if i % 2 else f"k{i}"] = i
        assert len(cache) == min(i + 1, 3) == _walked(cache)


def test_a_write_failing_on_a_full_disk_counts_nothing(tmp_path: Path) -> None:
    with servers.small_disk(tmp_path / "disk", "256k") as disk:
        cache = RawCache(disk / "c", timeout=60)
        cache["users/a"] = b"a"
        cache["b"] = b"b"
        assert len(cache) == 2
        for key in ("users/full", "full"):
            with pytest.raises(BackendError):
                cache[key] = b"x" * (1 << 20)
            assert len(cache) == 2 == _walked(cache)


def test_foreign_files_in_the_folder_are_never_counted(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["users/a"] = 1
    assert len(cache) == 1
    root = Path(cache.root)
    (root / "users+" / ".backends-tmp-foreign").write_text("x")  # named like a temporary file
    os.symlink("/etc/passwd", root / "users+" / "link")
    os.mkfifo(root / "fifo")
    for name in (b"\xff", b"bad%zz", b"users+/\xfe\x1b[2J"):  # not the escaped form of any key
        with open(os.path.join(os.fsencode(root), name), "wb") as foreign:
            foreign.write(b"1")
    assert len(cache) == len(list(cache)) == _walked(cache) == 1
    assert len(list(cache.strays())) >= 3  # named, not counted


# -- threads of this process: a walk racing a write -------------------------------------------


def test_a_len_walk_between_a_write_and_its_count_never_counts_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write's second reading of the injected clock comes after its file is
    # placed, before it is counted into the remembered count: another thread's
    # len walks (and counts the file) right there.
    steered = _steer(monkeypatch)
    placed, go = threading.Event(), threading.Event()
    writer: list[threading.Thread] = []
    entry = tmp_path / "c" / "users+" / "new"

    def clock() -> float:
        if writer and threading.current_thread() is writer[0] and entry.exists() and not placed.is_set():
            placed.set()
            assert go.wait(20)
        return 1_800_000_000.0

    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    cache["users/old"] = 1
    _settle(cache.root)
    assert len(cache) == 1  # remembered, then no longer (a second old) while the write below is placed
    writer.append(threading.Thread(target=cache.__setitem__, args=("users/new", 2)))
    writer[0].start()
    assert placed.wait(20)
    steered.now += counts.COUNT_STALE
    assert len(cache) == 2  # a walk: the new file is there
    go.set()
    writer[0].join()
    assert len(cache) == 2 == _walked(cache)


# -- other processes: at the next len (top level), within a second (sub-folder) ---------------


def test_another_processs_top_level_write_after_this_objects_own_shows_in_the_next_len(
    tmp_path: Path,
) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["a"] = 1
    _settle(cache.root)
    assert len(cache) == 1
    cache["b"] = 2  # this object's own top-level write, counted
    _run_child(_CHILD, str(cache.root), "c['c'] = 3")  # another process's, long after
    assert len(cache) == 3
    cache["d"] = 4
    _run_child(_CHILD, str(cache.root), "c.delete('a')")
    assert len(cache) == 3


def test_another_processs_nested_change_shows_within_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steered = _steer(monkeypatch)
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["users/a"] = 1
    _settle(cache.root)
    assert len(cache) == 1
    _run_child(_CHILD, str(cache.root), "c['users/b'] = 2")
    steered.now += counts.COUNT_STALE / 2
    assert len(cache) in (1, 2)  # may still be the remembered count
    steered.now += counts.COUNT_STALE / 2  # a second since the walk
    assert len(cache) == 2
    cache["users/c"] = 3  # counted into the new walk's count
    _run_child(_CHILD, str(cache.root), "c.delete('users/a')")
    steered.now += counts.COUNT_STALE
    assert len(cache) == 2 == _walked(cache)


def test_a_forked_child_and_its_parent_each_see_the_others_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steered = _steer(monkeypatch)
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["users/a"] = 1
    assert len(cache) == 1  # remembered, then inherited
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            cache["users/child"] = 1
            cache["child"] = 1
            os.write(writer, b"w")
            os.close(writer)
            code = 0 if len(cache) == 3 else 2
        finally:
            os._exit(code)
    os.close(writer)
    assert os.read(reader, 1) == b"w"
    os.close(reader)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(cache) == 3  # the root changed: a walk
    steered.now += counts.COUNT_STALE
    assert len(cache) == 3 == _walked(cache)


def test_threads_racing_writes_removals_and_walks_on_the_same_keys_leave_len_exact(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    keys = ["a", "b", "users/a", "users/b", "x/y/z"]
    wrong: list[tuple[int, int, int]] = []
    for turn in range(ROUNDS):
        start = threading.Barrier(4)

        def work(seed: int, start: threading.Barrier = start) -> None:
            chosen = random.Random(seed)
            start.wait()
            for _ in range(6):
                key, step = chosen.choice(keys), chosen.randrange(8)
                if step == 0:
                    cache[key] = 1
                elif step == 1:
                    cache.delete(key)
                elif step == 2:
                    cache.pop(key, None)
                elif step == 3:
                    cache.dump(key, 1, if_absent=True)
                elif step == 4:
                    cache.setdefault(key, 2)
                elif step == 5:
                    cache.dump(key, 1, timeout=0)
                elif step == 6:
                    cache.dump_many({key: 3, "users/c": 3})
                else:
                    len(cache)

        def walks(start: threading.Barrier = start) -> None:
            start.wait()
            for _ in range(4):
                len(cache)

        workers = [threading.Thread(target=work, args=(turn * 10 + i,)) for i in range(3)]
        workers.append(threading.Thread(target=walks))
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        counted, walked = len(cache), _walked(cache)
        if counted != walked:
            wrong.append((turn, counted, walked))
    assert wrong == []


def test_a_write_in_flight_when_another_thread_closes_the_cache_is_placed_and_not_refused(
    tmp_path: Path,
) -> None:
    placed, go = threading.Event(), threading.Event()
    writer: list[threading.Thread] = []
    entry = tmp_path / "c" / "new"
    outcome: list[object] = []

    def clock() -> float:
        if writer and threading.current_thread() is writer[0] and entry.exists() and not placed.is_set():
            placed.set()
            assert go.wait(20)
        return 1_800_000_000.0

    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    cache["old"] = 1
    assert len(cache) == 1  # remembered: the write below would be counted into it

    def write() -> None:
        try:
            outcome.append(cache.dump("new", 2))
        except BaseException as exc:  # what the caller would see
            outcome.append(exc)

    writer.append(threading.Thread(target=write))
    writer[0].start()
    assert placed.wait(20)
    cache.close()
    go.set()
    writer[0].join()
    assert outcome == [True]  # it was placed before the close
    with pytest.raises(BackendError, match="closed"):
        len(cache)
    with pytest.raises(BackendError, match="closed"):
        asyncio.run(cache.aio().dump("later", 1))
    reopened = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    assert len(reopened) == 2 and reopened["new"] == 2


_SCANS: list[list[str]] = []


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event == "os.scandir" and _SCANS:
        _SCANS[-1].append(str(args[0]))


sys.addaudithook(_hook)


def _walks(block: Callable[[], object]) -> tuple[object, int]:
    """What ``block()`` gives, and how many folders it listed."""
    seen: list[str] = []
    _SCANS.append(seen)
    try:
        return block(), len(seen)
    finally:
        _SCANS.remove(seen)


def test_a_child_forked_while_a_write_is_in_flight_remembers_its_own_walks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steered = _steer(monkeypatch)
    placed, go = threading.Event(), threading.Event()
    writer: list[threading.Thread] = []
    entry = tmp_path / "c" / "users+" / "new"

    def clock() -> float:
        if writer and threading.current_thread() is writer[0] and entry.exists() and not placed.is_set():
            placed.set()
            assert go.wait(20)
        return 1_800_000_000.0

    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    cache["users/old"] = 1
    assert len(cache) == 1
    writer.append(threading.Thread(target=cache.__setitem__, args=("users/new", 2)))
    writer[0].start()
    assert placed.wait(20)  # placed, not yet counted
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(10)
        code = 1
        try:
            steered.now += counts.COUNT_STALE  # the parent's write shows by then
            first = _walks(lambda: len(cache))
            cache["users/child"] = 3
            second = _walks(lambda: len(cache))
            code = 0 if (first[0], second) == (2, (3, 0)) else 2
        finally:
            os._exit(code)
    go.set()
    writer[0].join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 2: the child's walk was never remembered
    steered.now += counts.COUNT_STALE
    assert len(cache) == 3 == _walked(cache)


def test_a_plain_folder_store_of_this_process_on_the_cache_folder_changes_the_next_len(
    tmp_path: Path,
) -> None:
    cache = JsonCache(tmp_path / "c", timeout=None)
    plain = FileSystemJsonBackend(tmp_path / "c")  # the same folder, read through the escaped layout
    steps: list[Callable[[], object]] = [
        lambda: plain.delete("users/0"),
        lambda: plain.pop("users/1"),
        lambda: plain.delete_many(["users/2", "users/3"]),
        plain.clear,
    ]
    for number, step in enumerate(steps):
        cache.dump_many({f"users/{i}": i for i in range(6)})
        _settle(cache.root)
        assert len(cache) == 6
        step()
        assert (number, len(cache)) == (number, _walked(cache))


def test_a_read_only_folder_refuses_writes_and_len_stays_exact_past_deadlines(tmp_path: Path) -> None:
    clock = FrozenClock()
    with servers.small_disk(tmp_path / "disk", "1m") as disk:
        cache = JsonCache(disk / "c", timeout=60, clock=clock)
        cache.dump_many({"a": 1, "users/b": 2})
        cache.dump("soon", 3, timeout=10)
        cache.dump("users/soon", 4, timeout=10)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert len(cache) == 4
        for key in ("c", "users/c", "a"):
            with pytest.raises(BackendError):
                cache[key] = 5
            assert len(cache) == 4
        with pytest.raises(BackendError):
            cache.delete("users/b")
        assert len(cache) == 4 == _walked(cache)
        clock.advance(10)  # two expired, which cannot be removed: absent all the same
        assert len(cache) == 2 == _walked(cache) == len(list(cache))
        assert len(cache) == 2  # remembered: nothing changed


def test_a_tier_fill_too_big_for_the_bound_and_a_renewal_change_the_next_len(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock, maxbytes=64)
    cache.fill("users/a", 1, etag="e1")
    cache.fill("b", 2, etag="e2")
    assert len(cache) == 2
    cache.fill("users/a", "x" * 100)  # served by the tier, not kept: the older entry goes
    assert len(cache) == 1 == _walked(cache)
    clock.advance(30)
    assert len(cache) == 1
    assert cache.renew("b", "e2")  # its deadline now 60 s from here
    clock.advance(31)  # past the old deadline
    assert len(cache) == 1 == _walked(cache)
    clock.advance(29)
    assert len(cache) == 0 == _walked(cache)


def test_eight_processes_writing_and_removing_at_once_each_count_all_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steered = _steer(monkeypatch)
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["users/seed"] = 0
    assert len(cache) == 1  # remembered by every child
    context = multiprocessing.get_context("fork")
    together = context.Barrier(8, timeout=30)
    children = []
    for child in range(8):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a child
            signal.alarm(30)
            code = 1
            try:
                together.wait()
                for i in range(10):
                    cache[f"users/{child}/{i}" if i % 2 else f"p{child}-{i}"] = i
                for i in range(3):
                    cache.delete(f"users/{child}/{i}" if i % 2 else f"p{child}-{i}")
                own = len(cache)  # its own changes at once, others' within the bound
                together.wait()
                steered.now += counts.COUNT_STALE
                code = 0 if own >= 8 and len(cache) == 1 + 8 * 7 else 2
            finally:
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0] * 8
    steered.now += counts.COUNT_STALE
    assert len(cache) == 1 + 8 * 7 == _walked(cache)
