"""Attacks on the Redis command packer and the plain dump script (#29): edge values through the public API.

Then the classes not yet run on this path (closing, one error per failure,
eviction under many writers, a server restart mid-call, the packer against
redis-py's for every argument type, fork and two loops), against real
redis-servers of this module's own where a test changes the server.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import math
import os
import socket
import threading
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.utils import HIREDIS_AVAILABLE
from redis_proxy import LosingProxy, script_sha
from servers import free_port, redis_server

import backends
from backends import RedisJsonBackend, RedisRawBackend, RedisTextBackend, StoreError
from backends.redis.scripts import SCRIPTS


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def raw(redis: str) -> Iterator[RedisRawBackend]:
    store = RedisRawBackend(redis, prefix="pk/raw")
    yield store
    store.clear()
    store.close()


EDGE_BYTES = [b"", b"\r\n", b"$-1\r\n", b"*2\r\n$3\r\nSET\r\n", b"\x00" * 7, b"+OK\r\n", bytes(range(256))]


@pytest.mark.parametrize("value", [*EDGE_BYTES, b"x" * (1 << 20), b"\r\n" * 3001])
def test_raw_values_at_the_edges_round_trip(raw: RedisRawBackend, value: bytes) -> None:
    model: dict[str, bytes] = {}
    for key in ["k", "ключ/ü", "a $3 b", "$5", "*1", "+OK"]:
        raw.dump(key, value)
        model[key] = value
    for key, want in model.items():
        assert raw.load(key) == want and raw[key] == want
    assert dict(raw.items()) == model


def test_raw_accepts_bytearray_and_memoryview_or_refuses_them_typed(raw: RedisRawBackend) -> None:
    for value in (bytearray(b"ab\r\n"), memoryview(b"cd\r\n"), memoryview(b"xyzw")[1:3]):
        try:
            raw.dump("k", value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as error:  # refused: typed, before any I/O
            assert "k" not in raw, error
            continue
        assert raw.load("k") == bytes(value)


def test_text_and_json_values_with_resp_markers_and_non_ascii(redis: str) -> None:
    text = RedisTextBackend(redis, prefix="pk/текст")
    json = RedisJsonBackend(redis, prefix="pk/json\u00e9")
    try:
        for value in ["", "\r\n$3\r\n", "ü€𝄞", "*0\r\n"]:
            text.dump("k", value)
            assert text.load("k") == value
        for value in [0, -1, 2**63, 1.5, True, False, None, "", [], {"\r\n": "$"}]:
            json.dump("k", value)
            assert json.load("k") == value and type(json.load("k")) is type(value)
    finally:
        text.clear()
        json.clear()
        text.close()
        json.close()


@pytest.mark.parametrize("timeout", [0, 1e-9, 0.0004, 0.0006, 1, 1.5, 10**9, math.inf, None])
def test_dump_timeouts_read_back_exactly_on_an_injected_clock(redis: str, timeout: Any) -> None:
    clock = Clock()
    store = RedisJsonBackend(redis, prefix="pk/time", clock=clock)
    try:
        try:
            store.dump("k", 1, timeout=timeout)
        except (TypeError, ValueError) as error:
            assert "timeout" in str(error)
            assert "k" not in store
            return
        if timeout is None or timeout == math.inf:
            assert store.expires("k") is None and store["k"] == 1
            return
        if int(timeout * 1000) > 0:
            deadline = store.expires("k")
        if int(timeout * 1000) <= 0:  # under a millisecond: already expired
            assert "k" not in store and store.load("k") is None
            return
        assert deadline is not None
        assert deadline.timestamp() == clock.now + int(timeout * 1000) / 1000
        deadline = deadline.timestamp()
        assert store["k"] == 1
        clock.now = deadline
        assert "k" not in store and store.load("k") is None
    finally:
        store.clear()
        store.close()


def test_a_lost_reply_of_a_plain_dump_over_a_value_returns_the_same(redis: str) -> None:
    port = int(redis.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    with LosingProxy(port) as proxy:
        store = RedisRawBackend(proxy.url, prefix="pk/lost")
        try:
            store.dump("k", b"\r\n$1")
            proxy.lose_script(SCRIPTS["put"])
            assert store.dump("k", b"*2\r\n") is True
            assert proxy.lost == 1 and store["k"] == b"*2\r\n" and len(store) == 1
        finally:
            store.clear()
            store.close()


def test_noscript_after_script_flush_from_another_connection(redis: str) -> None:
    store = RedisRawBackend(redis, prefix="pk/flush")
    other = redis_py.Redis.from_url(redis)
    try:
        store.dump("k", b"1")
        other.script_flush()
        assert store.dump("k", b"2") is True and store["k"] == b"2"
        other.script_flush()
        assert store.dump("j", b"") is True and store["j"] == b"" and len(store) == 2
    finally:
        store.clear()
        store.close()
        other.close()


def test_a_plain_dump_racing_if_absent_dumps_keeps_one_winner(redis: str) -> None:
    store = RedisJsonBackend(redis, prefix="pk/race")
    try:
        for round_ in range(20):
            start = threading.Barrier(5)
            won: list[int] = []

            def absent(
                i: int, key: str = f"k{round_}", start: threading.Barrier = start, won: list[int] = won
            ) -> None:
                start.wait()
                if store.dump(key, i, if_absent=True):
                    won.append(i)

            def plain(key: str = f"k{round_}", start: threading.Barrier = start) -> None:
                start.wait()
                store.dump(key, -1)

            threads = [threading.Thread(target=absent, args=(i,)) for i in range(4)]
            threads.append(threading.Thread(target=plain))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(won) <= 1
            assert store[f"k{round_}"] in (-1, *won)
            if not won:  # the plain one came first, every if_absent lost
                assert store[f"k{round_}"] == -1
    finally:
        store.clear()
        store.close()


def test_the_twin_dumps_on_two_loops(redis: str) -> None:
    store = RedisRawBackend(redis, prefix="pk/loops")
    twin = RedisRawBackend(redis, prefix="pk/loops").aio()
    try:

        async def write(tag: bytes) -> None:
            for i in range(20):
                assert await twin.dump(f"k{i}", tag + b"\r\n") is True

        asyncio.run(write(b"a"))
        asyncio.run(write(b"$b"))  # a second loop, the same twin
        assert dict(store.items()) == {f"k{i}": b"$b\r\n" for i in range(20)}
    finally:
        asyncio.run(twin.aclose())
        store.clear()
        store.close()


# -- 3. closing, with calls in flight ----------------------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


@pytest.fixture(scope="module")
def own() -> Iterator[str]:
    """A redis-server of this module's own: its connections are this module's to count."""
    with redis_server() as url:
        yield url


def _others(admin: redis_py.Redis, name: str) -> int:
    """How many connections named ``name`` (``?client_name=`` in the URL) the server has."""
    return sum(1 for client in admin.client_list() if client["name"] == name)


@pytest.fixture
def admin(own: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(own)
    client.flushall()
    yield client
    client.flushall()
    client.close()


def test_aclose_leaves_no_connection_of_the_twin_open(own: str, admin: redis_py.Redis) -> None:
    async def main() -> int:
        twin = RedisRawBackend(own + "?client_name=pk-aclose", prefix="pk/aclose").aio()
        await twin.dump("k", b"1")
        await asyncio.gather(*(twin.load(f"k{i}") for i in range(3)), twin.load_many(["k", "j"]))
        await twin.aclose()
        return _others(admin, "pk-aclose")

    assert asyncio.run(main()) == 0


def _in_a_loop(twin: Any, name: str, used: threading.Barrier, closed: threading.Barrier, how: str) -> None:
    async def main() -> None:
        await twin.dump(name, b"1")
        used.wait()
        if how == "aclose" and name == "a":
            await twin.aclose()
        closed.wait()
        await twin.aclose()  # again in loop a: nothing more; in loop b: its own client

    asyncio.run(main())


def test_aclose_in_each_of_two_loops_closes_the_connections_of_both(own: str, admin: redis_py.Redis) -> None:
    """A twin's connections belong to the loop that made them: an aclose() in each loop
    closes that loop's (the first also closes the backend); after close() too."""
    for how in ("aclose", "close"):
        store = RedisRawBackend(own + "?client_name=pk-loops", prefix="pk/loops2")
        twin = store.aio()
        used, closed = threading.Barrier(3), threading.Barrier(2)
        threads = [threading.Thread(target=_in_a_loop, args=(twin, name, used, closed, how)) for name in "ab"]
        for thread in threads:
            thread.start()
        used.wait()
        if how == "close":
            store.close()
        for thread in threads:
            thread.join()
        assert _others(admin, "pk-loops") == 0, how


