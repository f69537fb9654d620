"""Attacks on what made folder writes and JsonCache ``len`` cheaper (issue #29).

What changed: temporary names come from a per-process prefix and a counter
(no ``getrandom``); a cache writer holds its shared flock on its own walk's
descriptor of a nested folder, or on one lent by a pool of the root's; the
count of a ``len`` walk is remembered while nothing changed. Each test
below tries to make one of these give a wrong answer: across processes and
forks (ATTACKS.md 1 and 9), with kill -9 and close mid-flight (3), with
foreign data in the folder (2: a file or symlink where a folder was, a
removed root), with bad input (5), and composed with tiers and views.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from clock import FrozenClock

from backends import FileSystemJsonBackend, JsonCache, RawCache, TieredBackend, VolatileBackend
from backends.errors import StoreError
from backends.filesystem import counts

#: long versions behind the project's switch
LONG = os.environ.get("BACKENDS_LONG") == "1"
ROUNDS = 2000 if LONG else 200


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _names(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return ""  # the listing's own descriptor


def _settle(root: Path) -> None:
    """Date the root's last change back a minute (what a quiet folder looks like), so
    that a len's count is remembered; no sleep."""
    past = os.stat(root).st_mtime_ns - 60 * 10**9
    os.utime(root, ns=(past, past))


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# -- temporary names: unique across processes and forks (pop renames a file to one) -------


def test_pops_racing_in_a_forked_child_and_its_parent_take_each_value_exactly_once(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path / "f")
    store["users/warm"] = 0  # names drawn before the fork: the child must not draw them again
    store.pop("users/warm")
    keys = [f"users/{i}" for i in range(ROUNDS)]
    for key in keys:
        store[key] = key
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        taken = [key for key in keys if store.pop(key, None) is not None]
        os.write(write, "\n".join(taken).encode())
        os._exit(0)
    os.close(write)
    mine = [key for key in keys if store.pop(key, None) is not None]
    with os.fdopen(read, "rb") as pipe:
        theirs = [line for line in pipe.read().decode().split("\n") if line]
    os.waitpid(pid, 0)
    assert sorted(mine + theirs) == sorted(keys)  # each taken once: none lost, none twice
    assert list(store) == []
    assert list(store.strays()) == []  # no temporary file left behind


def test_a_temporary_file_of_a_writer_killed_mid_write_is_no_key_and_is_swept(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "from backends import JsonCache\n"
        "from backends.filesystem import files\n"
        "cache = JsonCache(sys.argv[1], timeout=None)\n"
        "cache['users/1'] = 'old'\n"
        "def killed(fd, data):\n"
        "    os.write(fd, data[:3])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "files.write_all = killed\n"
        "import backends.filesystem.cache as c\n"
        "c.write_all = killed\n"
        "cache['users/1'] = 'new'\n"
    )
    done = _run_child(code, str(tmp_path / "c"))
    assert done.returncode == -signal.SIGKILL
    cache = JsonCache(tmp_path / "c", timeout=None)
    assert cache["users/1"] == "old"  # the old value, whole
    assert list(cache) == ["users/1"] and list(cache.strays()) == []
    assert len(cache) == 1
    leftovers = [name for name in os.listdir(tmp_path / "c" / "users+") if name.startswith("~")]
    assert len(leftovers) == 1  # the killed writer's temporary file, ours by its name
    later = os.stat(tmp_path / "c" / "users+" / leftovers[0]).st_ctime + 7200
    cache.clock = lambda: later  # an hour after it last changed: a purge sweeps it
    cache.purge()
    assert [name for name in os.listdir(tmp_path / "c" / "users+") if name.startswith("~")] == []


# -- the cache writer's shared flock: removers never take a fresh entry ----------------------


