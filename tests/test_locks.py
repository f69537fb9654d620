"""Per-key locks on every backend: exclusion, leases, and many processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock, RedisLeaseClock
from conftest import CASES
from servers import Faults, Proxy

import backends
from backends import BaseBackend, InvalidKeyError, Lock, LockError, LockTimeoutError

WORKER = str(Path(__file__).with_name("_worker.py"))


@pytest.fixture
def clock(backend: BaseBackend[Any, Any]) -> FrozenClock:
    if isinstance(backend, backends.RedisBackend):
        return RedisLeaseClock(backend.client, backend.prefix)  # leases run on the server's clock
    frozen = FrozenClock()
    backend.clock = frozen
    while isinstance(backend, backends.TieredBackend):
        backend = backend.origin  # a tier's locks are its origin's, down to the last level
        backend.clock = frozen
    return frozen


def test_a_held_lock_excludes_others_until_released(backend: BaseBackend[Any, Any]) -> None:
    with backend.lock("jobs/1") as held:
        assert held.held
        with pytest.raises(LockTimeoutError) as caught:
            backend.lock("jobs/1", timeout=0).acquire()
        assert "jobs/1" in str(caught.value) and isinstance(caught.value, TimeoutError)
        with backend.lock("jobs/2", timeout=0) as other:  # another key is free
            assert other.held
    assert not held.held
    with backend.lock("jobs/1", timeout=0) as again:
        assert again.held


def test_a_lock_is_never_a_key(backend: BaseBackend[Any, Any], sample: Any) -> None:
    backend["a"] = sample(1)
    longest = "/".join(["x" * 200] * 6)[: backend.max_key_bytes].rstrip("/")  # fits a plain tree too
    with backend.lock("a"), backend.lock("b/c"), backend.lock(longest):
        assert set(backend) == {"a"}
        assert len(backend) == 1
        assert list(backend.list()) == ["a"]
        assert "b/c" not in backend
        backend.clear()
        assert not backend
    assert not backend


def test_the_body_error_propagates_and_the_lock_is_released(backend: BaseBackend[Any, Any]) -> None:
    with pytest.raises(KeyError), backend.lock("k"):
        raise KeyError("from the body")
    with backend.lock("k", timeout=0) as again:
        assert again.held


def test_lock_checks_key_and_arguments_before_any_io(backend: BaseBackend[Any, Any]) -> None:
    with pytest.raises(InvalidKeyError):
        backend.lock("a//b")
    with pytest.raises(ValueError, match="ttl"):
        backend.lock("a", ttl=0)
    with pytest.raises(ValueError, match="timeout"):
        backend.lock("a", timeout=-1)


def test_locks_are_not_reentrant_and_release_needs_a_hold(backend: BaseBackend[Any, Any]) -> None:
    lock = backend.lock("k", timeout=0)
    with pytest.raises(LockError, match="not held"):
        lock.release()
    with lock, pytest.raises(LockError, match="re-entrant"):
        lock.acquire()


def test_a_lease_that_ran_out_is_taken_over(backend: BaseBackend[Any, Any], clock: FrozenClock) -> None:
    stale = backend.lock("k", ttl=5).acquire()
    waiter = backend.lock("k", timeout=0, ttl=5)
    with pytest.raises(LockTimeoutError):
        waiter.acquire()  # the lease is alive
    clock.advance(4.9)
    with pytest.raises(LockTimeoutError):
        waiter.acquire()
    clock.advance(0.2)
    waiter.acquire()  # 5.1 s without renewal: the lease ran out
    with pytest.raises(LockError, match="ran out"):
        stale.release()  # and the old holder learns it was not exclusive
    with pytest.raises(LockTimeoutError):
        backend.lock("k", timeout=0).acquire()  # the old holder did not free the new one's lock
    waiter.release()


def test_renewing_keeps_the_lease(backend: BaseBackend[Any, Any], clock: FrozenClock) -> None:
    holder = backend.lock("k", ttl=5).acquire()
    waiter = backend.lock("k", timeout=0, ttl=5)
    with pytest.raises(LockTimeoutError):
        waiter.acquire()
    clock.advance(4)
    holder.renew()
    clock.advance(4)  # 8 s since acquire, 4 since the renewal
    with pytest.raises(LockTimeoutError):
        waiter.acquire()
    holder.release()
    waiter.acquire()
    waiter.release()


def test_a_lost_lease_is_reported_on_renew_and_noted_on_a_failing_body(
    backend: BaseBackend[Any, Any], clock: FrozenClock
) -> None:
    holder = backend.lock("k", ttl=1).acquire()
    waiter = backend.lock("k", timeout=0, ttl=1)
    with pytest.raises(LockTimeoutError):
        waiter.acquire()
    clock.advance(2)
    waiter.acquire()
    with pytest.raises(LockError, match="ran out"):
        holder.renew()
    assert not holder.held
    other = backend.lock("j", timeout=0, ttl=1)
    with pytest.raises(RuntimeError) as caught, backend.lock("j", ttl=1) as lock:
        with pytest.raises(LockTimeoutError):
            other.acquire()  # S3 times a lease from a waiter's first sight of it
        clock.advance(2)
        other.acquire()
        assert lock.held
        raise RuntimeError("body failed")
    if sys.version_info >= (3, 11):
        assert any("ran out" in note for note in caught.value.__notes__)


LOCAL = ["volatile", "fs-json", "sqlite-json"]


@pytest.mark.parametrize("name", LOCAL)
def test_threads_incrementing_under_the_lock_lose_no_update(name: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name).resolve()
    backend = case.make(tmp_path / "store")
    backend["n"] = 0

    def work() -> None:
        for _ in range(100):
            with backend.lock("n", ttl=30):
                backend["n"] = backend["n"] + 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend["n"] == 800


def _processes(where: str, *args: object) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, WORKER, "increment", where, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]


def _run_together(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out == "done\n", err


@pytest.mark.slow
def test_four_processes_incrementing_on_the_filesystem_end_at_800(tmp_path: Path) -> None:
    _run_together(_processes(str(tmp_path), 200))
    assert backends.FileSystemJsonBackend(tmp_path)["n"] == 800


@pytest.mark.slow
def test_four_processes_incrementing_on_sqlite_end_at_800(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/kv.db"
    _run_together(_processes(url, 200))
    assert backends.open(url)["n"] == 800


@pytest.mark.slow
def test_four_processes_incrementing_on_redis_end_at_800(redis: str) -> None:
    url = f"{redis}?prefix=locks-800"
    backend = backends.open(url)
    try:
        _run_together(_processes(url, 200))
        assert backend["n"] == 800
    finally:
        backend.clear()


@pytest.mark.slow
def test_four_processes_incrementing_on_s3_end_at_800(seaweedfs: Any) -> None:
    # On SeaweedFS, not moto's server: moto checks If-None-Match (a get_object in
    # S3Response.put_object) and stores the object later (S3Backend.put_object) with no
    # lock across the two, and its server answers each request on its own thread. Two
    # create-only PUTs can both pass the check and both get 200; the later one's lease
    # overwrites the earlier's, both "hold" the lock, and the earlier holder's release
    # says "another holder took the lock". Seen twice on a loaded machine; a pause in
    # moto's store step made 8 of 8 racing create-only PUTs of one key win, and made
    # this very test fail with that LockError (3 of 4 processes). SeaweedFS let exactly
    # one of 8 racers win in each of 200 rounds.
    backend = backends.S3JsonBackend(seaweedfs.bucket, prefix="locks-800", client=seaweedfs.client)
    try:
        _run_together(_processes(f"s3:{seaweedfs.endpoint_url} {seaweedfs.bucket} locks-800", 200))
        assert backend["n"] == 800
    finally:
        backend.clear()


def test_racing_acquirers_on_seaweedfs_get_one_lock(seaweedfs: Any) -> None:
    # What the test above relies on: a real S3 server makes the create-only PUT atomic, so of
    # 8 threads (each its own client) trying the free lock at once exactly one gets it.
    racers = 8
    stores = [
        backends.S3JsonBackend(seaweedfs.bucket, prefix="locks-race", client=seaweedfs.new_client())
        for _ in range(racers)
    ]
    for round_ in range(3):
        start = threading.Barrier(racers)
        locks = [store.lock(f"k{round_}", timeout=0, ttl=30) for store in stores]
        won: list[bool] = []

        def race(lock: Lock, start: threading.Barrier, won: list[bool]) -> None:
            start.wait()
            won.append(lock.try_acquire())

        threads = [threading.Thread(target=race, args=(lock, start, won)) for lock in locks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won) == [False] * (racers - 1) + [True]
        (winner,) = (lock for lock in locks if lock.held)
        winner.release()  # no LockError: nobody overwrote its lease
    assert list(stores[0]) == []


def test_a_release_whose_answer_was_lost_succeeds_though_the_next_holder_came_before_the_retry(
    moto_server: Any,
) -> None:
    # The DELETE is applied, its answer lost; another process takes the freed lock; botocore's
    # retry then fails its If-Match. Our section was exclusive: release() must not raise.
    with Proxy(moto_server.endpoint_url or "", Faults()) as proxy:
        options = {**moto_server.options(), "endpoint_url": proxy.endpoint, "retries": 2}
        backend = backends.S3JsonBackend(moto_server.bucket, prefix="lost-release-taken", **options)
        other = backends.S3JsonBackend(moto_server.bucket, prefix=backend.prefix, client=moto_server.client)
        lock = backend.lock("k", ttl=30).acquire()
        taken: list[Lock] = []

        def meanwhile(request: Any, **_: Any) -> None:
            if request.context.get("retries", {}).get("attempt", 1) > 1 and not taken:
                taken.append(other.lock("k", timeout=0).acquire())

        backend.client.meta.events.register("request-created.s3.DeleteObject", meanwhile)
        proxy.faults.plan = ["lose"]
        lock.release()
        assert [holder.held for holder in taken] == [True]
        assert proxy.requests["DELETE"] == 2
        with pytest.raises(LockTimeoutError):
            other.lock("k", timeout=0).acquire()  # the next holder's lock is untouched
        taken[0].release()
        assert list(other) == []


def test_a_lease_runs_from_when_its_write_was_sent_not_answered(moto_server: Any) -> None:
    # A waiter may see the lock object the moment it is written, before its answer reaches the
    # holder; the holder's lease must end no later than the waiter's take-over.
    clock = [1000.0]
    holder = backends.S3JsonBackend(moto_server.bucket, prefix="lease-sent", client=moto_server.new_client())
    waiting = backends.S3JsonBackend(moto_server.bucket, prefix="lease-sent", client=moto_server.client)
    holder.clock = waiting.clock = lambda: clock[0]
    waiter = waiting.lock("k", timeout=0, ttl=30)

    def slow_answer(**_: Any) -> None:
        assert not waiter.try_acquire()  # the waiter's first sight of the new lease, at 1000
        clock[0] += 10  # the answer reaches the holder 10 s later

    holder.client.meta.events.register("after-call.s3.PutObject", slow_answer)
    lock = holder.lock("k", ttl=30).acquire()
    holder.client.meta.events.unregister("after-call.s3.PutObject", slow_answer)
    clock[0] = 1031.0
    assert waiter.try_acquire()  # 31 s unchanged for the waiter: taken over
    with pytest.raises(LockError, match="another holder took"):
        lock.release()  # the holder's lease ended at 1030 too: not exclusive, and it says so
    waiter.release()


def _where(kind: str, tmp_path: Path, target: Any) -> tuple[str, BaseBackend[Any, Any]]:
    if kind == "fs":
        return str(tmp_path), backends.FileSystemJsonBackend(tmp_path)
    if kind == "sqlite":
        return f"sqlite://{tmp_path}/kv.db", backends.SqliteJsonBackend(tmp_path / "kv.db")
    backend = backends.S3JsonBackend(target.bucket, prefix="locks-kill", client=target.client)
    return f"s3:{target.endpoint_url} {target.bucket} locks-kill", backend


@pytest.mark.parametrize("kind", ["fs", "s3", "sqlite"])
def test_the_lock_of_a_killed_holder_ends_with_its_lease(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    target = request.getfixturevalue("moto_server") if kind == "s3" else None
    where, backend = _where(kind, tmp_path, target)
    holder = subprocess.Popen(
        [sys.executable, WORKER, "hold", where, "1.0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    finally:
        holder.kill()
        holder.communicate()
    with pytest.raises(LockTimeoutError):
        backend.lock("n", timeout=0).acquire()  # the holder is dead, but its lease is not over
    with backend.lock("n", timeout=30) as taken:  # waits for the lease (1 s) to run out, no longer
        assert taken.held


# -- one rule for a lease that ran out, on every store (README.rst, "Locks") --------------------


def test_a_lease_that_ran_out_untaken_releases_fine(
    backend: BaseBackend[Any, Any], clock: FrozenClock
) -> None:
    holder = backend.lock("k", ttl=5).acquire()
    clock.advance(6)
    holder.release()  # nobody took it: the key is free, nothing to undo
    assert not holder.held
    with backend.lock("k", ttl=5, timeout=0) as body:  # and the end of a with block too
        clock.advance(6)
    assert not body.held
    with backend.lock("k", timeout=0) as again:  # the key is free
        assert again.held


def test_renewing_a_lease_that_ran_out_untaken_says_so_and_frees_the_key(
    backend: BaseBackend[Any, Any], clock: FrozenClock
) -> None:
    holder = backend.lock("k", ttl=5).acquire()
    clock.advance(6)
    with pytest.raises(LockError, match="ran out before renew; nobody holds the lock now") as caught:
        holder.renew()
    assert "another holder" not in str(caught.value) and not holder.held
    with backend.lock("k", timeout=0) as again:  # our stale lease did not stay behind
        assert again.held


def test_a_lease_that_ran_out_and_was_taken_says_another_holder_took_it(
    backend: BaseBackend[Any, Any], clock: FrozenClock
) -> None:
    for call in ("release", "renew"):
        holder = backend.lock("k", ttl=5).acquire()
        waiter = backend.lock("k", timeout=0, ttl=5)
        with pytest.raises(LockTimeoutError):
            waiter.acquire()  # S3 times a lease from a waiter's first sight of it
        clock.advance(6)
        waiter.acquire()
        with pytest.raises(LockError, match=f"ran out and another holder took the lock before {call}"):
            getattr(holder, call)()
        assert not holder.held and waiter.held
        with pytest.raises(LockTimeoutError):
            backend.lock("k", timeout=0).acquire()  # the new holder's lease is untouched
        waiter.release()


def test_a_lock_inherited_through_a_fork_is_not_the_childs(backend: BaseBackend[Any, Any]) -> None:
    """A child neither holds, releases, renews nor retakes its parent's lease with the object it inherited."""
    import os

    held = backend.lock("jobs/forked", ttl=60)
    held.acquire()
    pid = os.fork()
    if pid == 0:  # the child: every outcome is its exit status
        status = 1
        try:
            assert not held.held
            for call in (held.release, held.renew):
                with pytest.raises(LockError):  # the parent's lease: not the child's to end or renew
                    call()
            assert held.try_acquire() is False  # the parent's lease, not the child's to take
            status = 0
        finally:
            os._exit(status)
    _, waited = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(waited) == 0
    assert held.held
    with pytest.raises(LockTimeoutError):  # still the parent's: nothing the child did freed it
        backend.lock("jobs/forked", timeout=0).acquire()
    held.release()
    with backend.lock("jobs/forked", timeout=0) as again:
        assert again.held
