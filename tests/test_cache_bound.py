"""The size bound of the folder caches (#26): maxbytes and maxsize, shared by processes.

A model (an ordered dict of last uses) tells which entry a bounded cache must
remove; the attacks of ATTACKS.md that reach a bound are kept here: foreign and
damaged files (2), close mid-eviction (3), bad bounds (5), frozen and advanced
clocks (7), a full disk and a read-only folder (8), processes, fork and kill -9 (9).
"""

from __future__ import annotations

import fcntl
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
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
    TextCache,
    TieredBackend,
)
from backends.filesystem.bound import BOUND_FILE, RECOUNT_EVERY, slot_of


def keys_in_own_slots(count: int, prefix: str = "k") -> list[str]:
    """``count`` keys whose use stamps share no slot (a shared slot makes LRU approximate, by design)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < count:
        key = f"{prefix}{index}"
        found.setdefault(slot_of(key), key)
        index += 1
    return list(found.values())


def files(root: Path) -> dict[str, int]:
    """The value files under ``root`` (not ours, not strays) and their sizes."""
    cache = RawCache(root, timeout=None)
    return {key: len(cache.load(key) or b"") for key in cache}


# -- the model: exactly the least recently used, expired first ------------------------------------


class Model:
    """What a bounded cache holds: last use of each key, its size and deadline."""

    def __init__(self, maxsize: int | None, maxbytes: int | None) -> None:
        self.maxsize, self.maxbytes = maxsize, maxbytes
        self.used: dict[str, float] = {}
        self.size: dict[str, int] = {}
        self.deadline: dict[str, float] = {}

    def over(self) -> bool:
        return (self.maxsize is not None and len(self.used) > self.maxsize) or (
            self.maxbytes is not None and sum(self.size.values()) > self.maxbytes
        )

    def write(self, key: str, size: int, now: float, timeout: float) -> None:
        self.used[key], self.size[key], self.deadline[key] = now, size, now + timeout
        while self.over():
            expired = [k for k in self.used if self.deadline[k] <= now]
            victim = (
                min(expired, key=self.used.__getitem__)
                if expired
                else min(self.used, key=self.used.__getitem__)
            )
            self.drop(victim)

    def drop(self, key: str) -> None:
        del self.used[key], self.size[key], self.deadline[key]

    def fresh(self, now: float) -> set[str]:
        return {k for k in self.used if self.deadline[k] > now}


@pytest.mark.parametrize(("maxsize", "maxbytes"), [(8, None), (None, 300), (6, 200)])
def test_a_bounded_cache_removes_exactly_the_least_recently_used_expired_first(
    tmp_path: Path, maxsize: int | None, maxbytes: int | None
) -> None:
    clock = FrozenClock()
    cache = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=maxsize, maxbytes=maxbytes)
    model = Model(maxsize, maxbytes)
    keys = keys_in_own_slots(24)
    rng = random.Random(26)
    for _ in range(400):
        clock.advance(1)
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.5:
            size = rng.randrange(1, 60)
            timeout = rng.choice([math.inf, math.inf, 3, 30])
            cache.dump(key, b"v" * size, timeout=None if timeout == math.inf else timeout)
            # Expired entries the model still holds are absent; a write may meet them.
            model.write(key, size, clock(), timeout)
        elif roll < 0.85:
            hit = cache.load(key)
            if key in model.fresh(clock()):
                assert hit == b"v" * model.size[key]
                model.used[key] = clock()
            else:
                assert hit is None
                if key in model.used:
                    model.drop(key)  # an expired entry met is removed
        else:
            assert cache.delete(key) == (key in model.fresh(clock()))
            if key in model.used:
                model.drop(key)
        assert set(cache) == model.fresh(clock())
        for met in set(model.used) - model.fresh(clock()):
            model.drop(met)  # the listing met every expired entry, and removed it
        on_disk = files_including_expired(cache)
        assert set(on_disk) == set(model.used)  # removed exactly what the model removed


def files_including_expired(cache: Any) -> dict[str, int]:
    """Every key's file, expired or not (the walk a recount makes), with its size."""
    return {key: status.st_size for key, status in cache._scan()}


