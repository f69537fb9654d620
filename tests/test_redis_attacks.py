"""The attack classes of ATTACKS.md against the Redis backends and their async twin (issue #23).

Lost replies through a proxy that drops the answer after the server applied
the request; foreign writers (``redis-cli`` DEL, SET, HSET under the prefix);
eviction under each ``maxmemory-policy`` on a server of its own; closing;
bad input; secrets; two event loops. Bounded by default; ``BACKENDS_LONG=1``
runs the eviction and lost-reply rounds longer.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from redis_proxy import LosingProxy, script_sha
from servers import redis_server

import backends
from backends import InvalidKeyError, RedisJsonBackend, RedisRawBackend, StoreError
from backends.events import MemorySink, subscribe
from backends.redis.locks import _ACQUIRE, _RELEASE, _RENEW
from backends.redis.scripts import SCRIPTS
from backends.redis.store import INDEX, TAKES

LONG = os.environ.get("BACKENDS_LONG") == "1"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


@pytest.fixture
def raw(redis: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(redis)
    yield client
    client.close()


@pytest.fixture
def store(redis: str, request: pytest.FixtureRequest) -> Iterator[RedisJsonBackend]:
    backend = RedisJsonBackend(redis, prefix=f"attacks/{request.node.name}")
    yield backend
    if not backend.closed:
        backend.clear()
        backend.close()


@pytest.fixture
def proxy(redis: str) -> Iterator[LosingProxy]:
    with LosingProxy(_port(redis)) as losing:
        yield losing


# -- 1. lost replies -------------------------------------------------------------------------


def test_a_lost_reply_is_answered_by_its_repeat_as_the_first_would_have_been(
    proxy: LosingProxy, raw: redis_py.Redis
) -> None:
    store = RedisJsonBackend(proxy.url, prefix="attacks/lost")
    try:
        rounds = 20 if LONG else 2
        for i in range(rounds):
            store["k"] = i
            proxy.lose_script(SCRIPTS["pop"])
            assert store.pop("k") == i  # the first GETDEL took it: the repeat returns what it took
            assert "k" not in store
            store["k"] = i
            proxy.lose_script(SCRIPTS["delete"])
            assert store.delete("k") is True  # this very call removed it
            store["k"] = i
            proxy.lose_script(SCRIPTS["delete"])
            del store["k"]  # no KeyError
            proxy.lose_script(SCRIPTS["write"])
            assert store.dump("n", i, if_absent=True) is True  # it won, and still knows it
            etag = store.stat("n")
            assert etag is not None
            proxy.lose_script(SCRIPTS["write"])
            assert store.dump("n", i + 1, if_match=etag.etag) is True
            assert store["n"] == i + 1
            store.dump_many({"a": 1, "b": 2})
            proxy.lose_script(SCRIPTS["delete"])
            assert store.delete_many(["a", "b", "c"]) == 2
            lock = store.lock("k", timeout=0)
            proxy.lose_script(_ACQUIRE)
            lock.acquire()  # the retry finds our own token: ours
            proxy.lose_script(_RENEW)
            lock.renew()
            proxy.lose_script(_RELEASE)
            lock.release()  # safe to repeat after a lost reply
            with store.lock("k", timeout=0) as again:
                assert again.held
            store.delete("n")
            store.dump("old", 1, timeout=0.001)
            store.dump("old2", 1, timeout=0.001)
            waited = 0
            while "old" in store or "old2" in store:  # the server's clock passes their deadline
                waited += 1
                assert waited < 10_000
            proxy.lose_script(SCRIPTS["purge"])
            assert store.purge() == 2  # the repeat answers for what the first removed
        assert proxy.lost == 10 * rounds
        assert list(store) == [] and len(store) == 0  # the answers kept by token are not keys
        tokens = list(raw.scan_iter(match=store.prefix + TAKES + "*"))
        assert tokens and all(0 < raw.pttl(name) <= 44_000 for name in tokens)  # and they expire
    finally:
        store.close()


def test_the_async_twin_survives_lost_replies_as_the_blocking_store(proxy: LosingProxy) -> None:
    store = RedisJsonBackend(proxy.url, prefix="attacks/lost-aio")

    async def main() -> None:
        twin = store.aio()
        try:
            await twin.dump("k", 1)
            proxy.lose_script(SCRIPTS["pop"])
            assert await twin.pop("k") == 1
            await twin.dump("k", 2)
            proxy.lose_script(SCRIPTS["delete"])
            assert await twin.delete("k") is True
            proxy.lose_script(SCRIPTS["write"])
            assert await twin.dump("k", 3, if_absent=True) is True
            assert await twin.load("k") == 3
            await twin.delete("k")
        finally:
            await twin.aclose()

    asyncio.run(main())
    assert proxy.lost == 3


# -- 2. foreign data ---------------------------------------------------------------------------


def _answers(store: RedisJsonBackend, key: str) -> dict[str, Any]:
    """What every call says about ``key``."""
    return {
        "in": key in store,
        "load": store.load(key, "absent"),
        "load_many": key in store.load_many([key]),
        "stat": store.stat(key) is not None,
        "listed": key in list(store),
        "listed under a prefix": key in list(store.list(key[:1])),
        "items": key in dict(store.items()),
    }


ABSENT = {
    "in": False,
    "load": "absent",
    "load_many": False,
    "stat": False,
    "listed": False,
    "listed under a prefix": False,
    "items": False,
}


def test_a_value_another_client_writes_under_the_prefix_is_absent_for_every_call(
    store: RedisJsonBackend, raw: redis_py.Redis
) -> None:
    raw.set(store.prefix + "theirs", b'"not ours"')
    store["ours"] = 1
    assert _answers(store, "theirs") == ABSENT and len(store) == 1
    assert store.delete("theirs") is False and store.pop("theirs", None) is None
    assert raw.get(store.prefix + "theirs") == b'"not ours"'  # left alone
    store.clear()
    assert len(store) == 0 and _answers(store, "theirs") == ABSENT
    assert raw.get(store.prefix + "theirs") == b'"not ours"'
    store["theirs"] = 2  # writing a key makes it ours, as for any absent key
    assert store["theirs"] == 2 and list(store) == ["theirs"]


def test_a_value_deleted_by_another_client_leaves_the_index_at_the_first_listing(
    store: RedisJsonBackend, raw: redis_py.Redis
) -> None:
    store.dump_many({f"k{i}": i for i in range(5)})
    raw.delete(store.prefix + "k1", store.prefix + "k3")
    index = store.prefix + INDEX
    assert _answers(store, "k1") == ABSENT
    assert len(store) == 3 and sorted(store) == ["k0", "k2", "k4"]
    assert raw.zcard(index) == 3  # the index no longer claims them
    raw.delete(store.prefix + "k4")
    assert len(store) == 2 and raw.zcard(index) == 2  # len alone drops it too
    raw.delete(store.prefix + "k2")
    assert store.purge() == 0 and raw.zcard(index) == 1  # and purge (nothing was expired)


def test_a_value_retyped_by_another_client_gets_one_answer_sync_and_async(
    store: RedisJsonBackend, raw: redis_py.Redis
) -> None:
    store.dump_many({"k": 1, "other": 2})
    raw.delete(store.prefix + "k")
    raw.hset(store.prefix + "k", "field", "value")  # WRONGTYPE for GET
    assert _answers(store, "k") == ABSENT
    assert len(store) == 1 and list(store) == ["other"]
    assert store.delete("k") is False and store.pop("k", "absent") == "absent"
    assert raw.type(store.prefix + "k") == b"hash"  # another program's now: left alone

    async def main() -> list[Any]:
        twin = store.aio()
        try:
            alone = await twin.load("k", "absent")
            together = await asyncio.gather(twin.load("k", "absent"), twin.load("other"))
            return [alone, *together, await twin.contains("k"), await twin.load_many(["k"]), await twin.len()]
        finally:
            await twin.aclose()

    assert asyncio.run(main()) == ["absent", "absent", 2, False, {}, 1]
    raw.delete(store.prefix + "k")


# -- 2 and 8. eviction under each policy, on a server of its own ------------------------------

POLICIES = ["noeviction", "allkeys-lru", "volatile-lru", "allkeys-random", "volatile-ttl", "volatile-random"]


@pytest.fixture(scope="module")
def small_server() -> Iterator[str]:
    """A redis-server of its own with 2 MB of maxmemory: the session's server is shared."""
    with redis_server(None, "--maxmemory", "2mb") as url:
        yield url


