"""A Sentinel failover mid-run: every call right or StoreUnavailableError, then the new primary is used."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import redis as redis_py
from redis.sentinel import Sentinel
from servers import redis_server

import backends
from backends import RedisJsonBackend


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def _until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not _asked(condition):
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)  # ok: polling servers that change roles on their own schedule


def _asked(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except redis_py.ConnectionError:  # a server changing roles drops its clients (ours too)
        return False


@contextmanager
def replicated() -> Iterator[tuple[Sentinel, redis_py.Redis, redis_py.Redis]]:
    """A primary, its replica and one Sentinel watching them, all on loopback; the Sentinel,
    then clients of the primary and the replica."""
    with ExitStack() as stack:
        primary_url = stack.enter_context(redis_server())
        primary = _port(primary_url)
        replica_url = stack.enter_context(redis_server(None, "--replicaof", "127.0.0.1", str(primary)))
        conf = (
            f"sentinel monitor m 127.0.0.1 {primary} 1\n"
            "sentinel down-after-milliseconds m 1000\n"
            "sentinel failover-timeout m 10000\n"
        )
        sentinel_url = stack.enter_context(redis_server(None, sentinel=conf))
        sentinel = Sentinel([("127.0.0.1", _port(sentinel_url))], socket_timeout=2)
        clients = [redis_py.Redis.from_url(url) for url in (primary_url, replica_url)]
        for client in clients:
            stack.callback(client.close)
        _until(lambda: bool(sentinel.discover_slaves("m")), "the Sentinel to find the replica")
        yield sentinel, clients[0], clients[1]


@pytest.mark.slow
def test_a_failover_mid_run_leaves_no_call_wrong() -> None:
    with replicated() as (sentinel, old_primary, replica):
        with pytest.raises(backends.StoreUnavailableError, match="read only replica"):
            RedisJsonBackend(client=replica, prefix="failover")["k"] = 1  # a replica refuses writes
        store = RedisJsonBackend(client=sentinel.master_for("m", socket_timeout=2), prefix="failover")
        store.dump_many({f"before/{i}": i for i in range(200)})
        # One script, replicated as one transaction: the replica has all or none.
        _until(lambda: replica.exists(store.prefix + "before/0") == 1, "the replica to have them")
        outcomes: dict[str, int] = {"ok": 0, "unavailable": 0, "lost": 0, "after": 0}
        wrong: list[Any] = []
        switched, stop = threading.Event(), threading.Event()

        def run() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    store.dump(f"during/{i}", i)
                    loaded = store.load(f"during/{i}")
                    probe = store.load(f"before/{i % 200}")
                except backends.StoreUnavailableError:
                    outcomes["unavailable"] += 1
                    continue
                except BaseException as other:  # anything else is a wrong outcome
                    wrong.append(repr(other))
                    return
                if probe != i % 200 or loaded not in (i, None):
                    wrong.append((i, loaded, probe))
                outcomes["lost" if loaded is None else "ok"] += 1  # None: lost to async replication
                if switched.is_set():
                    outcomes["after"] += 1

        worker = threading.Thread(target=run)
        worker.start()
        try:
            _until(lambda: outcomes["ok"] >= 50, "calls before the failover")
            sentinel.sentinels[0].execute_command("SENTINEL FAILOVER m")
            new_port = replica.connection_pool.connection_kwargs["port"]
            _until(lambda: sentinel.discover_master("m")[1] == new_port, "the replica to be promoted")
            # Until the Sentinel turns the old primary into a replica, it still takes
            # writes (lost when it resyncs: Redis replicates asynchronously).
            _until(lambda: old_primary.role()[0] == b"slave", "the old primary to step down")
            switched.set()
            _until(lambda: outcomes["after"] >= 50 or bool(wrong), "calls on the new primary")
        finally:
            stop.set()
            worker.join()
        assert wrong == []
        # The new primary is used with no new backend, and the index and values agree on it.
        store["after"] = 1
        assert replica.get(store.prefix + "after") == b"1"
        keys = list(store)
        assert len(store) == len(keys) and set(store.load_many(keys)) == set(keys)
        assert store.load_many([f"before/{i}" for i in range(200)]) == {f"before/{i}": i for i in range(200)}
        print(f"failover: {outcomes}")
        store.clear()
        store.close()
