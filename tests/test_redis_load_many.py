"""``load_many`` on Redis sends each key once (#29): the script finds each key past the prefix's bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_py
from clock import FrozenClock
from monitor import RedisCommands

from backends import RedisJsonBackend


@pytest.fixture
def store(redis: str, request: pytest.FixtureRequest) -> Iterator[RedisJsonBackend]:
    backend = RedisJsonBackend(redis, prefix=f"tést/ключ/{request.node.name}/")
    yield backend
    backend.clear()
    backend.close()


def test_load_many_sends_each_key_once_and_finds_it_past_a_prefix_of_many_bytes(
    store: RedisJsonBackend, commands: RedisCommands
) -> None:
    data = {f"k/{i:04d}": i for i in range(1500)} | {"日本/語": "ja", "ключ": "ru", "é": 1}
    store.dump_many(data)
    store.load_many(["warm"])  # the script loaded
    commands.reset()
    assert store.load_many([*data, "absent"]) == data
    sent = commands.sent()
    assert [command.split(" ", 1)[0].lower() for command in sent] == ["evalsha", "evalsha"]  # 1,000 a page
    text = " ".join(sent)
    assert '"k/0001"' not in text and '"k/1499"' not in text  # only as value keys: not sent twice
    assert text.count("k/0001") == 1


def test_load_many_still_leaves_out_foreign_expired_and_retyped_values(redis: str) -> None:
    clock = FrozenClock()
    store = RedisJsonBackend(redis, prefix="lm/é/", clock=clock)
    try:
        store.dump_many({"a": 1, "b": 2, "c": 3})
        store.dump("short", 4, timeout=5)
        raw = redis_py.Redis.from_url(redis)
        raw.set("lm/é/:foreign", b'"not ours"')  # a value key no call of ours wrote: not in the index
        raw.delete("lm/é/:b")
        raw.rpush("lm/é/:b", "x")  # b retyped by another program
        clock.advance(10)
        assert store.load_many(["a", "b", "c", "short", "foreign"]) == {"a": 1, "c": 3}
        raw.close()
    finally:
        store.clear()
        store.close()