@pytest.mark.parametrize("policy", POLICIES)
def test_under_eviction_every_call_agrees_and_the_index_holds_only_what_is_present(
    small_server: str, policy: str
) -> None:
    raw = redis_py.Redis.from_url(small_server)
    raw.flushall()
    raw.config_set("maxmemory", "2mb")
    raw.config_set("maxmemory-policy", policy)
    # volatile-* evict only keys with a TTL: the values get one (an hour), the index none.
    store = RedisRawBackend(
        small_server, prefix="evict", timeout=3600 if policy.startswith("volatile") else None
    )
    value, count = os.urandom(2048), 6000 if LONG else 3000  # 3 to 6 times maxmemory
    written = refused = 0
    try:
        if policy == "noeviction":
            store["first"] = value
        for start in range(0, count, 100):
            try:
                store.dump_many({f"k/{i:05d}": value for i in range(start, start + 100)})
                written += 100
            except StoreError as full:
                assert "maxmemory" in str(full)
                refused += 100
        if policy == "noeviction":  # full: the calls that change nothing answer, and take and delete go on
            assert store.pop("absent", None) is None and store.delete("absent") is False
            assert store.dump("first", value, if_absent=True) is False and store.pop("first") == value
            assert store.delete(f"k/{written - 1:05d}") is True
            written -= 1
        # Each call allocates a little, so a server at its limit goes on evicting: stop it
        # there (no limit) to compare every call on one state, the one eviction left.
        raw.config_set("maxmemory", "0")
        unlisted = raw.zcard(store.prefix + INDEX)  # the index as the writes left it, before any listing
        present = {key for key in (f"k/{i:05d}" for i in range(count)) if raw.exists(store.prefix + key)}
        listed = list(store)
        assert len(store) == len(listed) == len(set(listed))
        assert set(listed) == {key for key in present if key in store}
        assert all(store.load(key) == value for key in listed[:200])
        assert set(store.load_many([f"k/{i:05d}" for i in range(count)])) == set(listed)
        assert store.purge() == 0
        assert raw.zcard(store.prefix + INDEX) == len(listed) <= len(present)
        figures = {
            "policy": policy,
            "written": written,
            "refused": refused,
            "present": len(present),
            "listed": len(listed),
            "index": raw.zcard(store.prefix + INDEX),
            "index before listing": unlisted,
            "evicted": raw.info("stats")["evicted_keys"],
        }
        print(figures)  # the figures in README.rst come from these lines (pytest -s)
        if policy == "noeviction":
            assert refused and figures["evicted"] == 0 and len(listed) == written
        elif policy.startswith("allkeys"):
            assert figures["evicted"] > 0
        else:  # only values are evictable: every write lands, and the writes keep the index small
            assert written == count and present and unlisted < 2 * len(present)
    finally:
        raw.flushall()
        raw.close()
        store.close()