def test_fresh_entries_written_while_another_process_purges_are_never_removed(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["warm"] = 1  # the root's guard pool holds a descriptor before the fork
    keys = [f"k{i % 20}" if i % 2 else f"users/{i % 20}" for i in range(ROUNDS)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child purges, and meets expired entries everywhere
        code = 0
        try:
            for _ in range(ROUNDS // 4):
                cache.purge()
                for key in keys[:40]:
                    _ = key in cache
        except BaseException:
            code = 1
        os._exit(code)
    for key in keys:
        cache.dump(key, "expired", timeout=0)  # what the purger removes
        cache.dump(key, "fresh")  # ... and must never take with it
        assert cache.load(key) == "fresh", key
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(cache[key] == "fresh" for key in set(keys))


def test_a_child_forked_while_a_thread_writes_never_holds_the_parents_locks(tmp_path: Path) -> None:
    cache = RawCache(tmp_path / "c", timeout=60)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            cache[f"t{i % 50}"] = b"x"
            cache[f"users/{i % 50}"] = b"x"
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(20 if not LONG else 200):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child removes, which needs the exclusive flocks
                code = 0
                faulthandler.dump_traceback_later(20, exit=True)  # a lock inherited held: fail, not hang
                try:
                    cache.dump("c", b"gone", timeout=0)
                    cache.dump("users/c", b"gone", timeout=0)
                    assert cache.purge() >= 0 and "c" not in cache and "users/c" not in cache
                    cache["c"] = b"child"
                except BaseException:
                    code = 1
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        writer.join()
    assert cache["c"] == b"child"


def test_close_twice_and_while_threads_write_leaves_no_descriptor_open(tmp_path: Path) -> None:
    JsonCache(tmp_path / "first", timeout=60).close()  # the process's one deleted folder, made
    before = _open_fds()
    cache = JsonCache(tmp_path / "c", timeout=60)
    started = threading.Barrier(5)
    errors: list[BaseException] = []

    def write(cache: JsonCache, n: int) -> None:  # an argument: the cache is freed at the end
        started.wait()
        try:
            for i in range(ROUNDS):
                cache[f"w{n}-{i % 10}"] = i
        except StoreError as exc:  # the typed error once closed
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(cache, n)) for n in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    cache.close()
    cache.close()
    for thread in threads:
        thread.join()
    assert all("closed" in str(exc) for exc in errors)
    with pytest.raises(StoreError, match="closed"):
        cache["after"] = 1
    with pytest.raises(StoreError, match="closed"):
        len(cache)
    # The root's, its guards' and the tally's: none names the folder; the root's number names a
    # deleted folder until the object is freed (a call that took it must find nothing there).
    assert [_names(fd) for fd in _open_fds() - before if str(tmp_path) in _names(fd)] == []
    errors.clear()  # their tracebacks hold the cache's frames
    del cache
    gc.collect()
    assert _open_fds() <= before
    assert "after" not in JsonCache(tmp_path / "c", timeout=60)


# -- foreign data: the folder changed under descriptors kept or borrowed -------------------


def test_a_root_removed_and_made_again_gets_the_writes_and_the_flocks(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["a"] = 1  # a guard of the old root is kept
    shutil.rmtree(tmp_path / "c")
    other = JsonCache(tmp_path / "c", timeout=60)
    other["b"] = 2  # the folder made again, by another object
    cache["a"] = 3
    assert other["a"] == 3 and cache["b"] == 2  # written in the folder at the path now
    other.dump("x", 0, timeout=0)
    cache["x"] = 4
    assert other.purge() == 0 and other["x"] == 4


def test_a_file_or_a_symlink_where_a_nested_folder_was_stops_writes_and_reads_there(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for cls in (FileSystemJsonBackend, JsonCache):
        root = tmp_path / cls.__name__
        store = cls(root)
        store["users/1"] = 1
        shutil.rmtree(root / "users+")
        (root / "users+").write_text("not a folder")
        with pytest.raises(StoreError):
            store["users/2"] = 2
        assert "users/1" not in store
        os.remove(root / "users+")
        os.symlink(outside, root / "users+")
        with pytest.raises(StoreError, match="symlink"):
            store["users/3"] = 3
        assert "users/3" not in store and store.load("users/3", None) is None
        assert os.listdir(outside) == []  # nothing written, nothing left, outside the root


def test_a_folder_that_a_concurrent_delete_keeps_pruning_still_gets_every_write(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path / "f")
    cache = JsonCache(tmp_path / "c", timeout=60)
    for i in range(ROUNDS // 4):
        for target in (store, cache):
            target[f"deep/er/{i}"] = i
            assert target.pop(f"deep/er/{i}") == i  # the folders pruned
            assert not (Path(target.root) / "deep+").exists()
    assert len(store) == 0 and len(cache) == 0


# -- len remembered: never wrong ---------------------------------------------------------------


def test_a_remembered_len_sees_every_change_of_this_process_at_once(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    twin = JsonCache(tmp_path / "c", timeout=60, clock=clock)  # another object, same folder
    for i in range(10):
        cache[f"users/{i}"] = i
    _settle(cache.root)
    assert len(cache) == 10
    assert len(cache) == 10  # remembered
    twin["users/new"] = 1  # in a sub-folder: the root does not change
    assert len(cache) == 11
    _settle(cache.root)
    assert len(cache) == 11
    assert twin.pop("users/new") == 1
    assert len(cache) == 10
    _settle(cache.root)
    assert len(cache) == 10
    twin.delete("users/0")
    assert len(cache) == 9
    _settle(cache.root)
    assert len(cache) == 9
    twin.clear()
    assert len(cache) == 0


def test_a_remembered_len_is_exact_at_each_deadline_on_an_injected_clock(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    cache.dump("soon", 1, timeout=10)
    cache.dump("users/later", 2, timeout=20)
    cache.dump("never", 3, timeout=None)
    _settle(cache.root)
    assert len(cache) == 3
    clock.advance(9.999)
    assert len(cache) == 3
    clock.advance(0.001)  # the first deadline reached: counted afresh, no write needed
    assert len(cache) == 2
    clock.advance(10)
    assert len(cache) == 1
    clock.advance(-100)  # the clock stepped back: never the count of a later time
    cache.dump("back", 4)
    _settle(cache.root)
    assert len(cache) == 2


def test_another_process_writing_or_removing_a_top_level_key_shows_in_the_next_len(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["a"] = 1
    _settle(cache.root)
    assert len(cache) == 1
    code = (
        "import sys\nfrom backends import JsonCache\n"
        "c = JsonCache(sys.argv[1], timeout=60)\nexec(sys.argv[2])\n"
    )
    assert _run_child(code, str(cache.root), "c['b'] = 2").returncode == 0
    assert len(cache) == 2
    _settle(cache.root)
    assert len(cache) == 2
    assert _run_child(code, str(cache.root), "c.delete('a')").returncode == 0
    assert len(cache) == 1
    _settle(cache.root)
    os.remove(cache.root / "b")  # another tool
    assert len(cache) == 0


def test_a_root_removed_under_a_remembered_len_counts_the_new_folder(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    for i in range(5):
        cache[f"k{i}"] = i
    _settle(cache.root)
    assert len(cache) == 5
    shutil.rmtree(cache.root)
    assert len(cache) == 0
    JsonCache(tmp_path / "c", timeout=60)["z"] = 1
    assert len(cache) == 1


def test_len_through_a_tier_and_a_view_of_a_cache(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    tier = TieredBackend(cache, VolatileBackend())
    tier["users/1"] = 1
    view = cache.namespace("users/")
    _settle(cache.root)
    assert len(cache) == 1 and len(view) == 1
    view["2"] = 2
    assert len(cache) == 2 and len(view) == 2
    clock.advance(60)
    assert len(cache) == 0 and len(view) == 0
    assert tier["users/1"] == 1  # loaded again from the origin
    assert len(cache) == 1


def _walks(block: Callable[[], object]) -> tuple[object, int]:
    """What ``block()`` gives, and how many folders it listed (Python's "os.scandir" audit event)."""
    seen: list[str] = []
    _SCANS.append(seen)
    try:
        return block(), len(seen)
    finally:
        _SCANS.remove(seen)


_SCANS: list[list[str]] = []


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event == "os.scandir" and _SCANS:
        _SCANS[-1].append(str(args[0]))


sys.addaudithook(_hook)


def test_a_len_right_after_this_objects_own_writes_is_exact_with_no_walk(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    for i in range(10):
        cache[f"k{i}"] = i
        cache[f"users/{i}"] = i
    assert _walks(lambda: len(cache)) == (20, 2)  # a walk: the root and users+
    steps: list[tuple[Callable[[], object], int]] = [
        (lambda: cache.dump("new", 1), 21),  # a new key at the top level
        (lambda: cache.dump("new", 2), 21),  # an overwrite
        (lambda: cache.dump("users/new", 1), 22),  # a new key in a sub-folder
        (lambda: cache.dump("gone", 1, timeout=0), 22),  # already expired: never counted
        (lambda: cache.dump("k0", 1, timeout=0), 21),  # a fresh entry replaced by an expired one
        (lambda: cache.dump("gone", 2), 22),  # an expired entry replaced by a fresh one
        (lambda: cache.dump("k1", 9, if_absent=True), 22),  # not written
        (lambda: cache.dump("users/if", 9, if_absent=True), 23),
        (lambda: cache.dump("soon", 1, timeout=5), 24),  # the earliest deadline now
        (lambda: cache.dump("forever", 1, timeout=None), 25),
    ]
    for write, expected in steps:
        write()
        assert _walks(lambda: len(cache)) == (expected, 0)
    assert len(JsonCache(tmp_path / "c", timeout=60, clock=clock)) == 25  # a walk agrees
    clock.advance(5)  # "soon" expires: counted afresh, exactly at its deadline
    assert _walks(lambda: len(cache))[0] == 24
    twin = JsonCache(tmp_path / "c", timeout=60, clock=clock)
    twin["users/twin"] = 1  # another object of this process: the memo no longer holds
    assert _walks(lambda: len(cache)) == (25, 2)


def test_threads_writing_the_same_keys_at_once_never_count_one_twice(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["users/0"] = 0
    wrong: list[tuple[int, int]] = []
    for turn in range(ROUNDS // 10):
        len(cache)  # a walk: the memo holds, each write below is counted into it
        keys = [f"t{turn}-{i}" if i % 2 else f"users/t{turn}-{i}" for i in range(8)]
        start = threading.Barrier(4)

        def write(keys: list[str] = keys, start: threading.Barrier = start) -> None:
            start.wait()
            for key in keys:
                cache[key] = 1

        workers = [threading.Thread(target=write) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        counted = len(cache)
        walked = len(JsonCache(tmp_path / "c", timeout=60))
        if counted != walked:
            wrong.append((counted, walked))
    assert wrong == []


def test_a_child_forked_while_the_len_counter_is_held_writes_and_counts(tmp_path: Path) -> None:
    # White-box: the lock held here is what a thread of the parent holds for the
    # instant it draws a change number; a fork in that instant must not hang the child.
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["a"] = 1
    assert len(cache) == 1
    with counts._drawing[0]:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            faulthandler.dump_traceback_later(20, exit=True)  # inherited held: fail, not hang
            try:
                cache["b"] = 2
                assert len(cache) == 2
                del cache["a"]
                assert len(cache) == 1
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(cache) == 1 and list(cache) == ["b"]


def test_another_process_writing_at_the_top_level_after_this_ones_write_shows_in_the_next_len(
    tmp_path: Path,
) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["a"] = 1
    assert len(cache) == 1
    cache["b"] = 2  # the root changed by this object: taken as it is at the next len
    assert _walks(lambda: len(cache)) == (2, 0)
    code = "import sys\nfrom backends import JsonCache\nJsonCache(sys.argv[1], timeout=60)['c'] = 3\n"
    assert _run_child(code, str(cache.root)).returncode == 0
    assert _walks(lambda: len(cache))[0] == 3


# -- bad input: refused before any I/O, whatever was kept ------------------------------------


@pytest.mark.parametrize("key", ["", "/a", "a//b", "a/", "a\0b", "a\nb"])
def test_bad_keys_are_refused_before_any_io_with_descriptors_kept(tmp_path: Path, key: str) -> None:
    cache = JsonCache(tmp_path / "c", timeout=60)
    cache["users/1"] = 1
    _settle(cache.root)
    assert len(cache) == 1
    before = sorted(os.listdir(cache.root))
    with pytest.raises(ValueError, match="key"):
        cache[key] = 2
    with pytest.raises(ValueError, match="timeout"):
        cache.dump("users/2", 2, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        cache.dump("users/2", 2, timeout="1")  # type: ignore[arg-type]
    assert sorted(os.listdir(cache.root)) == before and len(cache) == 1