def test_a_value_larger_than_maxbytes_is_refused_and_a_tier_serves_it_without_keeping_it(
    tmp_path: Path,
) -> None:
    cache = JsonCache(tmp_path / "c", maxbytes=100)
    cache["small"] = "x"
    with pytest.raises(SerializationError, match="maxbytes=100"):
        cache["big"] = "x" * 200
    assert list(cache) == ["small"]
    origin = FileSystemJsonBackend(tmp_path / "o")
    origin["big"] = "y" * 200
    origin.dump_many({f"k{i}": i for i in range(20)})
    tier = TieredBackend(cache=JsonCache(tmp_path / "t", maxsize=3, maxbytes=100), origin=origin)
    assert tier["big"] == "y" * 200 and "big" not in tier.cache
    for i in range(20):
        assert tier[f"k{i}"] == i
    assert len(tier.cache) == 3 and len(tier) == 21  # the cache holds its bound; the origin everything


def test_clear_purge_len_if_absent_and_renew_keep_the_tally(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=10, clock=clock, maxsize=4)
    cache.dump_many({f"k{i}": i for i in range(4)})
    cache.clear()
    cache.dump_many({f"n{i}": i for i in range(4)})
    assert sorted(cache) == ["n0", "n1", "n2", "n3"]  # the clear freed its four: nothing evicted
    clock.advance(10)
    assert cache.purge() == 4 and len(cache) == 0
    cache.dump_many({f"p{i}": i for i in range(4)})
    assert sorted(cache) == ["p0", "p1", "p2", "p3"]
    assert cache.dump("p0", 9, if_absent=True) is False
    assert cache.dump("q", 9, if_absent=True) is True and len(cache) == 4
    assert cache.pop("q") == 9
    cache["r"] = 1
    assert len(cache) == 4  # pop counted its removal


# -- 5: bad bounds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["maxbytes", "maxsize"])
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (2**63, ValueError),
        (math.nan, TypeError),
        (1.5, TypeError),
        (10.0, TypeError),
        (True, TypeError),
        ("10", TypeError),
        (b"1", TypeError),
    ],
)
def test_a_bad_bound_is_refused_naming_it_before_anything_is_made(
    tmp_path: Path, name: str, bad: object, error: type[Exception]
) -> None:
    for make in (JsonCache, TextCache, RawCache):
        with pytest.raises(error, match=name):
            make(tmp_path / "c", **{name: bad})
    assert not (tmp_path / "c").exists()


def test_cache_urls_take_the_bounds(tmp_path: Path) -> None:
    cache = backends.open(f"cache://{tmp_path}/c?format=raw&maxbytes=64&maxsize=3&timeout=none")
    assert isinstance(cache, RawCache) and (cache.maxbytes, cache.maxsize) == (64, 3)
    for i in range(5):
        cache[f"k{i}"] = b"x"
    assert len(cache) == 3
    assert "maxbytes=64, maxsize=3" in repr(cache)


# -- 2: foreign, deleted, grown files; a damaged tally ---------------------------------------------


def test_files_deleted_behind_the_tally_are_recounted_not_paid_for_with_fresh_entries(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=None, maxsize=10)
    cache.dump_many({f"k{i}": i for i in range(10)})
    for i in range(5):
        os.unlink(cache.path(f"k{i}"))  # a user's rm: the tally still says 10
    (tmp_path / "c" / "notes.txt~").write_text("a user's file")  # a stray: not an entry, never removed
    cache.dump_many({f"n{i}": i for i in range(5)})
    assert len(cache) == 10  # the over-count was found by the scan, and nothing fresh evicted
    assert (tmp_path / "c" / "notes.txt~").exists()
    assert [stray.path for stray in cache.strays()] == ["notes.txt~"]


def test_files_grown_behind_the_tally_are_found_by_the_periodic_recount(tmp_path: Path) -> None:
    cache = RawCache(tmp_path / "c", timeout=None, maxbytes=10_000)
    cache["big"] = b"x"
    cache.path("big").write_bytes(b"x" * 9_000)  # rewritten in place by another tool
    for i in range(RECOUNT_EVERY + 10):
        cache[f"k{i % 50}"] = b"y" * 100  # 50 entries of 100 bytes: within the bound, counted
    assert sum(files_including_expired(cache).values()) <= 10_000  # the recount saw the 9,000


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted", "negative"])
def test_a_damaged_tally_file_is_recounted(tmp_path: Path, damage: str) -> None:
    cache = JsonCache(tmp_path / "c", timeout=None, maxsize=5)
    cache.dump_many({f"k{i}": i for i in range(5)})
    tally = tmp_path / "c" / BOUND_FILE
    if damage == "garbage":
        tally.write_bytes(os.urandom(64))
    elif damage == "truncated":
        os.truncate(tally, 11)
    elif damage == "deleted":
        tally.unlink()
    else:
        with open(tally, "r+b") as f:
            f.seek(8)
            f.write((-3).to_bytes(8, "little", signed=True))
    cache["new"] = 1
    cache["newer"] = 2
    assert len(cache) == 5 and {"new", "newer"} <= set(cache)
    assert [stray.path for stray in cache.strays()] == []  # the tally file is ours, never a stray


