"""Attacks on the size bound of the folder caches (#26), beyond tests/test_cache_bound.py.

Concurrency of threads and processes on one bounded folder (the tally must
equal a fresh walk at rest, and the bound hold), a clock stepped back (7), a
fork while another thread is inside a counted change (9), kill -9 in the
middle of an eviction (9), foreign things at the tally's name (2), folders
shared by different bounds (2), tiers and ``@cached`` over a bound.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import servers
from clock import FrozenClock
from conftest import LONG

import backends
from backends import (
    FileSystemJsonBackend,
    JsonCache,
    RawCache,
    SerializationError,
    StoreError,
    TieredBackend,
)
from backends.filesystem.bound import BOUND_FILE

_HEADER = struct.Struct("<8sqqqq")  # the tally's header: magic, entries, bytes, writes, busy


def walk(root: Path) -> tuple[int, int]:
    """Entries and bytes of every key's file under ``root``, expired ones too (a fresh walk)."""
    cache = RawCache(root, timeout=None)
    sizes = [status.st_size for _, status in cache._scan()]
    return len(sizes), sum(sizes)


def walk_keys(root: Path) -> set[str]:
    """Every key with a file under ``root``, expired ones too."""
    return {key for key, _ in RawCache(root, timeout=None)._scan()}


def tally(root: Path) -> tuple[bytes, int, int, int]:
    """The tally file's magic, entries, bytes and busy mark."""
    magic, entries, size, _, busy = _HEADER.unpack((root / BOUND_FILE).read_bytes()[: _HEADER.size])
    return magic, entries, size, busy


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(backends.__file__).parents[1])}


# -- 7: a clock stepped back -----------------------------------------------------------------------


def test_a_clock_stepped_back_never_evicts_the_entry_just_written(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=None, clock=clock, maxsize=3)
    for key in "abc":
        clock.advance(1)
        cache[key] = key
    clock.advance(-3600)  # NTP steps the wall clock back an hour
    assert cache.dump("d", "d") is True
    assert cache.load("d") == "d"  # the write returned True: its value is there
    assert len(cache) == 3


def test_a_clock_stepped_back_keeps_the_order_of_writes_of_one_process(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=None, clock=clock, maxsize=3)
    for key in "abc":
        clock.advance(1)
        cache[key] = key
    clock.advance(-3600)
    for key in "def":
        clock.advance(1)
        cache[key] = key
    assert sorted(cache) == ["d", "e", "f"]  # the newest three, as the calls came


def test_a_frozen_clock_keeps_the_order_of_hits_of_one_process(tmp_path: Path) -> None:
    clock = FrozenClock()  # never advanced: every use at the same instant
    cache = JsonCache(tmp_path / "c", timeout=None, clock=clock, maxsize=3)
    for key in "abc":
        cache[key] = key
    assert cache.load("a") == "a"  # a use: b is now the least recently used
    cache["d"] = "d"
    assert sorted(cache) == ["a", "c", "d"]


def test_an_entry_another_process_wrote_and_that_expired_goes_before_a_fresh_one(tmp_path: Path) -> None:
    clock = FrozenClock()
    mine = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=100)
    theirs = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=100)  # another process
    for i in range(100):
        clock.advance(1)
        mine[f"k{i}"] = b"x"
    clock.advance(1)
    mine["a1"] = b"x"  # past the bound: a scan fills this process's pool, k0 goes
    clock.advance(1)
    theirs.dump("short", b"s", timeout=2)  # written after that scan, by the other process
    clock.advance(3)
    mine["a2"] = b"x"
    assert "short" not in walk_keys(tmp_path / "c")  # the expired entry went first
    assert "k2" in mine  # and no fresh one


def _filled(tmp_path: Path, clock: FrozenClock) -> tuple[RawCache, RawCache]:
    """Two caches on one bounded folder (two processes' pools), full: ``k0``, ``e5``, ``k1`` .. ``k98``.

    A write past the bound then scans in the first one (k0 goes): its pool
    knows ``e5``, which expires 500 s after it was written, as its next candidate but one.
    """
    mine = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=100)
    theirs = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=100)
    for key in ["k0", "e5", *(f"k{i}" for i in range(1, 99))]:
        clock.advance(1)
        mine.dump(key, b"x", timeout=500 if key == "e5" else None)
    clock.advance(1)
    mine["a1"] = b"x"
    assert "k0" not in walk_keys(tmp_path / "c")
    return mine, theirs