def test_aclose_while_twin_calls_are_in_flight(own: str, admin: redis_py.Redis) -> None:
    gc.collect()  # what earlier tests left
    with LosingProxy(_port(own)) as proxy:
        twin = RedisRawBackend(proxy.url, prefix="pk/flight").aio()
        second = threading.Event()
        writes: set[bytes] = set()

        def at_the_second_batch(request: list[bytes]) -> bool:
            if request[0].upper() == b"EVALSHA" and request[1] == script_sha(SCRIPTS["write"]):
                writes.add(request[5])  # the token key: one per batch
                if len(writes) == 2:
                    second.set()
            return False

        proxy.lose(at_the_second_batch, times=1000)

        async def main() -> list[Any]:
            calls = [twin.dump_many({f"m{i}/{j:04d}": b"x" * 10 for j in range(3000)}) for i in range(3)]
            calls += [twin.dump(f"k{i}", b"v") for i in range(10)]
            calls += [twin.load_many([f"m0/{j:04d}" for j in range(3000)]) for _ in range(3)]
            tasks = [asyncio.ensure_future(call) for call in calls]
            await asyncio.get_running_loop().run_in_executor(None, second.wait)
            await twin.aclose()
            after = proxy.seen.total()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            with pytest.raises(StoreError, match="closed"):
                await twin.dump("late", b"1")
            assert proxy.seen.total() == after  # nothing sent once aclose() returned
            return results

        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", ResourceWarning)
            results = asyncio.run(main())
            gc.collect()
    # No connection left open: none made by a call that went on while aclose() ran.
    assert not [w for w in warned if "nclosed" in str(w.message)], [str(w.message) for w in warned]
    for result in results:
        assert result is True or isinstance(result, (dict, StoreError)), result
    _consistent(own, "pk/flight")


