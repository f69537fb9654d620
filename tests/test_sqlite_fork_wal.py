"""A store open in a parent process, its children writing to the same file, and the parent closing.

SQLite keeps a process's locks on a file in one record per file, which a
forked child copies: a child's new connection to a file its parent had open
took no lock of its own from the operating system. The parent's last
connection closing (``close()``, or the store collected) then found no other
process holding the file, checkpointed and deleted the WAL the children were
writing to: everything they wrote after was acknowledged and lost (CI, twice:
the file held the rounds before the parent's store was collected, none after).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from backends import SqliteRawBackend

FORK = multiprocessing.get_context("fork")
WRITES = 40


def _rows(path: str) -> int:
    with closing(sqlite3.connect(path)) as db:  # a connection of its own: what the file holds
        (count,) = db.execute("SELECT COUNT(*) FROM kv").fetchone()
    return int(count)


def _write_after(path: str, options: dict[str, Any], name: str, ready: Any, go: Any) -> None:
    store = SqliteRawBackend(path, **options)
    store.dump(f"{name}-first", b"x")  # its connection is open, and the WAL
    ready.release()
    assert go.acquire(timeout=60)
    for i in range(WRITES):
        assert store.dump(f"{name}-{i:03d}", b"v", if_absent=True)
    store.close()


def _start_children(path: str, options: dict[str, Any], count: int) -> tuple[list[Any], Any]:
    ready, go = FORK.Semaphore(0), FORK.Semaphore(0)
    children = [
        FORK.Process(target=_write_after, args=(path, options, f"c{n}", ready, go)) for n in range(count)
    ]
    for child in children:
        child.start()
    for _ in children:
        assert ready.acquire(timeout=60)
    return children, go


@pytest.mark.parametrize("options", [{}, {"maxsize": 1_000}, {"maxbytes": 1_000_000}], ids=str)
@pytest.mark.parametrize("end", ["close", "collected"])
def test_children_writes_survive_their_parent_closing_the_store_it_had_open_at_the_fork(
    tmp_path: Path, options: dict[str, Any], end: str
) -> None:
    path = str(tmp_path / "kv.db")
    parent = SqliteRawBackend(path, **options)
    parent.dump("parent", b"1")
    children, go = _start_children(path, options, 2)
    if end == "close":
        parent.close()
    del parent
    gc.collect()  # "collected": a store in a reference cycle closed by the collector (CI's path)
    for _ in children:
        go.release()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert _rows(path) == 1 + 2 * (1 + WRITES)  # every acknowledged write is in the file
    assert len(SqliteRawBackend(path)) == 1 + 2 * (1 + WRITES)


def test_a_parent_whose_threads_each_had_a_connection_keeps_working_and_loses_no_child_write(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "kv.db")
    parent = SqliteRawBackend(path)

    def use(name: str) -> None:
        parent.dump(name, b"p")
        assert parent.load(name) == b"p"

    threads = [threading.Thread(target=use, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    use("main")
    children, go = _start_children(path, {}, 2)
    use("main-after")  # the parent's own connection is made anew after the fork
    worker = threading.Thread(target=use, args=("thread-after",))
    worker.start()
    worker.join()
    parent.close()
    for _ in children:
        go.release()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert _rows(path) == 6 + 2 * (1 + WRITES)


def _fork_a_grandchild(path: str, go: Any, done: Any) -> None:
    ready = FORK.Semaphore(0)
    store = SqliteRawBackend(path)
    store.dump("child", b"c")
    grandchild = FORK.Process(target=_write_after, args=(path, {}, "g", ready, go))
    grandchild.start()
    assert ready.acquire(timeout=60)
    store.close()  # the child was the grandchild's parent: the same record was copied again
    done.release()
    grandchild.join(timeout=120)
    os._exit(grandchild.exitcode or 0)


def test_a_grandchild_writes_survive_its_parent_closing(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.db")
    top = SqliteRawBackend(path)
    top.dump("top", b"t")
    go, done = FORK.Semaphore(0), FORK.Semaphore(0)
    child = FORK.Process(target=_fork_a_grandchild, args=(path, go, done))
    child.start()
    assert done.acquire(timeout=60)
    top.close()
    go.release()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert _rows(path) == 2 + 1 + WRITES


def _twin_writes_after(path: str, ready: Any, go: Any) -> None:
    async def run() -> None:
        twin = SqliteRawBackend(path).aio()
        await twin.dump("twin-first", b"x")
        ready.release()
        assert go.acquire(timeout=60)
        for i in range(WRITES):
            await twin.dump(f"twin-{i:03d}", b"v")
        await twin.aclose()

    asyncio.run(run())


def test_a_child_twin_writes_survive_the_parent_twin_closing(tmp_path: Path) -> None:
    # The twin's executor threads each hold a connection of the parent's: every one is inherited.
    path = str(tmp_path / "kv.db")

    async def start() -> Any:
        twin = SqliteRawBackend(path).aio(max_workers=4)
        await asyncio.gather(*(twin.dump(f"p{i}", b"p") for i in range(16)))
        return twin

    loop = asyncio.new_event_loop()
    try:
        twin = loop.run_until_complete(start())
        ready, go = FORK.Semaphore(0), FORK.Semaphore(0)
        child = FORK.Process(target=_twin_writes_after, args=(path, ready, go))
        child.start()
        assert ready.acquire(timeout=60)
        loop.run_until_complete(twin.aclose())
    finally:
        loop.close()
    go.release()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert _rows(path) == 16 + 1 + WRITES