def test_each_expired_entry_goes_before_a_fresh_one_the_one_the_pool_knew_and_the_other_processs(
    tmp_path: Path,
) -> None:
    clock = FrozenClock()
    mine, theirs = _filled(tmp_path, clock)
    clock.advance(1)
    theirs.dump("k60", b"y", timeout=600)  # after mine's scan (an overwrite: nothing evicted)
    clock.advance(1000)  # e5 and k60 expired
    mine["a2"] = b"x"  # e5 goes: the pool knew it
    mine["a3"] = b"x"  # k60 goes, though the pool knew only e5: no fresh entry for it
    assert {"e5", "k60"} & walk_keys(tmp_path / "c") == set()
    assert all(f"k{i}" in mine for i in range(1, 99) if i != 60)


def test_an_entry_another_process_renewed_to_a_sooner_deadline_goes_first_once_expired(
    tmp_path: Path,
) -> None:
    clock = FrozenClock()
    mine, _ = _filled(tmp_path, clock)
    # Another process, whose default timeout is shorter, revalidates k50 (a tier's renew).
    theirs = RawCache(tmp_path / "c", timeout=5, clock=clock, maxsize=100)
    clock.advance(1)
    theirs.fill("k50", b"x", etag="v1")
    assert theirs.renew("k50", "v1")
    clock.advance(10)  # k50 has expired; e5 has not
    mine["a2"] = b"x"
    assert "k50" not in walk_keys(tmp_path / "c")
    assert "k2" in mine


_STEERED = textwrap.dedent(
    """
    import json, sys
    from backends import RawCache
    now = [0.0]
    cache = RawCache(sys.argv[1], timeout=None, maxsize=int(sys.argv[2]), clock=lambda: now[0])
    for line in sys.stdin:
        op, key, timeout, now[0] = json.loads(line)
        if op == "dump":
            cache.dump(key, b"x", timeout=timeout)
            print("ok", flush=True)
        else:
            print("hit" if cache.load(key) is not None else "miss", flush=True)
    """
)


def test_four_processes_on_one_clock_never_remove_a_fresh_entry_while_one_expired(tmp_path: Path) -> None:
    """Four processes (four pools) take turns on one clock the test steers: after every write past
    the bound exactly one entry went, an expired one whenever there was one, else the least
    recently used (checked against a model); a read of an expired entry removes it."""
    from test_cache_bound import keys_in_own_slots

    maxsize, steps = 12, (1500 if LONG else 300)
    rng = random.Random(26)
    keys = keys_in_own_slots(40)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _STEERED, str(tmp_path / "c"), str(maxsize)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(4)
    ]
    deadline: dict[str, float] = {}  # the model: every key's file, expired or not
    used: dict[str, float] = {}
    now = 1000.0
    try:
        for step in range(steps):
            now += rng.choice([0.001, 0.5, 2.0])
            worker = rng.choice(workers)
            key = rng.choice(keys)
            op = "dump" if rng.random() < 0.7 else "load"
            timeout = rng.choice([None, 3.0, 10.0])
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(json.dumps([op, key, timeout, now]) + "\n")
            worker.stdin.flush()
            answer = worker.stdout.readline().strip()
            before = set(deadline)
            if op == "load":
                fresh = key in deadline and deadline[key] > now
                assert answer == ("hit" if fresh else "miss"), step
                if fresh:
                    used[key] = now
                elif key in deadline:
                    del deadline[key], used[key]  # the read removed the expired entry
                assert walk_keys(tmp_path / "c") == set(deadline), step
                continue
            assert answer == "ok", step
            deadline[key] = now + timeout if timeout is not None else float("inf")
            used[key] = now
            on_disk = walk_keys(tmp_path / "c")
            gone = (before | {key}) - on_disk
            assert on_disk <= before | {key}, step
            if len(before | {key}) <= maxsize:
                assert gone == set(), step  # never more than needed
                continue
            assert len(gone) == 1 and key not in gone, (step, gone)
            expired = {k for k in before - {key} if deadline[k] <= now}
            if expired:
                assert gone <= expired, (step, gone, expired)  # never a fresh one for an expired one
            else:
                assert gone == {min(before - {key}, key=used.__getitem__)}, step  # the least recently used
            (victim,) = gone
            del deadline[victim], used[victim]
    finally:
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(30)