def _consistent(url: str, prefix: str) -> None:
    """The index and the values agree: len, the listing and load_many; no torn value."""
    check = RedisRawBackend(url, prefix=prefix)
    try:
        listed = list(check)
        assert len(check) == len(listed)
        found = check.load_many(listed)
        assert set(found) == set(listed)
        assert all(value in (b"x" * 10, b"v") for value in found.values())
    finally:
        check.clear()
        check.close()


def test_close_while_threads_dump_and_load_refuses_after_and_sends_nothing_more(own: str) -> None:
    with LosingProxy(_port(own)) as proxy:
        store = RedisRawBackend(proxy.url, prefix="pk/threads", max_connections=4)
        started = threading.Event()
        calls = 0

        def count(request: list[bytes]) -> bool:
            nonlocal calls
            if request[0].upper() == b"EVALSHA":
                calls += 1
                if calls == 40:
                    started.set()
            return False

        proxy.lose(count, times=10**6)
        outcomes: list[list[Any]] = [[] for _ in range(6)]

        def work(n: int) -> None:
            for i in range(10**6):
                try:
                    if n % 3 == 0:
                        result: Any = store.dump(f"k{n}/{i}", b"v")
                    elif n % 3 == 1:
                        result = store.dump_many({f"m{n}/{i}/{j:04d}": b"x" * 10 for j in range(2500)})
                    else:
                        result = store.load_many([f"k0/{j}" for j in range(2500)])
                except StoreError as error:
                    outcomes[n].append(error)
                    if "closed" in str(error):
                        return
                    raise
                outcomes[n].append(result)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        started.wait()
        store.close()
        store.close()  # again: nothing
        for thread in threads:
            thread.join()
        sent = proxy.seen.total()
        for call in (
            lambda: store.dump("late", b"1"),
            lambda: store.dump("late", b"1", timeout=5),
            lambda: store.dump_many({"late": b"1"}),
            lambda: store.load("k0/0"),
            lambda: store.load_many(["k0/0"]),
            lambda: list(store),
            lambda: len(store),
        ):
            with pytest.raises(StoreError, match="closed"):
                call()
        assert proxy.seen.total() == sent  # nothing sent after close
    for outcome in outcomes:
        *done, last = outcome
        assert isinstance(last, StoreError) and "closed" in str(last), last
        assert all(result is True or result is None or isinstance(result, dict) for result in done), done
    _consistent(own, "pk/threads")


# -- 6. the same failure, the same error, everywhere -------------------------------------------

SECRET = "pk-planted-Secret-7f3a"


