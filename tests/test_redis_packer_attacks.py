"""Attacks on the Redis command packer and the plain dump script (#29): edge values through the public API.

Then the classes not yet run on this path (closing, one error per failure,
eviction under many writers, a server restart mid-call, the packer against
redis-py's for every argument type, fork and two loops), against real
redis-servers of this module's own where a test changes the server.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from redis_proxy import LosingProxy, script_sha
from servers import redis_server

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


def _others(admin: redis_py.Redis) -> int:
    """How many connections the server has besides ``admin``'s own."""
    return len(admin.client_list()) - 1


@pytest.fixture
def admin(own: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(own)
    client.flushall()
    yield client
    client.flushall()
    client.close()


def test_aclose_leaves_no_connection_of_the_twin_open(own: str, admin: redis_py.Redis) -> None:
    async def main() -> int:
        twin = RedisRawBackend(own, prefix="pk/aclose").aio()
        await twin.dump("k", b"1")
        await asyncio.gather(*(twin.load(f"k{i}") for i in range(3)), twin.load_many(["k", "j"]))
        await twin.aclose()
        return _others(admin)

    assert asyncio.run(main()) == 0


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