_KILLED_MID_COUNT = textwrap.dedent(
    """
    import os, sys, time
    from backends import RawCache
    now = float(sys.argv[2])
    cache = RawCache(sys.argv[1], timeout=None, maxsize=100, clock=lambda: now)
    real = os.replace
    def replace_then_hang(*args, **kwargs):
        real(*args, **kwargs)
        print("placed", flush=True)
        time.sleep(600)  # ok: killed here (SIGKILL): placed, its deadline in no generation's slot
    os.replace = replace_then_hang
    cache.dump("killed", b"k", timeout=5)
    """
)


def test_an_entry_whose_writer_was_killed_before_counting_it_goes_first_once_expired(tmp_path: Path) -> None:
    clock = FrozenClock()
    mine, _ = _filled(tmp_path, clock)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_COUNT, str(tmp_path / "c"), str(clock() + 1)],
        stdout=subprocess.PIPE,
        env=_env(),
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "placed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    clock.advance(10)  # the killed writer's entry has expired; e5 has not
    mine["a2"] = b"x"  # the busy mark: recounted (101 entries with a2 and the killed one's)
    mine["a3"] = b"x"
    assert "killed" not in walk_keys(tmp_path / "c")
    assert all(f"k{i}" in mine for i in range(2, 99))  # k1 went for one of the two writes


def test_a_tally_another_tool_wrote_over_sends_every_pool_to_scan_again(tmp_path: Path) -> None:
    clock = FrozenClock()
    mine, theirs = _filled(tmp_path, clock)
    clock.advance(1)
    theirs.dump("k60", b"y", timeout=600)
    with open(tmp_path / "c" / BOUND_FILE, "r+b") as file:
        file.write(os.urandom(4096))  # header and generations lost: the write is in no slot
    clock.advance(1000)
    mine["a2"] = b"x"
    mine["a3"] = b"x"
    assert {"e5", "k60"} & walk_keys(tmp_path / "c") == set()
    assert all(f"k{i}" in mine for i in range(1, 99) if i != 60)


# -- 9: fork while another thread holds a flock ----------------------------------------------------

_forking = threading.Event()
_arm_fork_hook = [False]


def _before_fork() -> None:  # runs before the library's own hooks (registered after them)
    if _arm_fork_hook[0]:
        _forking.set()


os.register_at_fork(before=_before_fork)