def _every_call(store: RedisJsonBackend) -> dict[str, Any]:
    """Every way to the write and read path: plain and scripted dumps, bulk, the twin, a tier, @cached."""
    from backends import TieredBackend, VolatileBackend
    from backends.memo import cached

    twin = store.aio()
    tier = TieredBackend(store, VolatileBackend())

    @cached(store, 60)
    def computed(x: int) -> int:
        return x

    def awaited(make: Any) -> Any:
        async def run() -> Any:
            return await make()

        return lambda: asyncio.run(run())

    return {
        "dump": lambda: store.dump("k", 1),
        "dump timeout": lambda: store.dump("k", 1, timeout=50),
        "dump if_absent": lambda: store.dump("k", 1, if_absent=True),
        "dump_many": lambda: store.dump_many({"k": 1, "j": 2}),
        "load": lambda: store.load("k"),
        "load_many": lambda: store.load_many(["k", "j"]),
        "twin dump": awaited(lambda: twin.dump("k", 1)),
        "twin dump_many": awaited(lambda: twin.dump_many({"k": 1, "j": 2})),
        "twin load": awaited(lambda: twin.load("k")),
        "twin loads": awaited(lambda: asyncio.gather(twin.load("k"), twin.load("j"))),
        "twin load_many": awaited(lambda: twin.load_many(["k", "j"])),
        "tier load": lambda: tier.load("k"),
        "tier dump": lambda: tier.dump("k", 1),
        "cached": lambda: computed(3),
    }


def _answers(store: RedisJsonBackend) -> dict[str, str]:
    """Each call's outcome: "ok", or its error's class; never a raw one, never the secret."""
    answers = {}
    for name, call in _every_call(store).items():
        try:
            call()
        except Exception as error:
            told = "".join(traceback.format_exception(error))
            assert SECRET not in told and SECRET not in repr(error), name
            assert isinstance(error, backends.BackendError), (name, told)
            answers[name] = type(error).__name__
            continue
        answers[name] = "ok"
    return answers


WRITES = {"dump", "dump timeout", "dump if_absent", "dump_many", "twin dump", "twin dump_many", "tier dump"}


def _one_answer(answers: dict[str, str], expected: str, reads: str | None = None) -> None:
    for name, answer in answers.items():
        want = expected if reads is None or name in WRITES else reads
        assert answer == want, (name, answers)


def test_a_wrong_password_is_permission_denied_everywhere(own: str, admin: redis_py.Redis) -> None:
    admin.config_set("requirepass", "the-right-one")  # this connection stays authenticated
    try:
        for password in (SECRET, None):
            store = RedisJsonBackend(own, prefix="pk/auth", password=password, retries=1)
            _one_answer(_answers(store), "PermissionDeniedError")
            store.close()
    finally:
        admin.config_set("requirepass", "")


def test_a_server_that_is_gone_is_unavailable_everywhere() -> None:
    with redis_server() as url:
        store = RedisJsonBackend(url, prefix="pk/gone", retries=1, socket_timeout=2)
        store.dump("k", 1)  # a pool with a connection, then the server stops
    _one_answer(_answers(store), "StoreUnavailableError")
    store.close()


def test_dropped_connections_are_unavailable_everywhere(own: str) -> None:
    with LosingProxy(_port(own)) as proxy:
        proxy.lose(lambda request: request[0].upper() in (b"EVALSHA", b"EVAL", b"SCRIPT"), times=10**6)
        store = RedisJsonBackend(proxy.url, prefix="pk/dropped", retries=1)
        _one_answer(_answers(store), "StoreUnavailableError")
        store.close()


def test_a_read_only_replica_refuses_writes_alike_and_reads(own: str) -> None:
    with redis_server(None, "--replicaof", "127.0.0.1", str(_port(own))) as replica:
        store = RedisJsonBackend(replica, prefix="pk/replica", retries=1)
        answers = _answers(store)
        store.close()
    # A tier and @cached take a lock (a write) before they read.
    reads = {"load", "load_many", "twin load", "twin loads", "twin load_many"}
    for name, answer in answers.items():
        assert answer == ("ok" if name in reads else "StoreUnavailableError"), (name, answers)


def test_a_full_server_refuses_writes_alike_and_reads(admin: redis_py.Redis, own: str) -> None:
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # below what the server uses: full at once
    try:
        store = RedisJsonBackend(own, prefix="pk/full", retries=1)
        answers = _answers(store)
        store.close()
    finally:
        admin.config_set("maxmemory", "0")
    reads = {"load", "load_many", "twin load", "twin loads", "twin load_many"}
    for name, answer in answers.items():
        assert answer == ("ok" if name in reads else "StoreError"), (name, answers)


