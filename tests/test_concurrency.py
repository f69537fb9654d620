"""Several processes and threads on one folder: no torn value, one winner."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _worker import is_whole_blob

from backends import FileSystemJsonBackend, FileSystemRawBackend, VolatileBackend
from backends.filesystem.tree import MARKER

WORKER = str(Path(__file__).with_name("_worker.py"))
pytestmark = pytest.mark.slow


def start(*args: object, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_writer_killed_at_any_moment_never_leaves_a_torn_value(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path)
    rng = random.Random(7)
    for _ in range(15):
        proc = start("flip", tmp_path)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0, 0.05))  # ok: picks a random kill point; the state is checked after
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        for key in ("blob", "dir/blob"):
            value = backend.load(key)
            assert value is not None and is_whole_blob(value), key
        assert set(backend) == {"blob", "dir/blob"}  # leftover temp files are never keys


def test_processes_writing_reading_and_deleting_never_see_a_partial_value(tmp_path: Path) -> None:
    procs = [start("mix", tmp_path, writer, 400) for writer in range(4)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["whole"] for r in results) > 100  # the readers did read values
    backend = FileSystemJsonBackend(tmp_path)
    assert set(backend) <= {"k", "k/0", "k/1", "k/1/deep", "other/2"}
    leftovers = [name for _, _, names in os.walk(tmp_path) for name in names if name.startswith("~")]
    assert leftovers == [MARKER]  # no temporary file; the layout marker of a folder this library made


def test_if_absent_across_processes_has_exactly_one_winner(tmp_path: Path) -> None:
    procs = [start("race", tmp_path, writer, stdin=subprocess.PIPE) for writer in range(4)]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    winners: dict[str, int] = {}
    for writer, proc in enumerate(procs):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        for key in json.loads(out):
            assert key not in winners, f"{key} won twice"
            winners[key] = writer
    backend = FileSystemJsonBackend(tmp_path)
    assert len(winners) == 100
    assert backend.load_many(winners) == winners


@pytest.mark.parametrize("make", [VolatileBackend, FileSystemJsonBackend], ids=["volatile", "fs-json"])
def test_if_absent_across_threads_has_exactly_one_winner(make: type, tmp_path: Path) -> None:
    backend = make() if make is VolatileBackend else make(tmp_path)
    barrier = threading.Barrier(8)
    won: list[list[str]] = [[] for _ in range(8)]

    def contend(index: int) -> None:
        barrier.wait()
        won[index] = [f"t/{i}" for i in range(200) if backend.dump(f"t/{i}", index, if_absent=True)]

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [key for keys in won for key in keys]
    assert sorted(flat) == sorted(f"t/{i}" for i in range(200))
    assert all(backend[key] == index for index, keys in enumerate(won) for key in keys)


def test_threads_sharing_one_backend(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for n in range(200):
                backend[f"shared/{n % 10}"] = {"i": index, "n": n}
                value = backend.load(f"shared/{(n + 3) % 10}")
                assert value is None or set(value) == {"i", "n"}
                if n % 17 == 0:
                    backend.delete(f"shared/{n % 10}")
                    assert len(list(backend)) <= 10
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
