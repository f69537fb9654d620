"""The attack suite: kills, multi-process races, hostile input and foreign entries, kept as tests.

Each attack runs a bounded number of rounds by default (a few seconds each);
``BACKENDS_LONG=1`` multiplies them by ``LONG`` for a long run (README.rst,
"Reliability"). Every attack reports its figures on stdout (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _worker import is_whole_blob
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import (
    BackendError,
    BaseBackend,
    CorruptValueError,
    FileSystemJsonBackend,
    FileSystemRawBackend,
    InvalidKeyError,
    JsonCache,
    SerializationError,
    SqliteJsonBackend,
    SqliteRawBackend,
    TieredBackend,
)
from backends.filesystem.tree import MARKER
from backends.testing import strategies as s

WORKER = str(Path(__file__).with_name("_worker.py"))
LONG = 25 if os.environ.get("BACKENDS_LONG") == "1" else 1
pytestmark = pytest.mark.slow


def start(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def release(procs: list[subprocess.Popen[str]]) -> None:
    """Start the workers together: one line on stdin each."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""


def go(procs: list[subprocess.Popen[str]]) -> list[str]:
    """Start the workers together and return their last output lines."""
    release(procs)
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outputs.append(out.strip().splitlines()[-1])
    return outputs


def leftovers(root: Path, suffix: str) -> list[Path]:
    return [path for path in root.rglob(f"~*{suffix}")]


# -- kills -------------------------------------------------------------------------------


def check_after_kill(kind: str, root: Path) -> None:
    """What a killed writer may leave: whole values only, exactly the keys written, nothing aside."""
    if kind in ("fs", "file"):
        backend = FileSystemRawBackend(root)
        for key in ("blob", "dir/blob"):
            value = backend.load(key)
            assert value is None or is_whole_blob(value), key
        assert set(backend) <= {"blob", "dir/blob"}
    elif kind == "sqlite":
        store = SqliteRawBackend(root / "kv.db")
        values = store.load_many(["blob", "dir/blob", "blob/copy", "dir/blob/copy"])
        for key in ("blob", "dir/blob"):
            assert values.get(key) == values.get(f"{key}/copy"), "a batch is one transaction"
            assert key not in values or is_whole_blob(values[key]), key
        assert len(store) == len(values) == sum(1 for _ in store)  # the kept count survives a kill
    elif kind == "cache":
        cache = JsonCache(root)
        for key in ("blob", "dir/blob"):
            value = cache.load(key)
            assert value is None or is_whole_blob(bytes.fromhex(value)), key
    else:
        cache, origin = JsonCache(root / "cache"), FileSystemJsonBackend(root / "origin")
        for key in ("blob", "dir/blob"):
            stored = origin.load(key)
            assert stored is None or is_whole_blob(bytes.fromhex(stored)), key
            assert cache.load(key) in (None, stored), f"{key}: the cache serves a value the origin replaced"
    assert leftovers(root, ".expired") == []


@pytest.mark.parametrize("kind", ["fs", "file", "cache", "tier", "sqlite"])
def test_writers_killed_at_random_points_leave_whole_values_only(tmp_path: Path, kind: str) -> None:
    rng = random.Random(kind)
    kills = 6 * LONG
    for _ in range(kills):
        proc = start("flip-kind", tmp_path, kind)
        ready(proc)
        time.sleep(rng.uniform(0, 0.03))  # ok: picks a random kill point; the state is checked after
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check_after_kill(kind, tmp_path)
    print(f"{kind}: {kills} kills, 0 torn or stale values")


# -- races between processes --------------------------------------------------------------