# -- 3. closing --------------------------------------------------------------------------------


def test_close_is_idempotent_and_a_with_block_may_close_early(redis: str) -> None:
    backend = RedisJsonBackend(redis, prefix="attacks/close")
    backend.close()
    backend.close()
    with RedisJsonBackend(redis, prefix="attacks/close") as inner:
        inner.close()
    with pytest.raises(StoreError, match="closed"):
        inner.load("k")


def test_a_closed_twin_and_the_twin_of_a_closed_backend_refuse_every_call(redis: str) -> None:
    async def calls(twin: Any) -> list[str]:
        refused = []
        for name, call in [
            ("dump", lambda: twin.dump("k", 1)),
            ("load", lambda: twin.load("k")),
            ("gathered loads", lambda: asyncio.gather(twin.load("a"), twin.load("b"))),
            ("delete", lambda: twin.delete("k")),
            ("pop", lambda: twin.pop("k", None)),
            ("len", twin.len),
            ("stat", lambda: twin.stat("k")),
            ("contains", lambda: twin.contains("k")),
            ("load_many", lambda: twin.load_many(["k"])),
            ("dump_many", lambda: twin.dump_many({"k": 1})),
        ]:
            try:
                await call()
            except StoreError as error:
                assert "closed" in str(error)
                refused.append(name)
        return refused

    async def main() -> tuple[list[str], list[str]]:
        backend = RedisJsonBackend(redis, prefix="attacks/twin-closed")
        twin = backend.aio()
        await twin.dump("seen", 1)
        await twin.aclose()
        await twin.aclose()  # again: nothing
        after_aclose = await calls(twin)
        other = RedisJsonBackend(redis, prefix="attacks/twin-closed")
        early = other.aio()
        assert await early.load("seen") == 1
        other.close()
        after_close = await calls(early)
        await early.aclose()
        return after_aclose, after_close

    after_aclose, after_close = asyncio.run(main())
    assert len(after_aclose) == len(after_close) == 10, (after_aclose, after_close)
    check = RedisJsonBackend(redis, prefix="attacks/twin-closed")
    assert list(check) == ["seen"]  # nothing was written after close
    check.clear()
    check.close()