def test_after_a_script_flush_and_a_restart_every_call_works() -> None:
    with redis_server() as url:
        port = _port(url)
        store = RedisJsonBackend(url, prefix="pk/restart", retries=2)
        _one_answer(_answers(store), "ok")
        redis_py.Redis.from_url(url).script_flush()
        _one_answer(_answers(store), "ok")
    with redis_server(port):  # the same port, a new server: every pool reconnects, loads the scripts
        _one_answer(_answers(store), "ok")
        store.close()


# -- a server restart in the middle of a bulk call ---------------------------------------------


class RestartingProxy(LosingProxy):
    """A LosingProxy that, while its server is down, refuses a new connection (closes it)
    instead of stopping: as a restarting server's port does."""

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()  # refused: redis-py tries again, after its backoff
                continue
            with self._lock:
                self._sockets |= {client, server}
            losing = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, losing), daemon=True).start()
            threading.Thread(target=self._replies, args=(client, server, losing), daemon=True).start()


class Restarts(threading.Thread):
    """A redis-server on ``port``, stopped and started again on it at ``restart()``.

    One long-lived thread starts both: redis_server's servers die with the
    thread that started them (PR_SET_PDEATHSIG), so a proxy's thread cannot.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.first, self.again, self.up, self.done = (threading.Event() for _ in range(4))

    def run(self) -> None:
        with redis_server(self.port):
            self.first.set()
            self.again.wait()
        with redis_server(self.port):
            self.up.set()
            self.done.wait()

    def restart(self) -> None:
        self.again.set()
        self.up.wait()

    def __enter__(self) -> Restarts:
        self.start()
        self.first.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self.again.set()
        self.done.set()
        self.join()


RESTARTS = [
    (where, call, twin)
    for where in ("between batches", "after a script load")
    for call in ("dump_many", "load_many", "dump")
    for twin in (False, True)
    if call != "dump" or where != "between batches"
]


@pytest.mark.parametrize(("where", "call", "twin"), RESTARTS)
def test_a_server_restart_in_the_middle_of_a_bulk_call(where: str, call: str, twin: bool) -> None:
    """A new, empty server (no persistence) on the same port: the pool reconnects, the script
    is loaded again, the call answers; what the store then holds is whole and agrees.

    "between batches": at the first request of the second batch (the first batch went
    with the old server). "after a script load": at the request that follows the first
    batch's SCRIPT LOAD (the new server has lost the script just loaded).
    """
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    source = SCRIPTS[{"dump_many": "write", "load_many": "many", "dump": "put"}[call]]
    script = script_sha(source)
    batches: list[bytes] = []  # by the request's 3rd key: the token key, or the page's first key
    keys = [f"k/{i:04d}" for i in range(2500)]
    with Restarts(port) as server, RestartingProxy(port) as proxy:
        loaded = False

        def restart(request: list[bytes]) -> bool:
            nonlocal loaded
            if request[0].upper() == b"SCRIPT" and request[2] == source.encode():
                loaded = True
            if request[0].upper() == b"EVALSHA" and request[1] == script and not server.again.is_set():
                if request[5] not in batches:
                    batches.append(request[5])
                if (where == "between batches" and len(batches) == 2) or (
                    where != "between batches" and loaded
                ):
                    server.restart()  # before the proxy forwards the request
            return False

        store = RedisRawBackend(proxy.url, prefix="pk/restart", retries=10)
        if call == "load_many":
            store.dump_many(dict.fromkeys(keys, b"v"))
        proxy.lose(restart, times=10**6)
        if twin:

            async def main() -> Any:
                async with store.aio() as aio:
                    if call == "dump":
                        return await aio.dump(keys[0], b"w")
                    method = getattr(aio, call)
                    return await method(dict.fromkeys(keys, b"w") if call == "dump_many" else keys)

            result = asyncio.run(main())
        elif call == "dump":
            result = store.dump(keys[0], b"w")
            store.close()
        else:
            method = getattr(store, call)
            result = method(dict.fromkeys(keys, b"w") if call == "dump_many" else keys)
            store.close()
        assert server.up.is_set()
        check = RedisRawBackend(url, prefix="pk/restart")
        listed = list(check)
        lost = 1000 if where == "between batches" else 0  # went with the old server
        if call == "dump":
            assert result is True and listed == keys[:1] and check[keys[0]] == b"w"
        elif call == "dump_many":
            assert result is None
            assert listed == keys[lost:] and set(check.load_many(keys).values()) == {b"w"}
        else:
            assert result == dict.fromkeys(keys[:lost], b"v")
            assert listed == []
        assert len(check) == len(listed)
        check.close()


# -- 4 and 5. the packer against redis-py's, for every argument type ---------------------------


class Text(str):
    """A str subclass: packed as its str."""


class Data(bytes):
    """A bytes subclass: packed as its bytes."""


class Whole(int):
    """An int subclass: packed as its digits."""


class Real(float):
    """A float subclass: packed as its repr."""


class Level(enum.IntEnum):
    HIGH = 7


#: every kind of first argument (a command's name, maybe with words) and of argument
NAMES = st.one_of(
    st.sampled_from(["EVALSHA", "CONFIG GET", " SET  x ", "a\tb", "é ü", "", b"CLIENT SETINFO", b"GET"]),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.binary(max_size=12).map(bytearray),
    st.binary(max_size=12).map(memoryview),
    st.text(max_size=8).map(Text),
    st.binary(max_size=8).map(Data),
)
VALUES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.binary(min_size=5998, max_size=6002),
    st.binary(max_size=16).map(bytearray),
    st.binary(max_size=16).map(memoryview),
    st.binary(max_size=16).map(lambda data: memoryview(data)[::2]),
    st.text(max_size=8).map(Text),
    st.binary(max_size=8).map(Data),
    st.integers().map(Whole),
    st.floats(allow_nan=False).map(Real),
    st.just(Level.HIGH),
    st.booleans(),
    st.none(),
    st.just([1]),
)


def _packed(pack: Any, *args: Any) -> tuple[str, bytes]:
    try:
        return "sent", b"".join(bytes(chunk) for chunk in pack(*args))
    except Exception as error:  # the same refusal, by class
        return type(error).__name__, b""


@pytest.fixture(scope="module")
def connections(own: str) -> Iterator[tuple[Any, Any]]:
    """A connection of a backend's own pool (our packer) and a plain redis-py one; neither connected."""
    store = RedisRawBackend(own, prefix="pk/pack")
    pool = store.client.connection_pool
    yield pool.connection_class(**pool.connection_kwargs), redis_py.Connection()
    store.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(NAMES, st.lists(VALUES, max_size=10))
