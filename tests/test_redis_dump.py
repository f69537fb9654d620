"""A Redis ``dump`` in fewer client steps (#29): one script of 9 arguments, packed by our packer.

The plain dump (no condition, no origin ETag) is its own script ("put"),
sent without driving a plan; the pools a backend makes pack commands with
:class:`backends.redis.packer.Packer`. Every guarantee of the write script
stays: checked here for what the new path could break (lost replies, the
sweep of entries another client emptied, the twin sending the same), and by
the reliability suites (tests/test_redis*.py) for the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from hypothesis import given, settings
from hypothesis import strategies as st
from monitor import RedisCommands
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis_proxy import LosingProxy

from backends import RedisJsonBackend, RedisRawBackend
from backends.redis.packer import CUTOFF, Packer
from backends.redis.scripts import SCRIPTS
from backends.redis.store import INDEX

ENCODE = Encoder("utf-8", "strict", False).encode  # type: ignore[no-untyped-call]
THEIRS = PythonRespSerializer(CUTOFF, ENCODE)  # type: ignore[no-untyped-call]
#: every kind of argument redis-py takes, and some it refuses
ARGUMENTS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.binary(min_size=CUTOFF - 2, max_size=CUTOFF + 2),
    st.binary(max_size=16).map(bytearray),
    st.binary(max_size=16).map(memoryview),
    st.booleans(),
    st.none(),
)
COMMANDS = st.sampled_from(["EVALSHA", "CONFIG GET", "SET", b"CLIENT SETINFO", b"GET", b"A\tB", "x\ty", ""])


def _outcome(pack: Any, args: tuple[Any, ...]) -> tuple[str, bytes]:
    try:
        return "sent", b"".join(bytes(chunk) for chunk in pack(*args))
    except Exception as error:  # the same refusal, by class
        return type(error).__name__, b""


@settings(max_examples=300, deadline=None)
@given(COMMANDS, st.lists(ARGUMENTS, max_size=12))
def test_the_packer_sends_what_redis_py_sends_byte_for_byte(command: Any, args: list[Any]) -> None:
    ours = Packer(ENCODE)
    for _ in range(2):  # the second time from the packed names it keeps
        assert _outcome(ours.pack, (command, *args)) == _outcome(THEIRS.pack, (command, *args))


def test_many_small_arguments_go_in_one_chunk_and_a_large_one_is_not_copied() -> None:
    packer = Packer(ENCODE)
    page = packer.pack("EVALSHA", "f" * 40, 1002, *(f"p:k/{i:04d}" for i in range(1002)), "")
    assert len(page) == 1  # one sendall (redis-py's serializer: one per chunk past 6,000 bytes)
    large = b"v" * (CUTOFF + 1)
    chunks = packer.pack("SET", "k", large, "PX", 5)
    assert len(chunks) == 3 and chunks[1] is large


@pytest.fixture
def store(redis: str, request: pytest.FixtureRequest) -> Iterator[RedisJsonBackend]:
    backend = RedisJsonBackend(redis, prefix=f"dump/é/{request.node.name}")
    yield backend
    if not backend.closed:
        backend.clear()
        backend.close()


def _arguments(command: str) -> list[str]:
    """The arguments of a command as redis-py's MONITOR shows it (joined by spaces; none holds one here)."""
    return command.split(" ")


def test_a_plain_dump_is_one_script_of_nine_arguments_and_the_twin_sends_the_same(
    store: RedisJsonBackend, commands: RedisCommands
) -> None:
    store.dump("k", {"v": 1})  # the script loaded
    commands.reset()
    store.dump("k", {"v": 2})
    [blocking] = commands.sent()
    assert len(_arguments(blocking)) == 9 and _arguments(blocking)[0] == "EVALSHA"

    async def twin_dump() -> None:
        twin = RedisJsonBackend(str(store.server_url), prefix=store._settings["prefix"]).aio()
        try:
            await twin.len()  # a new connection's handshake, before counting
            commands.reset()
            await twin.dump("k", {"v": 2})
        finally:
            await twin.aclose()

    asyncio.run(twin_dump())
    assert commands.sent() == [blocking]  # the same plan, to the byte
    assert store["k"] == {"v": 2}


def test_a_lost_reply_of_a_plain_dump_is_answered_by_its_repeat(redis: str) -> None:
    port = int(redis.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    with LosingProxy(port) as proxy:
        store = RedisJsonBackend(proxy.url, prefix="dump/lost", timeout=60)
        try:
            store.dump("warm", 0)
            proxy.lose_script(SCRIPTS["put"])
            assert store.dump("k", 1) is True
            assert proxy.lost == 1 and store["k"] == 1 and len(store) == 2
            assert store.expires("k") is not None
        finally:
            store.clear()
            store.close()


def test_plain_dumps_sweep_the_entries_another_client_emptied(redis: str) -> None:
    store = RedisRawBackend(redis, prefix="dump/sweep")
    raw = redis_py.Redis.from_url(redis)
    try:
        store.dump_many({f"k{i:02d}": b"v" for i in range(20)})
        raw.delete(*(store.prefix + f"k{i:02d}" for i in range(0, 20, 2)))  # 10 values gone
        for _ in range(3):  # each checks 10 index entries past a cursor: no listing needed
            store.dump("k00", b"again")
        index = {member.decode() for member in raw.zrange(store.prefix + INDEX, 0, -1)}
        assert index == {"k00", *(f"k{i:02d}" for i in range(1, 20, 2))}
    finally:
        store.clear()
        store.close()
        raw.close()


def test_a_plain_dump_with_a_timeout_and_over_a_fill(store: RedisJsonBackend) -> None:
    store.fill("k", 1, etag='"origin"')
    entry = store.peek("k")
    assert entry is not None and entry.etag == '"origin"'
    store.dump("k", 2, timeout=30)  # the value is ours now: the origin ETag goes
    entry = store.peek("k")
    assert entry is not None and entry.etag is None and entry.deadline is not None
    store.dump("k", 3, timeout=0)  # already expired: absent for every call
    assert "k" not in store and store.load("k") is None and len(store) == 0
    store.dump("k", 4, timeout=None)
    assert store.expires("k") is None and store["k"] == 4