# -- 4 and 5. bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["\ud800", "a\udfffb", "a\nb", "\x1b]0;x\x07", "a\x7fb", b"bytes"])
def test_a_prefix_that_is_no_valid_text_is_refused_at_construction(redis: str, prefix: Any) -> None:
    with pytest.raises(InvalidKeyError, match="prefix") as caught:
        RedisJsonBackend(redis, prefix=prefix)
    message = str(caught.value)
    assert message.isprintable() and message.encode("utf-8")


def test_a_listing_prefix_that_can_match_nothing_lists_nothing(store: RedisJsonBackend) -> None:
    store["a"] = 1
    assert list(store.list("\ud800")) == [] and list(store.list("a\udfff", "")) == []
    assert list(store.list("", "\ud800")) == ["a"]


# -- 10. secrets -------------------------------------------------------------------------------

SECRET = "S3cr3t-pl4nted"


@pytest.mark.parametrize(
    "query",
    ["ssl_password", "password", "PASSWORD", "pass%77ord", "ssl_key_password", "auth_token", "client_secret"],
)
def test_a_secret_in_a_url_parameter_is_refused_and_never_repeated(query: str) -> None:
    for opener in (
        RedisJsonBackend,
        backends.open,
        lambda url: RedisJsonBackend(url).aio(),
    ):
        with pytest.raises(ValueError) as caught:
            opener(f"rediss://127.0.0.1:1/0?{query}={SECRET}&prefix=x")
        assert SECRET not in "".join(traceback.format_exception(caught.value))


def test_no_secret_in_any_repr_message_event_or_exception_chain(tmp_path: Any) -> None:
    sink = MemorySink()
    url = "rediss://127.0.0.1:1/0?ssl_cert_reqs=none&ssl_keyfile=/nonexistent&socket_timeout=0.2"
    backend = RedisJsonBackend(url, password=SECRET, username="u", retries=0, socket_timeout=0.2)
    subscription = subscribe(sink)
    try:
        with pytest.raises(StoreError) as caught:
            backend.load("k")
    finally:
        subscription.close()
    assert len(sink)
    told = "".join(traceback.format_exception(caught.value)) + repr(backend) + repr(sink.events)
    assert SECRET not in told and SECRET not in repr(pickle.loads(pickle.dumps(backend)))
    backend.close()