def test_the_backends_connections_pack_what_redis_py_packs(
    connections: tuple[Any, Any], name: Any, args: list[Any]
) -> None:
    ours, theirs = connections
    assert HIREDIS_AVAILABLE or not isinstance(theirs._command_packer, type(ours._command_packer))
    for _ in range(2):  # the second time from the packed names our packer keeps
        assert _packed(ours.pack_command, name, *args) == _packed(theirs.pack_command, name, *args)
    commands = [(name, *args), ("SET", "k", b"v" * 7000), (name,)]
    assert _packed(ours.pack_commands, commands) == _packed(theirs.pack_commands, commands)


def test_a_name_that_equals_a_kept_one_is_packed_as_redis_py_packs_it(connections: tuple[Any, Any]) -> None:
    ours, theirs = connections
    words = b"CONFIG GET"
    for name in (words, memoryview(words), bytearray(words), Text("CONFIG GET"), b"GET", memoryview(b"GET")):
        assert _packed(ours.pack_command, name, "x") == _packed(theirs.pack_command, name, "x"), name


# -- 8. pressure: eviction while many dumps run ------------------------------------------------


def _value(key: str, version: int) -> bytes:
    """A value that names its key and writer: a torn or crossed one shows."""
    return f"{key}|{version}|".encode().ljust(2048, b"#")


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_eviction_under_many_writers_leaves_the_index_agreeing_with_the_values(
    own: str, admin: redis_py.Redis, policy: str
) -> None:
    before = admin.info("stats")["evicted_keys"]
    admin.config_set("maxmemory-policy", policy)
    # 3 MB above what the server uses now (its scripts, its clients' buffers): what eviction can free.
    admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 3 * 2**20)
    timeout = 3600 if policy.startswith("volatile") else None  # volatile-*: only values have a TTL
    store = RedisRawBackend(own, prefix="pk/evict", timeout=timeout, max_connections=8)
    keys = [f"k/{i:04d}" for i in range(3000)]  # 6 MB of values: eviction all along
    refused: list[StoreError] = []

    def plain(version: int) -> None:
        for key in keys[version::4]:
            store.dump(key, _value(key, version))

    def bulk(version: int) -> None:
        for start in range(0, len(keys), 100):
            store.dump_many({key: _value(key, version) for key in keys[start : start + 100]})

    def timed(version: int) -> None:
        for key in keys[::3]:
            store.dump(key, _value(key, version), timeout=7200)

    def twin(version: int) -> None:
        async def main() -> None:
            async with RedisRawBackend(own, prefix="pk/evict", timeout=timeout).aio() as aio:
                for start in range(0, len(keys), 50):
                    batch = keys[start : start + 50]
                    await asyncio.gather(*(aio.dump(key, _value(key, version)) for key in batch))

        asyncio.run(main())

    def run(work: Any, version: int) -> None:
        try:
            work(version)
        except StoreError as error:  # a full server may refuse: typed, never a raw error
            refused.append(error)

    threads = [
        threading.Thread(target=run, args=(work, version))
        for version, work in enumerate([plain, plain, bulk, timed, twin])
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        evicted = admin.info("stats")["evicted_keys"] - before
        admin.config_set("maxmemory", "0")  # one state to compare every call on
        assert evicted > 0 and not refused, refused
        listed = list(store)
        assert len(store) == len(listed) == len(set(listed)) > 0
        found = store.load_many(keys)
        assert set(found) == set(listed)
        for key, data in found.items():  # whole, and one of its writers'
            name, version, rest = data.split(b"|", 2)
            assert name == key.encode() and int(version) in range(5) and rest == b"#" * len(rest)
            assert store.load(key) == data
        assert store.purge() == 0 and len(store) == len(listed)
    finally:
        admin.config_set("maxmemory", "0")
        store.close()


# -- 9. fork after first use, threads and loops on the plain dump -----------------------------


def test_a_child_forked_after_plain_dumps_and_twin_dumps_writes_on_its_own_connections(
    own: str, admin: redis_py.Redis
) -> None:
    store = RedisRawBackend(own, prefix="pk/fork")
    twin = store.aio()

    async def use(tag: bytes) -> dict[str, bytes]:
        await twin.dump(f"twin/{tag.decode()}", tag)
        await twin.dump_many({f"many/{tag.decode()}/{i}": tag for i in range(3)})
        return await twin.load_many([f"twin/{tag.decode()}", "plain/parent"])

    store.dump("plain/parent", b"p")
    assert asyncio.run(use(b"parent")) == {"twin/parent": b"parent", "plain/parent": b"p"}
    pid = os.fork()
    if pid == 0:  # the child: its exit code says what it found
        try:
            store.dump("plain/child", b"c")
            found = asyncio.run(use(b"child"))
            code = 0 if found == {"twin/child": b"child", "plain/parent": b"p"} else 3
            asyncio.run(twin.aclose())
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's pools (blocking, and the twin's on a new loop) still answer, each reply its own.
    assert store.dump("plain/parent", b"p2") is True and store.load("plain/child") == b"c"
    assert asyncio.run(use(b"again"))["plain/parent"] == b"p2"
    assert len(store) == len(list(store)) == 14
    asyncio.run(twin.aclose())


