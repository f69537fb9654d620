"""``load_many`` on Redis sends each key once (#29): the script finds each key past the prefix's bytes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from clock import FrozenClock
from monitor import RedisCommands
from redis_proxy import LosingProxy, script_sha
from servers import redis_server

from backends import InvalidKeyError, RedisJsonBackend, RedisRawBackend, StoreError
from backends.redis.scripts import SCRIPTS


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


# -- the attack classes of ATTACKS.md that apply to load_many ------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


def _page_of(request: list[bytes]) -> bytes | None:
    """The first value key of a load_many page (its identity), or None for any other request."""
    many = request[0].upper() == b"EVALSHA" and request[1] == script_sha(SCRIPTS["many"])
    return request[5] if many and len(request) > 5 else None


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    """A redis-server of this module: an empty prefix and maxmemory would disturb the shared one."""
    with redis_server() as url:
        yield url


@pytest.fixture
def proxy(own_server: str) -> Iterator[LosingProxy]:
    redis_py.Redis.from_url(own_server).flushall()
    with LosingProxy(_port(own_server)) as losing:
        yield losing


# 1. lost replies


def test_a_lost_reply_of_a_page_is_answered_by_its_repeat_sync_and_async(proxy: LosingProxy) -> None:
    store = RedisJsonBackend(proxy.url, prefix="lost/é")
    data = {f"k/{i:04d}": i for i in range(2500)}
    try:
        store.dump_many(data)
        store.load_many(["warm"])  # the script loaded
        pages: list[bytes] = []

        def count(request: list[bytes]) -> bool:
            if (page := _page_of(request)) is not None:
                pages.append(page)
            return False

        def second_page(request: list[bytes]) -> bool:
            return len(pages) > 1 and _page_of(request) == pages[1] and pages.count(pages[1]) == 1

        proxy.lose(count, times=10**6)
        proxy.lose(second_page, times=1)
        assert store.load_many([*data, "absent"]) == data
        assert proxy.lost == 1 and len(pages) == 4  # three pages, the second sent twice

        async def twin_reads() -> dict[str, Any]:
            twin = RedisJsonBackend(proxy.url, prefix="lost/é").aio()
            try:
                await twin.load_many(["warm"])
                pages.clear()
                proxy.lose(second_page, times=1)
                return await twin.load_many(data)
            finally:
                await twin.aclose()

        assert asyncio.run(twin_reads()) == data
        assert proxy.lost == 2 and len(pages) == 4
    finally:
        store.clear()
        store.close()


# 2. foreign data


def test_keys_holding_the_prefix_bytes_and_foreign_value_keys_get_the_answers_load_gives(
    redis: str,
) -> None:
    prefix = "p/é𝄞:"
    store = RedisJsonBackend(redis, prefix=prefix)
    raw = redis_py.Redis.from_url(redis)
    try:
        ours = {prefix: 1, prefix + prefix: 2, "x" + prefix: 3, "é𝄞": 4, "p/é": 5}
        store.dump_many(ours)
        raw.set(prefix + prefix + "y", b"6")  # holds the prefix twice, another program's: no key of ours
        raw.set(prefix + "foreign", b"7")
        asked = [*ours, prefix + "y", "y", "foreign"]
        assert store.load_many(asked) == ours == {key: store[key] for key in asked if key in store}
    finally:
        raw.delete(prefix + prefix + "y", prefix + "foreign")
        raw.close()
        store.clear()
        store.close()


def test_an_empty_prefix_and_keys_at_the_byte_limit(own_server: str) -> None:
    raw = redis_py.Redis.from_url(own_server)
    raw.flushall()
    store = RedisJsonBackend(own_server)
    assert store.prefix == ""
    edge = {
        "é" * 512: 1,  # 1,024 bytes of 2-byte characters
        "𝄞" * 256: 2,  # of 4-byte characters
        "a" * 1020 + "𝄞": 3,  # the last character ends at byte 1,024
        "a" * 1024: 4,
        "a": 5,
        "日本/語": 6,
    }
    try:
        store.dump_many(edge)
        raw.set("foreign", b"1")  # another program's, at the top of the database
        assert store.load_many([*edge, "foreign", "b" * 1023]) == edge
        with pytest.raises(InvalidKeyError):
            store.load_many(["a", "a" * 1025])
        with pytest.raises(InvalidKeyError):
            store.load_many(["a", "é" * 512 + "a"])  # 1,025 bytes
        with pytest.raises(InvalidKeyError):
            store.load_many(["a", "\ud800"])
    finally:
        raw.flushall()
        raw.close()
        store.close()


def test_no_keys_send_nothing_and_ten_thousand_go_in_ten_pages(
    store: RedisJsonBackend, commands: RedisCommands
) -> None:
    data = {f"{i:05d}/ключ": i for i in range(10_000)}
    store.dump_many(data)
    store.load_many(["warm"])
    commands.reset()
    assert store.load_many([]) == {}
    assert commands.count() == {}
    commands.reset()
    assert store.load_many(reversed(list(data))) == data
    assert commands.count() == {"evalsha": 10}


@pytest.mark.parametrize("options", [{"encoding": "latin-1"}, {"decode_responses": True}])
def test_a_client_that_is_not_utf8_bytes_is_refused_before_any_io(options: dict[str, Any]) -> None:
    # The store reads and writes keys as UTF-8 and values as bytes: a client
    # with another encoding would give load and load_many different answers.
    client = redis_py.Redis(host="127.0.0.1", port=1, **options)  # nothing listens: no I/O is made
    with pytest.raises(ValueError, match="client"):
        RedisJsonBackend(client=client, prefix="tést")


# 8. eviction mid-call


def test_eviction_between_the_pages_of_a_call_gives_each_key_one_answer(
    own_server: str, proxy: LosingProxy
) -> None:
    raw = redis_py.Redis.from_url(own_server)
    store = RedisRawBackend(proxy.url, prefix="evict/é")
    value = b"v" * 1024
    keys = [f"k/{i:04d}" for i in range(3000)]
    try:
        raw.config_set("maxmemory-policy", "allkeys-lru")
        store.dump_many(dict.fromkeys(keys, value))
        evicted = raw.info("stats")["evicted_keys"]
        pages: list[bytes] = []

        def evict_at_the_second(request: list[bytes]) -> bool:
            page = _page_of(request)
            if page is not None and page not in pages:
                pages.append(page)
                if len(pages) == 2:  # from another connection, between the pages
                    raw.config_set("maxmemory", str(raw.info("memory")["used_memory"] - 1_500_000))
                    raw.set("foreign", b"x" * 10_000)
                    raw.config_set("maxmemory", "0")  # the rest of the call sees one state
            return False

        proxy.lose(evict_at_the_second, times=3)
        found = store.load_many(keys)
        assert raw.info("stats")["evicted_keys"] > evicted and len(pages) == 3
        assert all(data == value for data in found.values())
        later = keys[1000:]  # asked after the eviction
        assert {key for key in later if key in found} == {key for key in later if key in store}
        assert len(found) < len(keys)
    finally:
        raw.config_set("maxmemory", "0")
        raw.config_set("maxmemory-policy", "noeviction")
        raw.flushall()
        raw.close()
        store.close()


# 3. closing mid-call


@pytest.mark.parametrize("twin", [False, True], ids=["blocking", "twin"])
def test_close_between_the_pages_of_a_call_sends_no_later_page(proxy: LosingProxy, twin: bool) -> None:
    keys = [f"k/{i:04d}" for i in range(2500)]
    store = RedisJsonBackend(proxy.url, prefix="close/é")
    store.dump_many(dict.fromkeys(keys, 1))
    pages: set[bytes] = set()

    def close_at_the_second(request: list[bytes]) -> bool:
        page = _page_of(request)
        if page is not None:
            pages.add(page)
            if len(pages) == 2:
                store.close()  # from another thread, while the call is between pages
        return False

    proxy.lose(close_at_the_second, times=10)
    with pytest.raises(StoreError, match="closed"):
        if twin:
            asyncio.run(_twin_load_many(store, keys))
        else:
            store.load_many(keys)
    assert len(pages) == 2  # the third page was never sent


async def _twin_load_many(store: RedisJsonBackend, keys: list[str]) -> dict[str, Any]:
    twin = store.aio()
    try:
        return await twin.load_many(keys)
    finally:
        await twin.aclose()


# 9. the async twin on two event loops


def test_the_twin_reads_pages_from_two_event_loops_at_once(store: RedisJsonBackend) -> None:
    data = {f"k/{i:04d}": i for i in range(3000)}
    store.dump_many(data)
    twin = store.aio()
    both = threading.Barrier(2)
    seen: dict[int, Any] = {}

    def run(part: int) -> None:
        keys = list(data)[part::2]

        async def main() -> Any:
            many = asyncio.gather(twin.load_many(keys), *(twin.load(key) for key in keys[:1500]))
            await asyncio.to_thread(both.wait, 10)  # both loops have their pages in flight
            return await many

        try:
            seen[part] = asyncio.run(main())
        except BaseException as error:  # reported by the assertions below
            seen[part] = error

    threads = [threading.Thread(target=run, args=(part,)) for part in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for part in (0, 1):
        keys = list(data)[part::2]
        many, *single = seen[part]
        assert many == {key: data[key] for key in keys}
        assert single == [data[key] for key in keys[:1500]]


# 7. expiry between the keys


def test_entries_expiring_between_the_keys_of_one_call(redis: str) -> None:
    clock = FrozenClock()
    # Redis keeps each value an hour past its deadline: only the injected clock expires them.
    store = RedisJsonBackend(redis, prefix="expiry/é", clock=clock, keep_expired=3600)
    try:
        for ms in range(1, 6):  # deadlines 1 ms apart
            store.dump(f"k{ms}", ms, timeout=ms / 1000)
        keys = [f"k{ms}" for ms in range(1, 6)]
        for passed in range(7):  # ms: a deadline reached is past, for load as for load_many
            one_by_one = {key: store[key] for key in keys if key in store}
            assert store.load_many(keys) == one_by_one == {key: int(key[1:]) for key in keys[passed:]}
            clock.advance(0.001)
    finally:
        store.clear()
        store.close()


def test_close_between_the_batches_of_the_twins_dump_many_writes_no_later_batch(proxy: LosingProxy) -> None:
    store = RedisJsonBackend(proxy.url, prefix="close-write/é")
    write = script_sha(SCRIPTS["write"])
    batches: set[bytes] = set()  # by token key: redis-py repeats a batch whose connection close() cut

    def close_at_the_second(request: list[bytes]) -> bool:
        if request[0].upper() == b"EVALSHA" and request[1] == write:
            batches.add(request[5])
            if len(batches) == 2:
                store.close()  # from another thread, while the twin's call is between batches
        return False

    async def write_all() -> None:
        twin = store.aio()
        try:
            await twin.dump_many({f"k/{i:04d}": i for i in range(2500)})
        finally:
            await twin.aclose()

    proxy.lose(close_at_the_second, times=10)
    with pytest.raises(StoreError, match="closed"):
        asyncio.run(write_all())
    check = RedisJsonBackend(proxy.url, prefix="close-write/é")
    try:
        assert "k/2499" not in check and len(check) <= 2000 and len(batches) == 2  # no third batch
    finally:
        check.clear()
        check.close()