# -- 3: close mid-eviction -------------------------------------------------------------------------


def test_close_in_the_middle_of_an_eviction_stops_it_with_the_closed_error(tmp_path: Path) -> None:
    calls = [0]
    cache: RawCache

    def clock() -> float:
        calls[0] += 1
        if closing[0] and calls[0] >= closing[0]:
            cache.close()
        return 1_800_000_000.0 + calls[0]

    closing = [0]
    cache = RawCache(tmp_path / "c", timeout=None, clock=clock, maxbytes=1000)
    for i in range(10):
        cache[f"k{i}"] = b"x" * 100
    before = set(files_including_expired(RawCache(tmp_path / "c", timeout=None)))
    closing[0] = calls[0] + 3  # closed inside the eviction the next write starts
    with pytest.raises(StoreError, match="closed"):
        cache["big"] = b"x" * 950
    after = set(files_including_expired(RawCache(tmp_path / "c", timeout=None)))
    assert "big" in after and len(before - after) <= 1  # stopped: at most the one removal begun
    with pytest.raises(StoreError, match="closed"):
        cache.load("k9")


# -- 7: time -----------------------------------------------------------------------------------------


def test_a_frozen_clock_still_keeps_the_bound_and_an_advanced_one_evicts_expired_first(
    tmp_path: Path,
) -> None:
    clock = FrozenClock()
    cache = JsonCache(tmp_path / "c", timeout=None, clock=clock, maxsize=5)
    for i in range(20):
        cache[f"k{i}"] = i  # all used at the same instant
    assert len(files_including_expired(cache)) == 5
    cache.clear()
    for i in range(4):
        clock.advance(1)
        cache.dump(f"old{i}", i)  # never expire, least recently used
    clock.advance(1)
    cache.dump("short", 0, timeout=5)  # the most recent, but expires
    clock.advance(5)
    cache["new"] = 1
    assert sorted(files_including_expired(cache)) == ["new", "old0", "old1", "old2", "old3"]


def test_an_entry_expiring_outside_the_pool_goes_before_a_fresh_one(tmp_path: Path) -> None:
    clock = FrozenClock()
    cache = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=200)
    keys = keys_in_own_slots(200)
    for key in keys[:-1]:
        clock.advance(1)
        cache[key] = b"x"
    clock.advance(1)
    cache.dump(keys[-1], b"soon", timeout=3)  # newest: outside any pool a scan keeps
    clock.advance(1)
    cache["a"] = b"1"  # over: the oldest goes
    assert keys[0] not in cache
    clock.advance(5)
    other = RawCache(tmp_path / "c", timeout=None, clock=clock, maxsize=200)  # another process's write
    other["b"] = b"2"
    assert keys[1] in cache and keys[-1] not in files_including_expired(cache)


# -- 8: a full disk, a read-only folder -----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with servers.small_disk(tmp_path / "mnt", "1m") as mount:
        yield mount


def test_a_bound_below_a_small_disk_keeps_it_from_filling(small_disk: Path) -> None:
    cache = RawCache(small_disk / "c", timeout=None, maxbytes=256 * 1024)
    for i in range(600):  # 2.4 MiB written into a 1 MiB disk
        cache[f"k{i}"] = os.urandom(4000)
    assert sum(files_including_expired(cache).values()) <= 256 * 1024
    assert "k599" in cache


def test_a_full_disk_under_a_bound_is_a_store_error_and_service_comes_back(small_disk: Path) -> None:
    cache = RawCache(small_disk / "c", timeout=None, maxbytes=4 << 20)  # a bound the disk cannot hold
    with pytest.raises(StoreError, match="No space"):
        for i in range(1000):
            cache[f"k{i}"] = b"x" * 8000
    written = len(cache)
    cache.clear()
    cache["after"] = b"1"
    assert list(cache) == ["after"] and written > 0