# -- 9. two event loops ------------------------------------------------------------------------


def test_one_twin_used_from_two_event_loops_keeps_their_loads_apart(store: RedisJsonBackend) -> None:
    store.dump_many({"a": 1, "b": 2})
    twin = store.aio()
    seen: dict[str, Any] = {}

    def loop_b() -> None:
        async def load() -> Any:
            return await asyncio.wait_for(twin.load("b"), 5)

        try:
            seen["b"] = asyncio.run(load())
        except BaseException as error:  # reported by the assertion below
            seen["b"] = error

    async def loop_a() -> Any:
        task = asyncio.create_task(twin.load("a"))
        await asyncio.sleep(0)  # task's load waits in A's batch, not yet sent
        other = threading.Thread(target=loop_b)
        other.start()
        other.join()  # B loads while A's batch is open, from its own thread and loop
        return await task

    assert asyncio.run(loop_a()) == 1
    assert seen["b"] == 2


def test_the_locks_of_a_closed_backend_refuse_with_store_error(redis: str) -> None:
    backend = RedisJsonBackend(redis, prefix="attacks/closed-lock")
    early = backend.lock("k", timeout=0)
    held = backend.lock("h", timeout=0).acquire()
    backend.close()
    for call in (early.acquire, held.renew, held.release, lambda: backend.lock("k").acquire()):
        with pytest.raises(StoreError, match="closed"):
            call()


def test_close_between_the_batches_of_a_bulk_call_writes_no_later_batch(proxy: LosingProxy) -> None:
    backend = RedisJsonBackend(proxy.url, prefix="attacks/close-bulk")
    write = script_sha(SCRIPTS["write"])
    batches: set[bytes] = set()  # by token key: redis-py repeats a batch whose connection close() cut

    def close_at_the_second(request: list[bytes]) -> bool:
        if request[0].upper() == b"EVALSHA" and request[1] == write:
            batches.add(request[5])
            if len(batches) == 2:
                backend.close()  # from another thread, while the bulk call is between batches
        return False

    proxy.lose(close_at_the_second, times=10)
    with pytest.raises(StoreError, match="closed"):
        backend.dump_many({f"k/{i:04d}": i for i in range(2500)})
    check = RedisJsonBackend(proxy.url, prefix="attacks/close-bulk")
    try:
        assert "k/2499" not in check and len(check) <= 2000  # the third batch was never sent
        assert len(batches) == 2
    finally:
        check.clear()
        check.close()


# -- 5. bad input in every argument ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:0/0",
        "redis://127.0.0.1:-1/0",
        "redis://127.0.0.1:6379/abc",
        "redis://127.0.0.1:6379/0?db=x",
        "redis://127.0.0.1:6379/0?socket_timeout=-1",
        "redis://127.0.0.1:6379/0?socket_timeout=0",
        "redis://127.0.0.1:6379/0?max_connections=0",
        "redis://127.0.0.1:6379/0?health_check_interval=x",
        "redis://127.0.0.1:6379/0?protocol=9",
        "redis://127.0.0.1:6379/0?prefix=app",  # an argument of the backend, not of redis-py
        "redis://127.0.0.1:6379/0?nonsense=1",
        "redis://h\r\nx:6379/0",
        "redis://127.0.0.1:6379/0\x1b[2J",
        "redis://[::1/0",
        "redis://hôte:6379/0",  # punycode for a host name
        "redis://127.0.0.1:/0",
        "redis://127.0.0.1:6379/0/1",
        "http://127.0.0.1:6379/0",
        b"redis://127.0.0.1:6379/0",
    ],
)
def test_a_bad_url_is_refused_before_any_io_naming_what_is_wrong(url: Any) -> None:
    with pytest.raises(ValueError) as caught:
        RedisJsonBackend(url)
    message = str(caught.value)
    assert message.isprintable() and "\x1b" not in message