def test_expiry_removal_never_hides_or_gives_away_a_fresh_write(tmp_path: Path) -> None:
    # One process expires "k" and writes it fresh, then reads it back; one
    # purges and meets "k" without end (and is killed and restarted at
    # random points); one tries to create "k" when absent.
    rounds = 6000 * LONG
    writer = start("expiry-writer", tmp_path, rounds)
    absent = start("absent-writer", tmp_path, rounds)
    rng = random.Random(2)
    purgers = [start("purger", tmp_path)]
    ready(purgers[-1])
    release([writer, absent])
    kills = 0
    while writer.poll() is None:
        time.sleep(rng.uniform(0, 0.05))  # ok: picks a random kill point for the purger
        purgers[-1].send_signal(signal.SIGKILL)
        purgers[-1].wait()
        kills += 1
        purgers.append(start("purger", tmp_path))
        ready(purgers[-1])
    for proc in purgers:
        proc.kill()
        proc.wait()
    written, wins = [], []
    for proc, into in ((writer, written), (absent, wins)):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        into.append(json.loads(out))
    assert written[0] == {"rounds": rounds, "lost": 0}
    assert leftovers(tmp_path, ".expired") == []
    print(f"expiry race: {rounds} rounds, {kills} purgers killed, {wins[0]['wins']} if_absent wins, 0 lost")


def test_processes_popping_the_same_keys_get_each_value_once(tmp_path: Path) -> None:
    keys = 2000 * LONG
    FileSystemJsonBackend(tmp_path).dump_many({f"p/{i}": i for i in range(keys)})
    outputs = go([start("popper", tmp_path, keys, seed) for seed in range(4)])
    handed = sorted(value for out in outputs for value in json.loads(out))
    assert handed == list(range(keys))
    print(f"pop race: 4 processes, {keys} keys, each value handed out once")


def test_tier_fills_never_put_an_older_value_over_a_newer_write(tmp_path: Path) -> None:
    rounds = 300 * LONG
    roles = ["writer", "writer", "reader", "reader", "reader", "reader"]
    go([start("tier-racer", tmp_path, role, index, rounds) for index, role in enumerate(roles)])
    cache, origin = JsonCache(tmp_path / "cache"), FileSystemJsonBackend(tmp_path / "origin")
    stale = {
        key: (cache.load(key), origin.load(key))
        for key in origin
        if cache.load(key) not in (None, origin[key])
    }
    assert stale == {}
    print(f"tier race: {len(roles)} processes x {rounds} operations, half on 2 ms leases, 0 stale entries")


# -- hostile input --------------------------------------------------------------------------


def snapshot(root: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())


LOCAL: dict[str, Callable[[Path], BaseBackend[Any, Any]]] = {
    "fs-json": FileSystemJsonBackend,
    "fs-raw": FileSystemRawBackend,
    "cache": JsonCache,
    "tier": lambda root: TieredBackend(JsonCache(root / "c"), FileSystemJsonBackend(root / "o")),
    "sqlite": lambda root: SqliteJsonBackend(root / "kv.db", timeout=300),
}
HOSTILE_VALUES = st.one_of(
    s.json_values,
    s.invalid_json,
    s.raw_values,
    s.invalid_raw,
    st.just(float("nan")),
)
CALLS: dict[str, Callable[[BaseBackend[Any, Any], Any, Any], object]] = {
    "dump": lambda b, k, v: b.dump(k, v),
    "dump_if_absent": lambda b, k, v: b.dump(k, v, if_absent=True),
    "setitem": lambda b, k, v: b.__setitem__(k, v),
    "dump_many": lambda b, k, v: b.dump_many([("ok", v), (k, v)]),
    "update": lambda b, k, v: b.update({k: v}),
    "setdefault": lambda b, k, v: b.setdefault(k, v),
    "load": lambda b, k, v: b.load(k),
    "getitem": lambda b, k, v: b[k],
    "contains": lambda b, k, v: k in b,
    "delete": lambda b, k, v: b.delete(k),
    "delitem": lambda b, k, v: b.__delitem__(k),
    "pop": lambda b, k, v: b.pop(k, None),
    "load_many": lambda b, k, v: b.load_many([k]),
    "delete_many": lambda b, k, v: b.delete_many([k]),
    "lock": lambda b, k, v: b.lock(k, timeout=v if isinstance(v, float) else 0),
    "list": lambda b, k, v: list(b.list(k)),
}