def test_a_read_only_bounded_folder_serves_hits_and_refuses_writes(small_disk: Path) -> None:
    clock = FrozenClock()
    cache = JsonCache(small_disk / "c", timeout=10, clock=clock, maxsize=3)
    cache.dump_many({"a": 1, "b": 2, "c": 3})
    cache.close()  # its use stamps are open for writing: the kernel refuses a read-only remount
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    fresh = JsonCache(small_disk / "c", timeout=10, clock=clock, maxsize=3)
    assert fresh["a"] == 1 and fresh.load("b") == 2  # a use that cannot be recorded
    with pytest.raises(StoreError, match="Read-only"):
        fresh["d"] = 4
    clock.advance(10)
    assert fresh.load("a") is None and len(fresh) == 0


# -- 9: processes, fork, kill -9 ----------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import json, sys
    from backends import RawCache
    root, maxbytes, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count, size = int(sys.argv[4]), int(sys.argv[5])
    keys = json.loads(sys.argv[6])
    cache = RawCache(root, timeout=None, maxbytes=maxbytes)
    sys.stdin.readline()
    for i, key in enumerate(keys):
        cache[key] = bytes([65 + i % 26]) * size
    print("done")
    """
)


def _python(*args: str) -> list[str]:
    return [sys.executable, "-c", *args]


def test_four_processes_filling_ten_times_the_bound_keep_it_and_remove_only_the_oldest(
    tmp_path: Path,
) -> None:
    procs = 8 if LONG else 4
    size, maxbytes = 1000, 40_000
    per = 10 * maxbytes // size // procs  # 10x the bound in all
    keys = keys_in_own_slots(per * procs)
    mine = [keys[p * per : (p + 1) * per] for p in range(procs)]
    env = {**os.environ, "PYTHONPATH": str(Path(backends.__file__).parents[1])}
    import json

    workers = [
        subprocess.Popen(
            _python(
                _WRITER, str(tmp_path / "c"), str(maxbytes), str(p), str(per), str(size), json.dumps(mine[p])
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(procs)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0 and out.strip() == "done", err
    left = files_including_expired(RawCache(tmp_path / "c", timeout=None))
    assert sum(left.values()) <= maxbytes  # within the bound (each write evicted before it returned)
    assert sum(left.values()) > maxbytes - 2 * size * procs  # never more removed than needed
    for own in mine:
        kept = [key in left for key in own]
        # Each process's keys were used in order: what is left of them is their newest, in a run.
        assert kept == sorted(kept), (
            "an entry was removed while an older one of the same writer stayed: "
            + "".join("K" if k else "-" for k in kept)  # its keys, oldest first
        )


_KILLED = textwrap.dedent(
    """
    import os, sys, time
    from backends import JsonCache
    cache = JsonCache(sys.argv[1], timeout=None, maxsize=5)
    real = os.replace
    def replace_then_hang(*args, **kwargs):
        real(*args, **kwargs)
        print("placed", flush=True)
        time.sleep(600)  # ok: killed here (SIGKILL): the file placed, the tally not yet written back
    os.replace = replace_then_hang
    cache["killed"] = 1
    """
)


def test_a_writer_killed_between_its_rename_and_its_count_is_recounted(tmp_path: Path) -> None:
    cache = JsonCache(tmp_path / "c", timeout=None, maxsize=5)
    cache.dump_many({f"k{i}": i for i in range(4)})
    env = {**os.environ, "PYTHONPATH": str(Path(backends.__file__).parents[1])}
    child = subprocess.Popen(
        _python(_KILLED, str(tmp_path / "c")), stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "placed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(cache) == 5  # the killed writer's value is there, uncounted
    cache["a"] = 1
    cache["b"] = 2
    assert len(cache) == 5  # recounted (the busy mark said so): the bound holds, not 6


def test_a_cache_used_before_a_fork_keeps_one_bound_with_its_child(tmp_path: Path) -> None:
    cache = RawCache(tmp_path / "c", timeout=None, maxsize=6)
    cache["warm"] = b"0"
    assert cache.load("warm") == b"0"  # the hit descriptor is open before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            for i in range(20):
                cache[f"child{i}"] = b"c"
                cache.load(f"child{i}")
        except BaseException:
            code = 1
        os._exit(code)
    for i in range(20):
        cache[f"parent{i}"] = b"p"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    cache["last"] = b"l"
    assert len(files_including_expired(cache)) == 6


def test_an_entry_another_writer_places_while_a_scan_starts_ranks_by_its_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found reading the code for the four-writer test's failure. The scan read the stamps before it
    # took the tally's lock: an entry
    # another process stamped and placed in between was found by the walk with its slot's old stamp
    # (0 for a new one), ranked least recently used of all, and removed by a last-scan eviction.
    a, b, c, d, e, x = keys_in_own_slots(6)
    evictor = RawCache(tmp_path / "c", timeout=None, maxsize=4)
    other = RawCache(tmp_path / "c", timeout=None, maxsize=100)  # another process's: not over the bound
    for key in (a, b, c, d):
        evictor[key] = b"v"
    read_stamps = evictor._pool.stamps
    placed_in_between: list[bool] = []

    def stamps_then_another_write(root: int) -> Any:
        table = read_stamps(root)
        if not placed_in_between:  # the other writer places whenever the tally's lock lets it
            probe = os.open(tmp_path / "c" / BOUND_FILE, os.O_RDWR)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe, fcntl.LOCK_UN)
                free = True
            except BlockingIOError:
                free = False  # read under the lock: no entry can be placed before the walk
            finally:
                os.close(probe)
            if free:
                other[x] = b"v"
            placed_in_between.append(free)
        return table

    monkeypatch.setattr(evictor._pool, "stamps", stamps_then_another_write)
    evictor[e] = b"v"  # past the bound: a scan ranks every entry
    monkeypatch.undo()
    ranked = [candidate.key for candidate in evictor._pool._ranked]
    assert placed_in_between == [False], ranked
    assert ranked == [a, b, c, d, e]  # by use, x never among them ranked before an older entry


def test_a_candidate_left_because_another_process_got_within_the_bound_stays_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in the four-writer test: a writer took its next candidate, found the folder already
    # within the bound (another process had evicted meanwhile) and stopped, with that candidate
    # dropped from its pool; its next eviction removed the one after it, newer, and left it.
    k = keys_in_own_slots(8)
    one = RawCache(tmp_path / "c", timeout=None, maxsize=4)
    other = RawCache(tmp_path / "c", timeout=None, maxsize=4)  # another process's
    for key in k[:5]:
        one[key] = b"v"  # the fifth evicts k0: one's pool holds k1-k4, oldest first
    shrink = one._shrink

    def another_writes_first(written: str) -> None:
        other[k[6]] = b"v"  # past the bound too: it evicts k1 and k2, and the folder is within it
        shrink(written)

    monkeypatch.setattr(one, "_shrink", another_writes_first)
    one[k[5]] = b"v"
    monkeypatch.undo()
    assert sorted(files_including_expired(one)) == sorted(k[3:7])
    one[k[7]] = b"v"  # past the bound: k3 is the least recently used
    assert sorted(files_including_expired(one)) == sorted(k[4:8])


def test_a_hit_that_took_the_stamps_descriptor_before_close_never_writes_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # close() closed the descriptor hits stamp through: a hit of another thread that had read its
    # number a moment before then wrote its 8 bytes into whatever file the next open() got it for.
    from backends.filesystem import bound

    cache = RawCache(tmp_path / "c", timeout=None, maxsize=10)
    cache["k"] = b"v"
    victim = tmp_path / "victim"
    victim.write_bytes(bytes(1 << 20))
    opened: list[int] = []
    real_slot_of = bound.slot_of

    def close_then_open_another(key: str) -> int:
        if not opened:  # the number is read: another thread closes, and opens a file of its own
            cache.close()
            opened.extend(os.open(victim, os.O_RDWR) for _ in range(16))  # every number it freed
        return real_slot_of(key)

    monkeypatch.setattr(bound, "slot_of", close_then_open_another)
    try:
        cache.load("k")  # served or refused "closed": either way, nothing written elsewhere
    except StoreError as exc:
        assert "closed" in str(exc)
    finally:
        monkeypatch.undo()
        for fd in opened:
            os.close(fd)
    assert victim.read_bytes() == bytes(1 << 20)