@pytest.mark.parametrize(
    "options",
    [
        {"max_connections": 0},
        {"max_connections": True},
        {"socket_timeout": 0},
        {"socket_timeout": float("nan")},
        {"socket_timeout": 1e9},
        {"retries": -1},
        {"retries": 1.5},
        {"timeout": -1},
        {"keep_expired": float("inf")},
    ],
)
def test_bad_options_are_refused_before_any_io(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        RedisJsonBackend("redis://127.0.0.1:1/0", **options)


# -- 6 and 7. a paused server: a typed error in bounded time, then service -------------------


def test_a_paused_server_is_unavailable_within_the_socket_timeout_and_serves_after(small_server: str) -> None:
    raw = redis_py.Redis.from_url(small_server)
    pid = int(raw.info("server")["process_id"])
    backend = RedisJsonBackend(small_server, prefix="attacks/paused", socket_timeout=0.3, retries=1)
    backend["k"] = 1
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(backends.StoreUnavailableError, match="answered too late") as caught:
            backend.load("k")
        assert "TimeoutError" in str(caught.value) and "could not be reached" not in str(caught.value)

        async def native() -> None:
            twin = backend.aio()
            try:
                with pytest.raises(backends.StoreUnavailableError, match="answered too late"):
                    await twin.load("k")
                with pytest.raises(backends.StoreUnavailableError, match="answered too late"):
                    await asyncio.gather(twin.load("k"), twin.load("j"))
            finally:
                os.kill(pid, signal.SIGCONT)
                assert await twin.load("k") == 1  # and the twin serves again too
                await twin.aclose()

        asyncio.run(native())
        backend = RedisJsonBackend(small_server, prefix="attacks/paused", socket_timeout=0.3, retries=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert backend["k"] == 1
    backend.clear()
    backend.close()
    raw.close()


# -- 8 and 9. pressure, threads, fork ----------------------------------------------------------


def test_eight_threads_on_a_pool_of_two_lose_nothing(store: RedisJsonBackend) -> None:
    small = RedisJsonBackend(store.server_url or "", prefix=store.prefix, max_connections=2)
    rounds = 200 if LONG else 25

    def work(n: int) -> None:
        for i in range(rounds):
            small[f"t{n}/{i}"] = i
            assert small.pop(f"t{n}/{i}") == i
            small[f"t{n}/{i}"] = i

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 8 * rounds and store.load_many([f"t7/{i}" for i in range(rounds)]) == {
        f"t7/{i}": i for i in range(rounds)
    }
    small.close()


def test_a_forked_child_uses_the_backend_on_its_own_connections(store: RedisJsonBackend) -> None:
    store["k"] = 1  # the pool has connections now
    pid = os.fork()
    if pid == 0:  # the child: exit code says what it found
        try:
            code = 0 if store["k"] == 1 and store.pop("k") == 1 else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "k" not in store and store.dump("k", 2) and store["k"] == 2  # the parent's pool still works


# -- 10. secrets given by the environment and refused by the server ----------------------------


def test_a_password_from_the_environment_refused_by_the_server_is_never_told(
    small_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = redis_py.Redis.from_url(small_server)
    raw.config_set("requirepass", "the-right-one")  # this connection stays authenticated
    try:
        monkeypatch.setenv("REDISCLI_AUTH", SECRET)
        backend = RedisJsonBackend(small_server, prefix="attacks/auth", retries=0)
        with pytest.raises(backends.PermissionDeniedError) as caught:
            backend.load("k")
        told = "".join(traceback.format_exception(caught.value)) + repr(backend)
        assert SECRET not in told and "the-right-one" not in told
        backend.close()
    finally:
        raw.config_set("requirepass", "")
        raw.close()


# -- 2 and 4. our own structures retyped; bytes that are no text --------------------------------


def test_an_index_another_client_retyped_fails_every_call_with_store_error(
    store: RedisJsonBackend, raw: redis_py.Redis
) -> None:
    store["k"] = 1
    raw.delete(store.prefix + INDEX)
    raw.set(store.prefix + INDEX, b"not a sorted set")
    for call in (
        lambda: store.load("k"),
        lambda: "k" in store,
        lambda: len(store),
        lambda: list(store),
        lambda: store.dump("k", 2),
        lambda: store.pop("k"),
        lambda: store.load_many(["k"]),
    ):
        with pytest.raises(StoreError, match="WRONGTYPE"):
            call()
    raw.delete(store.prefix + INDEX, store.prefix + "k")


def test_stored_bytes_that_are_no_text_are_named_on_one_printable_line(
    redis: str, raw: redis_py.Redis
) -> None:
    text = backends.RedisTextBackend(redis, prefix="attacks/bytes")
    text["k"] = "fine"
    raw.set(text.prefix + "k", b"\xff\xfe\x1b]0;retitled\x07\n")
    for call in (lambda: text.load("k"), lambda: text.load_many(["k"])):
        with pytest.raises(backends.CorruptValueError) as caught:
            call()
        assert str(caught.value).isprintable()
    assert repr(RedisJsonBackend("redis://xn--hte-9na.example:6379/0", prefix="café")).isprintable()
    text.clear()
    text.close()


# -- 9. eight processes writing one store at once ---------------------------------------------


def _write_share(url: str, n: int) -> None:
    backend = RedisJsonBackend(url, prefix="attacks/eight")
    backend.dump_many({f"p{n}/{i:03d}": i for i in range(100)})
    for i in range(0, 100, 2):
        assert backend.pop(f"p{n}/{i:03d}") == i
    backend.close()


def test_eight_processes_writing_one_store_at_once_lose_nothing(redis: str) -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_share, args=(redis, n)) for n in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    backend = RedisJsonBackend(redis, prefix="attacks/eight")
    expected = sorted(f"p{n}/{i:03d}" for n in range(8) for i in range(1, 100, 2))
    assert list(backend) == expected and len(backend) == 400
    backend.clear()
    backend.close()


def test_index_members_another_program_added_that_are_no_keys_are_strays(
    store: RedisJsonBackend, raw: redis_py.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    store["ok"] = 1
    bad = [b"\xff", b"a//b", b"x\x1b]0;retitled\x07", b"/lead", "\ud800".encode("utf-8", "surrogatepass")]
    for member in bad:
        raw.zadd(store.prefix + INDEX, {member: 0})
        raw.set(store.prefix.encode() + member, b"1")
    assert list(store) == ["ok"] and len(store) == 1 and list(store.list("", "/")) == ["ok"]
    assert dict(store.items()) == {"ok": 1}
    strays = dict(store.strays())
    assert len(strays) == len(bad) and all(name.isprintable() for name in strays)
    assert strays["\\xff"] == "not UTF-8 text" and "a//b" in strays
    url = f"{store.server_url}?prefix={store.prefix}"
    from backends.cli import main

    assert main(["ls", url]) == 1  # strays named: ls says so in its exit code
    printed = capsys.readouterr()
    assert printed.out.split() == ["ok"] and printed.err.count("not a key") == len(bad)
    assert "\x1b" not in printed.err
    store.clear()  # the strays stay: another program's
    assert len(store) == 0 and len(dict(store.strays())) == len(bad)
    raw.delete(store.prefix + INDEX, *(store.prefix.encode() + member for member in bad))


# -- 1. a campaign: replies lost at random, every answer checked against a dict --------------


def _write_step(store: RedisJsonBackend, model: dict[str, int], op: int, key: str, value: int) -> None:
    """One write, its answer checked against the dict ``model`` (op 0-4)."""
    if op == 0:
        store[key] = value
        model[key] = value
    elif op == 1:
        assert store.dump(key, value, if_absent=True) is (key not in model)
        model.setdefault(key, value)
    elif op == 2:
        assert store.pop(key, None) == model.pop(key, None)
    elif op == 3:
        assert store.delete(key) is (model.pop(key, None) is not None)
    else:
        found = store.stat(key)
        assert (found is None) is (key not in model)
        if found is not None:
            assert store.dump(key, value, if_match=found.etag) is True
            model[key] = value


def _other_step(store: RedisJsonBackend, model: dict[str, int], op: int, key: str, wanted: list[str]) -> None:
    """One read or bulk call, its answer checked against ``model`` (op 5-9)."""
    if op == 5:
        assert store.load(key) == model.get(key) and (key in store) is (key in model)
    elif op == 6:
        assert list(store) == sorted(model) and len(store) == len(model)
    elif op == 7:
        assert store.load_many(wanted) == {k: model[k] for k in wanted if k in model}
    elif op == 8:
        assert store.delete_many(wanted) == sum(model.pop(k, None) is not None for k in wanted)
    else:
        store.dump_many(dict.fromkeys(wanted, len(model)))
        model.update(dict.fromkeys(wanted, len(model)))


def test_replies_lost_at_random_never_change_an_answer(proxy: LosingProxy) -> None:
    import random

    chance = random.Random(23)
    handshake = {b"HELLO", b"CLIENT", b"AUTH", b"SELECT", b"PING"}
    proxy.lose(lambda request: request[0].upper() not in handshake and chance.random() < 0.05, times=10**9)
    store = RedisJsonBackend(proxy.url, prefix="attacks/campaign", retries=5)
    model: dict[str, int] = {}
    keys = [f"k{i}" for i in range(8)]
    steps = random.Random(1)
    try:
        for step in range(3000 if LONG else 300):
            key, op, wanted = steps.choice(keys), steps.randrange(10), steps.sample(keys, 3)
            if op < 5:
                _write_step(store, model, op, key, step)
            else:
                _other_step(store, model, op, key, wanted)
        assert proxy.lost > 10
    finally:
        store.clear()
        store.close()


def test_replies_lost_at_random_never_change_an_answer_of_the_twin(proxy: LosingProxy) -> None:
    import random

    chance = random.Random(5)
    handshake = {b"HELLO", b"CLIENT", b"AUTH", b"SELECT", b"PING"}
    proxy.lose(lambda request: request[0].upper() not in handshake and chance.random() < 0.05, times=10**9)
    store = RedisJsonBackend(proxy.url, prefix="attacks/campaign-aio", retries=5)
    keys = [f"k{i}" for i in range(8)]

    async def main() -> None:
        twin, model, steps = store.aio(), dict[str, int](), random.Random(2)
        try:
            for step in range(1500 if LONG else 150):
                key, op, wanted = steps.choice(keys), steps.randrange(6), steps.sample(keys, 3)
                if op == 0:
                    await twin.dump(key, step)
                    model[key] = step
                elif op == 1:
                    assert await twin.dump(key, step, if_absent=True) is (key not in model)
                    model.setdefault(key, step)
                elif op == 2:
                    assert await twin.pop(key, None) == model.pop(key, None)
                elif op == 3:
                    assert await twin.delete(key) is (model.pop(key, None) is not None)
                elif op == 4:  # loads awaited together: one batch
                    assert await asyncio.gather(*(twin.load(k) for k in wanted)) == [
                        model.get(k) for k in wanted
                    ]
                else:
                    assert await twin.len() == len(model) and await twin.contains(key) is (key in model)
            assert proxy.lost > 5
            await twin.clear()
        finally:
            await twin.aclose()

    asyncio.run(main())