# -- 5. bad options of dump, refused before any I/O as on S3 -----------------------------------


@pytest.mark.parametrize("etag", [5, b"abc", None.__class__, "", " x", "a\r\nb", "\x1b[2J", "é", "e" * 1025])
def test_an_if_match_that_is_no_etag_is_refused_before_any_io_naming_it(own: str, etag: Any) -> None:
    with LosingProxy(_port(own)) as proxy:
        store = RedisJsonBackend(proxy.url, prefix="pk/etag")

        async def twin() -> None:
            async with store.aio() as aio:
                await aio.dump("k", 1, if_match=etag)

        for call in (lambda: store.dump("k", 1, if_match=etag), lambda: asyncio.run(twin())):
            with pytest.raises(ValueError, match="if_match is an ETag"):
                call()
        assert sum(proxy.seen.values()) == 0  # nothing was sent
        store.close()


def test_if_absent_and_if_match_together_are_a_type_error_as_on_s3(own: str) -> None:
    store = RedisJsonBackend(own, prefix="pk/both")

    async def twin() -> None:
        async with store.aio() as aio:
            await aio.dump("k", 1, if_absent=True, if_match="e")

    for call in (lambda: store.dump("k", 1, if_absent=True, if_match="e"), lambda: asyncio.run(twin())):
        with pytest.raises(TypeError, match="exclusive"):
            call()
    check = RedisJsonBackend(own, prefix="pk/both")
    assert "k" not in check
    check.close()