@settings(max_examples=150 * LONG, suppress_health_check=list(HealthCheck), deadline=None)
@given(
    kind=st.sampled_from(sorted(LOCAL)),
    call=st.sampled_from(sorted(CALLS)),
    key=st.one_of(s.tagged_keys.map(lambda tagged: tagged[0]), st.sampled_from([b"k", 1, None, ["k"]])),
    value=HOSTILE_VALUES,
)
def test_hostile_input_gets_a_typed_error_and_changes_nothing(
    tmp_path_factory: pytest.TempPathFactory, kind: str, call: str, key: Any, value: Any
) -> None:
    root = tmp_path_factory.mktemp("hostile")
    backend = LOCAL[kind](root)
    backend.dump("seed", b"seed" if kind == "fs-raw" else "seed")
    before = snapshot(root)
    try:
        CALLS[call](backend, key, value)
    except (InvalidKeyError, SerializationError, ValueError, TypeError):
        assert snapshot(root) == before  # bad input changes nothing
    except KeyError:
        pass  # an absent key under [] or del, as for a dict
    except BackendError as other:  # pragma: no cover - reported with its input
        raise AssertionError(f"{call}({key!r}): {other!r}") from other
    finally:
        backend.close()


# -- corrupt and foreign entries --------------------------------------------------------------


def corrupt_root(root: Path, outside: Path) -> dict[str, str]:
    """Fill ``root`` with damaged and foreign entries; return each key's expected answer."""
    backend = JsonCache(root, timeout=None)
    backend["good"] = "v"
    backend["odd/future"] = "v"
    backend["odd/never"] = "v"
    backend["odd/past"] = "v"
    backend["tagged"] = "v"
    writes = {
        "truncated": b'{"a": [1, 2',
        "utf8": b'"\xff\xfe"',
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "empty": b"",
    }
    for name, data in writes.items():
        path = root / name
        path.write_bytes(data)
        os.utime(path, ns=(time.time_ns(), 1))  # never expires
    os.utime(root / "odd+" / "future", ns=(time.time_ns(), 2**62))
    os.utime(root / "odd+" / "never", ns=(time.time_ns(), 0))
    os.utime(root / "odd+" / "past", ns=(time.time_ns(), 1_000_000_000))
    os.setxattr(root / "tagged", "user.backends.etag", b"\r\n\xff garbage")
    os.mkfifo(root / "fifo")
    (root / "folder").mkdir()
    (outside / "secret").write_text('"outside"')
    os.symlink(outside / "secret", root / "out")
    os.symlink(root / "good", root / "in")
    os.symlink(outside, root / "linked+")
    (root / "~foreign.tmp").write_text("x")
    return {
        "good": "value",
        "odd/future": "value",
        "odd/never": "value",
        "odd/past": "absent",
        "tagged": "value",
        "truncated": "corrupt",
        "utf8": "corrupt",
        "deep": "corrupt",
        "empty": "corrupt",
        "fifo": "absent",
        "folder": "absent",
        "out": "absent",
        "in": "absent",
        "linked/secret": "absent",
    }


@pytest.mark.timeout(60)
def test_corrupt_and_foreign_entries_get_one_answer_from_every_call(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    expected = corrupt_root(root, outside)
    cache = JsonCache(root, timeout=None)
    present = {key for key, answer in expected.items() if answer != "absent"}
    assert set(cache) == present and len(cache) == len(present)
    for key, answer in expected.items():
        assert (key in cache) is (answer != "absent"), key
        if answer == "corrupt":
            with pytest.raises(CorruptValueError):
                cache.load(key)
            with pytest.raises(CorruptValueError):
                cache.load_many([key])
        else:
            assert cache.load(key) == ("v" if answer == "value" else None), key
            assert cache.load_many([key]) == ({key: "v"} if answer == "value" else {}), key
    assert cache.purge() == 0  # odd/past was removed when met; nothing foreign is touched
    assert (outside / "secret").read_text() == '"outside"'
    assert os.path.islink(root / "out") and os.path.islink(root / "linked+")
    assert (root / "folder").is_dir() and (root / "~foreign.tmp").exists()
    for key in ("out", "in", "fifo", "folder"):
        assert cache.delete(key) is False
    cache.clear()
    left = sorted(p.name for p in root.iterdir() if p.name != MARKER)
    assert left == ["fifo", "folder", "in", "linked+", "out", "~foreign.tmp"]