@pytest.mark.parametrize("bounded", [True, False])
def test_a_fork_while_another_thread_places_an_entry_leaves_parent_and_child_free_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bounded: bool
) -> None:
    clock = FrozenClock()
    bound: dict[str, Any] = {"maxsize": 4} if bounded else {}
    cache = JsonCache(tmp_path / "c", timeout=5, clock=clock, **bound)
    cache.dump_many({f"k{i}": i for i in range(4)})
    inside = threading.Event()
    real = os.replace

    def replace_then_wait(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        if threading.current_thread().name == "writer":
            inside.set()  # inside the counted change: the tally's and the folder's flocks held
            _forking.wait(30)

    monkeypatch.setattr(os, "replace", replace_then_wait)
    writer = threading.Thread(target=cache.dump, args=("w", 1), name="writer")
    writer.start()
    assert inside.wait(30)
    _arm_fork_hook[0] = True
    try:
        pid = os.fork()
    finally:
        _arm_fork_hook[0] = False
        _forking.clear()
    if pid == 0:  # pragma: no cover - the child
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(10)  # a child left holding its parent's flock hangs: fail, never hang the run
        code = 1
        try:
            cache.dump("child", 2)
            print("child wrote", flush=True)
            clock.advance(5)  # everything expired: a read that meets one removes it (exclusive flock)
            code = 0 if cache.load("k0") is None else 1
        finally:
            os._exit(code)
    writer.join(30)
    # The parent, while its child lives on (a long-lived worker): an exclusive flock of the
    # folder (removing an expired entry) and the tally must be free.
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child hung on a flock it inherited"


_LINGER = textwrap.dedent(
    """
    import os, sys, threading
    from backends import JsonCache
    cache = JsonCache(sys.argv[1], timeout=None, maxsize=4)
    cache.dump_many({f"k{i}": i for i in range(4)})
    real, inside, forked = os.replace, threading.Event(), threading.Event()
    def replace_then_wait(*args, **kwargs):
        real(*args, **kwargs)
        if threading.current_thread().name == "writer":
            inside.set()
            forked.wait(30)
    os.replace = replace_then_wait
    os.register_at_fork(before=forked.set)
    writer = threading.Thread(target=cache.dump, args=("w", 1), name="writer")
    writer.start()
    inside.wait(30)
    if os.fork() == 0:
        sys.stdin.readline()  # a long-lived worker: lives until told
        os._exit(0)
    writer.join(30)
    print("forked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_worker_forked_mid_write_does_not_lock_other_processes_out(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _LINGER, str(tmp_path / "c")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_env(),
        text=True,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "forked"
        probe = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, signal; signal.alarm(10); from backends import JsonCache; "
                "JsonCache(sys.argv[1], timeout=None, maxsize=4)['x'] = 1; print('wrote')",
                str(tmp_path / "c"),
            ],
            stdout=subprocess.PIPE,
            env=_env(),
            text=True,
        )
        out, _ = probe.communicate(timeout=60)
        assert out.strip() == "wrote", "another process waits for the forked worker"
    finally:
        assert parent.stdin is not None
        parent.stdin.write("\n")  # the worker (it shares the pipe) and the parent
        parent.stdin.write("\n")
        parent.stdin.close()
        parent.wait(60)


# -- 9: kill -9 in the middle of an eviction -------------------------------------------------------

_EVICTOR = textwrap.dedent(
    """
    import os, sys, time
    from backends import RawCache
    cache = RawCache(sys.argv[1], timeout=None, maxbytes=1000)
    real = os.unlink
    def unlink_then_hang(name, *args, **kwargs):
        real(name, *args, **kwargs)
        if not str(name).startswith("~"):  # an entry's file: the eviction, before its count
            print("evicted", flush=True)
            time.sleep(600)  # ok: the test kills this child here (SIGKILL); never waited out
    os.unlink = unlink_then_hang
    cache["big"] = b"x" * 500
    """
)


def test_an_evictor_killed_between_its_unlink_and_its_count_is_recounted(tmp_path: Path) -> None:
    cache = RawCache(tmp_path / "c", timeout=None, maxbytes=1000)
    for i in range(10):
        cache[f"k{i}"] = b"x" * 100
    child = subprocess.Popen(
        [sys.executable, "-c", _EVICTOR, str(tmp_path / "c")], stdout=subprocess.PIPE, env=_env(), text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "evicted"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert tally(tmp_path / "c")[3] == 1  # left busy
    cache["after"] = b"y" * 100
    entries, size = walk(tmp_path / "c")
    assert size <= 1000 and "big" in cache and "after" in cache
    assert tally(tmp_path / "c") == (b"bkbound1", entries, size, 0)


# -- a: many threads and processes on the same keys ------------------------------------------------

_CHURN = textwrap.dedent(
    """
    import random, sys, threading
    from backends import RawCache
    root, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = RawCache(root, timeout=None, maxbytes=4000, maxsize=30)
    keys = [f"k{i}" for i in range(60)]
    def churn(rng):
        for _ in range(rounds):
            key, roll = rng.choice(keys), rng.random()
            if roll < 0.45:
                cache.dump(key, b"v" * rng.randrange(1, 300), timeout=rng.choice([None, 30, 0.001]))
            elif roll < 0.55:
                cache.dump(key, b"i" * rng.randrange(1, 300), if_absent=True)
            elif roll < 0.75:
                cache.load(key)
            elif roll < 0.85:
                cache.delete(key)
            elif roll < 0.95:
                cache.pop(key, None)
            elif roll < 0.98:
                cache.purge()
            else:
                cache.clear()
    sys.stdin.readline()
    threads = [threading.Thread(target=churn, args=(random.Random(seed * 10 + t),)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("done", flush=True)
    """
)


def test_threads_and_processes_churning_the_same_keys_keep_the_bound_and_an_exact_tally(
    tmp_path: Path,
) -> None:
    root = tmp_path / "c"
    rounds = 1500 if LONG else 250
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHURN, str(root), str(seed), str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
            text=True,
        )
        for seed in range(3)
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "done", err
    entries, size = walk(root)
    magic, counted, counted_bytes, busy = tally(root)
    assert (magic, counted, counted_bytes, busy) == (b"bkbound1", entries, size, 0)  # exact, at rest
    assert entries <= 30 + 9 and size <= 4000 + 9 * 300  # at most one entry per writer past it
    last = RawCache(root, timeout=None, maxbytes=4000, maxsize=30)
    last["last"] = b"l"  # the next write brings it back within the bound, exactly
    entries, size = walk(root)
    assert entries <= 30 and size <= 4000 and "last" in last


def test_a_write_past_the_bound_returns_within_it_though_readers_keep_hitting_every_entry(
    tmp_path: Path,
) -> None:
    clock = FrozenClock()
    cache = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=8)
    reader = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=8)  # another thread's, hot
    keys = [f"k{i}" for i in range(8)]
    for key in keys:
        clock.advance(1)
        cache[key] = b"x"
    hitting = [False]
    real_clock = cache.clock

    def busy_clock() -> float:
        if hitting[0]:
            hitting[0] = False
            clock.advance(1)
            for key in keys:
                reader.load(key)  # every entry used again between a scan and an eviction
            hitting[0] = True
        return real_clock()

    cache.clock = busy_clock
    clock.advance(1)
    hitting[0] = True
    cache["new"] = b"n"
    hitting[0] = False
    assert walk(tmp_path / "c")[0] <= 8  # the bound holds when the write returns
    assert "new" in cache


# -- b: a tier over a bounded cache; lost races ----------------------------------------------------


def test_a_tier_fill_renew_and_too_big_values_keep_the_tally_exact(tmp_path: Path) -> None:
    clock = FrozenClock()
    origin = FileSystemJsonBackend(tmp_path / "o")
    origin.dump_many({f"k{i}": "v" * 10 for i in range(10)})
    cache = JsonCache(tmp_path / "t", timeout=5, clock=clock, maxbytes=80)
    tier = TieredBackend(cache=cache, origin=origin)
    for i in range(10):
        assert tier[f"k{i}"] == "v" * 10
    clock.advance(6)
    for i in range(10):
        assert tier[f"k{i}"] == "v" * 10  # expired: revalidated (renewed) or filled again
    origin["k9"] = "w" * 200  # grows past maxbytes at the origin
    clock.advance(6)
    assert tier["k9"] == "w" * 200 and "k9" not in cache
    entries, size = walk(tmp_path / "t")
    assert tally(tmp_path / "t") == (b"bkbound1", entries, size, 0) and size <= 80


def test_an_if_absent_write_that_loses_its_race_changes_no_count(tmp_path: Path) -> None:
    cache = RawCache(tmp_path / "c", timeout=None, maxsize=5)
    other = RawCache(tmp_path / "c", timeout=None, maxsize=5)
    cache["a"] = b"1" * 10
    assert other.dump("a", b"2" * 50, if_absent=True) is False
    assert other.dump("b", b"2" * 50, if_absent=True) is True
    cache["a"] = b"3" * 7  # overwrite: the new size replaces the old
    assert cache.pop("a") == b"3" * 7 and cache.pop("a", None) is None
    assert cache.delete("b") and not cache.delete("b")
    assert tally(tmp_path / "c")[:3] == (b"bkbound1", 0, 0)


class TallyHolder(threading.Thread):
    """Another holder of the tally's flock (a writer of another process), at the moments asked.

    :meth:`grab` takes it if free and returns at once; it is let go as soon
    as someone waits for it (a waiter in /proc/locks) or :meth:`stop` is called.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(root / BOUND_FILE, os.O_RDWR)
        self.ino = os.fstat(self.fd).st_ino
        self.asked, self.tried, self.done = threading.Event(), threading.Event(), threading.Event()
        self.grabs = 0
        self.holding = False

    def grab(self) -> None:
        if not self.done.is_set() and not self.holding:
            self.tried.clear()
            self.asked.set()
            assert self.tried.wait(30)

    def stop(self) -> None:
        self.done.set()
        self.asked.set()
        self.join(30)
        os.close(self.fd)

    def waited_for(self) -> bool:
        with open("/proc/locks") as locks:
            return any("->" in line and line.split()[-3].endswith(f":{self.ino}") for line in locks)

    def run(self) -> None:
        import fcntl
        import time

        while self.asked.wait() and not self.done.is_set():
            self.asked.clear()
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.tried.set()  # the caller holds it itself
                continue
            self.grabs += 1
            self.holding = True
            self.tried.set()
            while not self.done.is_set() and not self.waited_for():
                time.sleep(0.0005)  # ok: polls a condition (a waiter), hides no race
            self.holding = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)


def test_an_if_absent_write_over_an_expired_entry_wins_though_other_writers_hold_the_tally(
    tmp_path: Path,
) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=1, clock=clock, maxsize=10)
    cache["k"] = "old"
    clock.advance(1)  # expired: absent
    holder = TallyHolder(tmp_path / "c")
    holder.start()
    armed = [True]

    def busy_clock() -> float:
        if armed[0]:
            holder.grab()  # another process's counted write at each step of ours
        return clock()

    cache.clock = busy_clock
    try:
        won = cache.dump("k", "new", if_absent=True)
    finally:
        armed[0] = False
        holder.stop()
    assert holder.grabs > 0
    assert won is True and cache.load("k") == "new"  # the expired entry was absent: the write won


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with servers.small_disk(tmp_path / "mnt", "256k") as mount:
        yield mount


def test_a_bound_first_used_on_a_full_disk_is_a_store_error_and_counts_right_once_space_is_back(
    small_disk: Path,
) -> None:
    plain = RawCache(small_disk / "c", timeout=None)
    with pytest.raises(StoreError, match=r"No space|full"):
        for i in range(1000):
            plain[f"p{i}"] = os.urandom(4000)  # the disk is full before any tally exists
    bounded = RawCache(small_disk / "c", timeout=None, maxbytes=64 * 1024)
    assert bounded.load("p0") is not None  # a hit on a full disk: its use unrecorded
    with pytest.raises(StoreError, match=r"No space|full"):
        bounded["b"] = b"x" * 100
    for i in range(20):
        plain.delete(f"p{i}")  # space again, uncounted
    bounded["b"] = b"x" * 100
    entries, size = walk(small_disk / "c")
    assert size <= 64 * 1024 and "b" in bounded  # recounted, and brought within the bound
    assert tally(small_disk / "c") == (b"bkbound1", entries, size, 0)


# -- c: foreign data at the tally's name; folders shared by different bounds -----------------------


@pytest.mark.parametrize("thing", ["symlink", "folder", "fifo"])
def test_something_not_ours_at_the_tally_name_is_a_store_error_naming_it_and_left_alone(
    tmp_path: Path, thing: str
) -> None:
    root = tmp_path / "c"
    JsonCache(root, timeout=None)["a"] = 1  # an unbounded cache's folder
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    place = root / BOUND_FILE
    if thing == "symlink":
        place.symlink_to(target)
    elif thing == "folder":
        place.mkdir()
    else:
        os.mkfifo(place)
    cache = JsonCache(root, timeout=None, maxsize=3)
    assert cache.load("a") == 1  # a hit whose use cannot be recorded is still served
    with pytest.raises(StoreError, match=BOUND_FILE):
        cache["b"] = 2
    assert target.read_bytes() == b"precious" and "b" not in cache


def test_a_key_named_like_the_tally_is_a_key_of_its_own(tmp_path: Path) -> None:
    plain = JsonCache(tmp_path / "c", timeout=None)
    plain[BOUND_FILE] = {"a user's": "value"}
    bounded = JsonCache(tmp_path / "c", timeout=None, maxsize=3)
    bounded.dump_many({"x": 1, "y": 2})
    assert plain[BOUND_FILE] == {"a user's": "value"}
    assert sorted(bounded) == sorted(["x", "y", BOUND_FILE])


def test_a_folder_shared_by_two_bounds_and_an_unbounded_cache_keeps_each_bound_at_its_writes(
    tmp_path: Path,
) -> None:
    wide = RawCache(tmp_path / "c", timeout=None, maxsize=10)
    tight = RawCache(tmp_path / "c", timeout=None, maxsize=4)
    plain = RawCache(tmp_path / "c", timeout=None)
    for i in range(10):
        wide[f"w{i}"] = b"w"
    assert len(wide) == 10
    tight["t"] = b"t"  # the tight bound's write brings the folder within it
    assert len(tight) == 4 and "t" in tight
    assert plain.delete("t")  # uncounted: the tally still counts it
    tight["y"] = b"y"
    # Not paid for with fresh entries beyond the one eviction too early the README allows.
    assert len(tight) in (3, 4) and "y" in tight
    wide["x"] = b"x"
    assert len(wide) in (4, 5)  # wide's bound is not tight's: nothing evicted for it


# -- g: @cached over a bounded cache -----------------------------------------------------------------


def test_cached_over_a_bounded_cache_keeps_the_bound_and_refuses_a_result_too_big_to_keep(
    tmp_path: Path,
) -> None:
    store = JsonCache(tmp_path / "c", timeout=None, maxsize=5, maxbytes=2000)
    calls: list[int] = []

    @backends.cached(store)
    def square(n: int) -> Any:
        calls.append(n)
        return "x" * 5000 if n < 0 else n * n

    for n in range(20):
        assert square(n) == n * n
    assert len(store) == 5
    assert square(19) == 361 and calls.count(19) == 1  # a hit
    assert square(0) == 0 and calls.count(0) == 2  # evicted: computed again
    # README ("Values"): a value the store refuses is SerializationError at every call, never
    # a silent recompute; a value past maxbytes is one (nothing stored, nothing evicted for it).
    kept = sorted(store)
    for _ in range(2):
        with pytest.raises(SerializationError, match="maxbytes=2000"):
            square(-1)
    assert sorted(store) == kept and calls.count(-1) == 2


# -- e: hostile bounds in URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "maxbytes=",
        "maxbytes=-1",
        "maxbytes=%2B5",
        "maxbytes=%205",
        "maxbytes=5%0A",
        "maxbytes=1_000",
        "maxbytes=%D9%A3",
        "maxbytes=1e3",
        "maxsize=0",
        "maxsize=4611686018427387905",
        "maxsize=" + "9" * 5000,  # past int()'s 4300 digits
        "maxsize=0x10",
    ],
)
def test_a_hostile_bound_in_a_url_is_a_value_error_naming_it_before_anything_is_made(
    tmp_path: Path, query: str
) -> None:
    name = query.split("=", maxsplit=1)[0]
    with pytest.raises(ValueError, match=name):
        backends.open(f"cache://{tmp_path}/c?{query}")
    assert not (tmp_path / "c").exists()


def test_random_interleavings_of_one_process_keep_the_tally_equal_to_a_walk(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=12, maxbytes=900)
    rng = random.Random(2026)
    keys = [f"d{i % 5}/k{i}" for i in range(40)]
    for _ in range(600):
        clock.advance(rng.choice([0, 0.5, 1, 7]))
        key, roll = rng.choice(keys), rng.random()
        if roll < 0.5:
            cache.dump(key, b"v" * rng.randrange(1, 120), timeout=rng.choice([None, 3, 20]))
        elif roll < 0.6:
            cache.dump(key, b"i", if_absent=True)
        elif roll < 0.75:
            cache.load(key)
        elif roll < 0.85:
            cache.pop(key, None)
        elif roll < 0.95:
            cache.delete(key)
        else:
            cache.purge()
        entries, size = walk(tmp_path / "c")
        assert tally(tmp_path / "c") == (b"bkbound1", entries, size, 0)
        assert entries <= 12 and size <= 900