@pytest.mark.xfail(
    strict=True,
    reason="the deadlines sorted set is the only record of a deadline: under an allkeys-* policy Redis "
    "may evict it, and every entry then reads as live until Redis reclaims its value (timeout + "
    "keep_expired); telling a lost deadline (a value key with a TTL and no deadline) in every script "
    "costs a PTTL per key without a deadline, every load_many of a store without a timeout",
)
def test_an_evicted_deadlines_set_never_makes_an_expired_entry_live_again(
    own: str, admin: redis_py.Redis
) -> None:
    clock = Clock()
    store = RedisRawBackend(own, prefix="pk/deadlines", timeout=10, clock=clock)
    store.dump("k", b"v")
    admin.delete(store.prefix + "\x7fdeadlines")  # what allkeys-lru or allkeys-random may do
    clock.now += 11
    try:
        assert "k" not in store and store.load("k") is None and store.load_many(["k"]) == {}
    finally:
        store.close()


# -- 1. lost replies of requests our packer cut in chunks --------------------------------------


@pytest.mark.parametrize(
    "value", [b"x" * 6001, bytearray(b"\r\n" * 5000), memoryview(b"$-1\r\n" * 3000), b"v" * (1 << 20)]
)
def test_a_lost_reply_of_a_chunked_request_is_sent_again_whole(own: str, value: Any) -> None:
    with LosingProxy(_port(own)) as proxy:
        store = RedisRawBackend(proxy.url, prefix="pk/chunks")
        store.dump("warm", b"")  # the scripts are loaded: each request below is one EVALSHA
        store.dump_many({"warm": b""})
        for script, call in (
            ("put", lambda: store.dump("k", value)),
            ("put", lambda: store.dump("t", value, timeout=60)),
            ("write", lambda: store.dump_many({"m": value, "n": value})),
            ("put", lambda: asyncio.run(_twin_dump(proxy.url, value))),
        ):
            proxy.lose_script(SCRIPTS[script])
            lost = proxy.lost
            call()
            assert proxy.lost == lost + 1
        found = store.load_many(["k", "t", "m", "n", "twin"])
        assert found == dict.fromkeys(["k", "t", "m", "n", "twin"], bytes(value))
        assert len(store) == len(list(store)) == 6
        store.clear()
        store.close()


async def _twin_dump(url: str, value: Any) -> None:
    async with RedisRawBackend(url, prefix="pk/chunks").aio() as twin:
        assert await twin.dump("twin", value) is True


def test_a_call_waiting_for_a_pooled_connection_at_close_sends_nothing(own: str) -> None:
    """A pool of one: a bulk call holds the connection, a plain dump waits for it, close()
    comes; the dump then gets the connection back, and must not send its request."""
    with LosingProxy(_port(own)) as proxy:
        store = RedisRawBackend(proxy.url, prefix="pk/waiting", max_connections=1)
        store.dump("warm", b"")
        store.dump_many({"warm": b""})  # both scripts loaded: every request below is one EVALSHA
        in_flight, go = threading.Event(), threading.Event()
        puts = 0

        def hold_the_first_batch(request: list[bytes]) -> bool:
            nonlocal puts
            if request[0].upper() == b"EVALSHA" and request[1] == script_sha(SCRIPTS["write"]):
                in_flight.set()
                go.wait()
            if request[0].upper() == b"EVALSHA" and request[1] == script_sha(SCRIPTS["put"]):
                puts += 1
            return False

        proxy.lose(hold_the_first_batch, times=10**6)
        outcomes: dict[str, Any] = {}

        def call(name: str, do: Any) -> None:
            try:
                outcomes[name] = do()
            except StoreError as error:
                outcomes[name] = error

        bulk = threading.Thread(
            target=call, args=("bulk", lambda: store.dump_many(dict.fromkeys(map(str, range(2500)), b"x")))
        )
        bulk.start()
        in_flight.wait()
        waiting = threading.Thread(target=call, args=("dump", lambda: store.dump("late", b"y")))
        waiting.start()
        queue = store.client.connection_pool.pool
        for _ in range(5000):  # until the dump waits for the pool's one connection
            with queue.mutex:
                if queue.not_empty._waiters:  # type: ignore[attr-defined]
                    break
            threading.Event().wait(0.001)  # ok: polling a condition of another thread, not hiding a race
        store.close()
        go.set()
        bulk.join()
        waiting.join()
        assert isinstance(outcomes["bulk"], StoreError) and "closed" in str(outcomes["bulk"])
        assert isinstance(outcomes["dump"], StoreError) and "closed" in str(outcomes["dump"])
        assert puts == 0
    check = RedisRawBackend(own, prefix="pk/waiting")
    assert "late" not in check and len(check) == len(list(check)) == 1001  # warm and the first batch
    check.clear()
    check.close()
