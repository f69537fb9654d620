"""The async twin and closing, attacked (issue #25, ATTACKS.md): options, close, loops, bad input,
faults, secrets, pressure and fork, through the public API on real stores."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LONG
from servers import S3Target

import backends
from backends import (
    BaseBackend,
    FileSystemJsonBackend,
    JsonCache,
    LockError,
    MemoryCache,
    RedisBackend,
    RedisJsonBackend,
    S3JsonBackend,
    SqliteJsonBackend,
    StoreError,
    TieredBackend,
    VolatileBackend,
)
from backends.aio import NOT_MIRRORED, AsyncBackend, twin_class
from backends.redis.aio import AsyncRedisBackend
from backends.s3.aio import AsyncS3Backend
from backends.s3.store import S3Backend

STORES = ["memory", "folder", "jsoncache", "sqlite", "tier", "s3-boto3", "s3-obstore"]


def make(name: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> BaseBackend[Any, Any]:
    """A fresh backend of the kind ``name``, on a real store (moto for S3)."""
    if name == "memory":
        return VolatileBackend()
    if name == "folder":
        return FileSystemJsonBackend(tmp_path / "folder", **options)
    if name == "jsoncache":
        return JsonCache(tmp_path / "cache", timeout=300, **options)
    if name == "sqlite":
        return SqliteJsonBackend(tmp_path / "kv.db", **options)
    if name == "tier":
        return TieredBackend(JsonCache(tmp_path / "near"), FileSystemJsonBackend(tmp_path / "far"))
    target: S3Target = request.getfixturevalue("moto" if name == "s3-boto3" else "moto_server")
    engine = "obstore" if name == "s3-obstore" else "boto3"  # s3-wire: boto3 on moto's server
    return S3JsonBackend(
        target.bucket, prefix=f"{tmp_path.name}/", engine=engine, **target.options(), **options
    )


# -- every option of a sync call is an option of its twin ---------------------------------------


def _backend_classes() -> list[type[BaseBackend[Any, Any]]]:
    found = (getattr(backends, name) for name in backends.__all__)
    return [cls for cls in found if isinstance(cls, type) and issubclass(cls, BaseBackend)]


def _parameters(call: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(call).parameters.values()]


def _mismatches(base: type[AsyncBackend[Any]], cls: type[BaseBackend[Any, Any]]) -> list[str]:
    twin = twin_class(base, cls)
    wrong = []
    for name in dir(cls):
        sync = getattr(cls, name)
        if name.startswith("_") or name in NOT_MIRRORED or not callable(sync) or isinstance(sync, type):
            continue
        mirror = getattr(twin, name, None)
        if mirror is None or _parameters(sync) != _parameters(mirror):
            wrong.append(f"{cls.__name__}.{name}{inspect.signature(sync)} vs {base.__name__}: {mirror}")
    return wrong


def _twins_of(cls: type[BaseBackend[Any, Any]]) -> list[type[AsyncBackend[Any]]]:
    if issubclass(cls, RedisBackend):
        return [AsyncBackend, AsyncRedisBackend]
    if issubclass(cls, S3Backend):
        return [AsyncBackend, AsyncS3Backend]  # the thread pool's (boto3), the native one's (obstore)
    return [AsyncBackend]


def test_every_public_call_of_every_backend_has_a_twin_with_its_parameters() -> None:
    """Parameters and defaults of each public sync call equal its twin's (Redis, S3: both twins)."""
    classes = _backend_classes()
    assert len(classes) >= 20
    wrong = [mismatch for cls in classes for base in _twins_of(cls) for mismatch in _mismatches(base, cls)]
    assert wrong == []


def test_the_signature_check_fails_when_a_twin_lags_behind() -> None:
    """A sync option a native twin call lacks is caught: the check above can fail."""

    class Newer(VolatileBackend):
        def dump(self, key: str, value: Any, *, if_absent: bool = False, colour: str = "") -> bool:
            return super().dump(key, value, if_absent=if_absent)

    class Native(AsyncBackend[Any]):
        async def dump(self, key: str, value: Any, *, if_absent: bool = False) -> bool:
            return True

    assert _mismatches(AsyncBackend, Newer) == []  # passed on: the twin takes colour=
    assert [line.split("(")[0] for line in _mismatches(Native, Newer)] == ["Newer.dump"]


def test_the_twins_dump_takes_timeout_on_caches(tmp_path: Path) -> None:
    """The issue's call: ``JsonCache(p, timeout=300).aio().dump("k", 1, timeout=30)``, and its siblings."""
    now = [1_000_000.0]

    async def main(store: BaseBackend[Any, Any]) -> None:
        store.clock = lambda: now[0]  # type: ignore[method-assign]
        twin = store.aio()
        assert await twin.dump("k", 1, timeout=30) is True
        assert await twin.dump("forever", 2, timeout=None) is True
        assert await twin.dump("k", 9, if_absent=True, timeout=5) is False
        now[0] += 31
        assert await twin.load("k") is None and await twin.load("forever") == 2
        with pytest.raises(ValueError, match="timeout"):
            await twin.dump("k", 1, timeout=-1)  # the sync call's error, nothing written
        assert not await twin.contains("k")
        with pytest.raises(TypeError):
            await twin.dump("k", 1, colour="red")  # an option no store has: the sync TypeError
        await twin.aclose()

    for store in (
        JsonCache(tmp_path / "c", timeout=300),
        SqliteJsonBackend(tmp_path / "s.db"),
        MemoryCache(),
    ):
        asyncio.run(main(store))


def test_the_twins_dump_takes_if_match_on_s3(moto: S3Target) -> None:
    async def main() -> None:
        async with S3JsonBackend(moto.bucket, prefix="ifm/", **moto.options()).aio() as twin:
            await twin.dump("k", 1)
            etag = (await twin.stat("k")).etag
            assert await twin.dump("k", 2, if_match='"nope"') is False
            assert await twin.dump("k", 3, if_match=etag) is True
            assert await twin.load("k") == 3
            with pytest.raises(TypeError, match="exclusive"):
                await twin.dump("k", 4, if_absent=True, if_match=etag)

    asyncio.run(main())


def test_the_redis_twins_dump_takes_if_match_and_timeout(redis: str) -> None:
    async def main() -> None:
        store = RedisJsonBackend(redis, prefix="aio-opts:")
        twin = store.aio()
        assert isinstance(twin, AsyncRedisBackend)
        await twin.dump("k", 1)
        etag = (await twin.stat("k")).etag
        assert await twin.dump("k", 2, if_match="nope") is False
        assert await twin.dump("k", 3, if_match=etag, timeout=60) is True
        assert await twin.load("k") == 3 and await twin.expires("k") is not None
        await twin.clear()
        await twin.aclose()

    asyncio.run(main())


# -- closing ------------------------------------------------------------------------------------------


def _every_call(twin: AsyncBackend[Any]) -> dict[str, Callable[[], Any]]:
    """One awaitable (or async listing) per public call of a twin, with valid arguments."""

    async def listed(iterator: Any) -> list[Any]:
        return [entry async for entry in iterator]

    async def locked() -> None:
        async with twin.lock("k"):
            pass  # ok: the call under test is the acquire and release themselves

    return {
        "load": lambda: twin.load("k"),
        "get": lambda: twin.get("k"),
        "dump": lambda: twin.dump("k", 1),
        "delete": lambda: twin.delete("k"),
        "contains": lambda: twin.contains("k"),
        "pop": lambda: twin.pop("k", None),
        "setdefault": lambda: twin.setdefault("k", 1),
        "load_if_changed": lambda: twin.load_if_changed("k"),
        "load_many": lambda: twin.load_many(["k"]),
        "dump_many": lambda: twin.dump_many({"k": 1}),
        "delete_many": lambda: twin.delete_many(["k"]),
        "update": lambda: twin.update({"k": 1}),
        "clear": twin.clear,
        "len": twin.len,
        "keys": lambda: listed(twin.keys()),
        "list": lambda: listed(twin.list("")),
        "items": lambda: listed(twin.items()),
        "values": lambda: listed(twin.values()),
        "lock": locked,
    }


@pytest.mark.parametrize("name", STORES)
def test_a_closed_twin_refuses_every_call_with_store_error(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """After aclose() (twice), every twin call raises StoreError, never the pool's RuntimeError;
    the backend is closed too, and its sync calls raise StoreError (memory holds nothing to close)."""
    store = make(name, tmp_path, request)

    async def main() -> None:
        twin = store.aio()
        await twin.dump("k", 1)
        await twin.aclose()
        await twin.aclose()  # a second close does nothing
        assert twin.closed
        for call, start in _every_call(twin).items():
            with pytest.raises(StoreError, match="closed") as caught:
                await start()
            assert not any(isinstance(e, RuntimeError) for e in _chain(caught.value)), call

    asyncio.run(main())
    if name != "memory":
        assert store.closed
        with pytest.raises(StoreError, match="closed"):
            store.load("k")
        with pytest.raises(StoreError, match="closed"):
            store.dump("k", 2)


@pytest.mark.parametrize("name", ["folder", "jsoncache", "sqlite", "tier", "s3-boto3"])
def test_a_twin_made_before_the_backend_closed_refuses_too(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = make(name, tmp_path, request)
    twin = store.aio()
    store.close()

    async def main() -> None:
        assert twin.closed
        for start in _every_call(twin).values():
            with pytest.raises(StoreError, match="closed"):
                await start()
        await twin.aclose()  # closing what is closed: nothing to do, no error

    asyncio.run(main())


def test_aclose_lets_calls_in_flight_finish_then_closes(tmp_path: Path) -> None:
    """Calls started before aclose() run to their end on the open backend; the rest are refused."""
    store = FileSystemJsonBackend(tmp_path)
    started, go = threading.Event(), threading.Event()
    real = store._dump

    def held_dump(key: str, data: bytes, if_absent: bool) -> bool:
        started.set()
        go.wait(10)
        return real(key, data, if_absent)

    store._dump = held_dump  # type: ignore[method-assign]  # a hook that holds the write open

    async def main() -> None:
        twin = store.aio(max_workers=2)
        writing = asyncio.ensure_future(twin.dump("slow", {"whole": True}))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        closing = asyncio.ensure_future(twin.aclose())
        await asyncio.sleep(0)  # aclose() has begun: new calls are refused
        with pytest.raises(StoreError, match="closed"):
            await twin.load("slow")
        assert not store.closed  # the write in flight still has its backend
        go.set()
        assert await writing is True
        await closing
        assert store.closed

    asyncio.run(main())
    with FileSystemJsonBackend(tmp_path) as reopened:
        assert reopened.load("slow") == {"whole": True}
        assert list(reopened) == ["slow"] and list(reopened.strays()) == []  # no temporary file left


def test_aclose_releases_a_lock_held_through_the_twin(tmp_path: Path) -> None:
    """A lock still held when aclose() runs is released (no leak); its body's exit says so."""
    store = FileSystemJsonBackend(tmp_path)

    async def main() -> None:
        twin = store.aio()
        with pytest.raises(LockError, match="aclose"):
            async with twin.lock("k", timeout=0):
                await twin.aclose()

    asyncio.run(main())
    with FileSystemJsonBackend(tmp_path) as again, again.lock("k", timeout=0):
        pass  # free at once: not leaked until its lease ends


@pytest.mark.parametrize("name", ["folder", "sqlite", "tier", "s3-boto3"])
def test_cancelled_calls_at_close_leak_no_lock_and_no_half_write(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Lock tries and writes, cancelled while aclose() runs: every lock is free, every value whole."""
    store = make(name, tmp_path, request)
    value = {"blob": "x" * 50_000}
    count = 40 if LONG or not name.startswith("s3") else 12

    async def main() -> None:
        twin = store.aio(max_workers=4)

        async def locked(i: int) -> None:
            async with twin.lock(f"lock{i % 5}", timeout=5):
                await twin.dump(f"w{i}", value)

        tasks = [asyncio.ensure_future(locked(i)) for i in range(count)]
        tasks += [asyncio.ensure_future(twin.dump(f"d{i}", value)) for i in range(count)]
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(twin.aclose())
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await closing
        for result in results:
            assert result is None or isinstance(result, (bool, asyncio.CancelledError, StoreError, LockError))

    asyncio.run(main())
    again = make(name, tmp_path, request)
    for i in range(5):
        with again.lock(f"lock{i}", timeout=0):
            pass  # ok: acquiring at once (timeout=0) is the assertion: no lock leaked at close
    assert all(again.load(key) == value for key in again)
    again.close()


# -- close between the batches of a bulk call ----------------------------------------------------------

N = 1200  # a batch of 1,000, and one more


class CloseAfter:
    """Closes ``store`` from another thread once ``count`` requests completed (then waits for it
    to be marked closed, so the call goes on against a closed backend, deterministically)."""

    def __init__(self, count: int) -> None:
        self.count, self.seen, self.lock = count, 0, threading.Lock()
        self.store: BaseBackend[Any, Any] | None = None

    def __call__(self, **kwargs: Any) -> None:
        with self.lock:
            self.seen += 1
            if self.seen != self.count:
                return
        assert self.store is not None
        store = self.store
        threading.Thread(target=store.close).start()  # close() waits for this very request
        for _ in range(10_000):  # bounded: close() marks the backend closed before it waits
            if store.closed:
                return
            threading.Event().wait(0.001)
        raise AssertionError("close() never marked the backend closed")


BULK = [("sync", "dump_many"), ("aio", "load_many")] + (
    [("aio", "dump_many"), ("sync", "load_many")] if LONG else []
)


@pytest.mark.parametrize(("api", "bulk"), BULK)
def test_s3_close_between_batches_is_a_store_error_and_sends_no_more(
    moto: S3Target, bulk: str, api: str
) -> None:
    """close() when the first 1,000 requests are done: StoreError (not RuntimeError); the later
    batch is never sent: exactly the first batch was written (a load of absent keys sends its GETs too)."""
    store = S3JsonBackend(moto.bucket, prefix=f"{bulk}-{api}/", client=moto.new_client())
    hook = CloseAfter(1000)
    hook.store = store
    event = "after-call.s3.PutObject" if bulk == "dump_many" else "after-call.s3.GetObject"
    store.client.meta.events.register(event, hook)
    keys = [f"k{i:05d}" for i in range(N)]

    def call() -> Any:
        if bulk == "dump_many":
            return store.dump_many({key: 1 for key in keys})
        return store.load_many(keys)

    async def twin_call() -> Any:
        twin = AsyncBackend(store)
        return await (
            twin.dump_many({key: 1 for key in keys}) if bulk == "dump_many" else twin.load_many(keys)
        )

    with pytest.raises(StoreError, match="closed") as caught:
        call() if api == "sync" else asyncio.run(twin_call())
    assert not any(isinstance(e, RuntimeError) for e in _chain(caught.value))
    assert hook.seen == 1000  # no request of a later batch was sent
    if bulk == "dump_many":
        listed = moto.client.list_objects_v2(Bucket=moto.bucket, Prefix=f"{bulk}-{api}/")
        assert listed["KeyCount"] == 1000  # the first batch, whole; nothing after close


class ClosingFolder(FileSystemJsonBackend):
    """A folder that closes itself after ``after`` single reads or writes (a test hook for timing)."""

    after = 100
    done = 0

    def _load(self, key: str) -> Any:
        self._tick()
        return super()._load(key)

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        self._tick()
        return super()._dump(key, data, if_absent)

    def _tick(self) -> None:
        if self.done == self.after:
            self.close()
        self.done += 1


class ClosingSqlite(SqliteJsonBackend):
    """SQLite closing itself (as another thread's close() would) once ``closing`` is set and the
    first page of rows of a read was fetched: its reads run through a connection that closes the
    store after its first statement."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.closing = False
        reader = self._reader

        def closing_reader() -> Any:
            db = reader()
            return db if db is None or not self.closing else _CloseAfterFirst(db, self)

        self._reader = closing_reader  # type: ignore[method-assign]


class _CloseAfterFirst:
    def __init__(self, db: Any, store: SqliteJsonBackend) -> None:
        self.db, self.store = db, store

    def execute(self, *args: Any) -> Any:
        rows = self.db.execute(*args)
        self.store.close()
        return rows


@pytest.mark.parametrize("api", ["sync", "aio"])
def test_local_stores_closed_mid_bulk_raise_store_error_and_write_no_more(tmp_path: Path, api: str) -> None:
    keys = [f"k{i:05d}" for i in range(N)]

    def run(call: Callable[[], Any], store: BaseBackend[Any, Any]) -> None:
        async def twin() -> Any:
            return await call()

        with pytest.raises(StoreError, match="closed") as caught:
            call() if api == "sync" else asyncio.run(twin())
        assert not any(isinstance(e, RuntimeError) for e in _chain(caught.value))

    folder = ClosingFolder(tmp_path / "f")
    target = folder if api == "sync" else folder.aio()
    run(lambda: target.dump_many({key: 1 for key in keys}), folder)
    with FileSystemJsonBackend(tmp_path / "f") as after:
        assert len(after) == 100  # written before close; nothing after

    sqlite = ClosingSqlite(tmp_path / "s.db")
    sqlite.dump_many({key: 1 for key in keys})
    sqlite.closing = True
    target = sqlite if api == "sync" else sqlite.aio()
    run(lambda: target.load_many(keys), sqlite)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


# -- two event loops, pressure, fork ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["folder", "sqlite", "s3-boto3", "tier"])
def test_one_twin_from_two_event_loops_in_two_threads(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each loop works (the thread-pool twin holds no loop); nothing hangs; locks still exclude."""
    store = make(name, tmp_path, request)
    twin = store.aio(max_workers=4)
    rounds = 200 if LONG else 30
    errors: list[BaseException] = []
    inside = [0]

    async def worker(tag: str) -> None:
        for i in range(rounds):
            await twin.dump(f"{tag}/{i}", i)
            assert await twin.load(f"{tag}/{i}") == i
            async with twin.lock("shared", timeout=30):
                inside[0] += 1
                assert inside[0] == 1
                await asyncio.sleep(0)
                inside[0] -= 1

    def thread(tag: str) -> None:
        try:
            asyncio.run(worker(tag))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(tag,)) for tag in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert len(store.load_many([f"{tag}/{i}" for tag in "ab" for i in range(rounds)])) == 2 * rounds
    asyncio.run(twin.aclose())


def test_many_concurrent_calls_beyond_the_pool_are_bounded_and_lose_nothing(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path)
    count = 2000 if LONG else 300
    threads_seen: set[str] = set()
    real = store._dump

    def noting(key: str, data: bytes, if_absent: bool) -> bool:
        threads_seen.add(threading.current_thread().name)
        return real(key, data, if_absent)

    store._dump = noting  # type: ignore[method-assign]

    async def main() -> None:
        async with store.aio(max_workers=3) as twin:
            results = await asyncio.gather(*(twin.dump(f"k{i}", i) for i in range(count)))
            assert results == [True] * count
            loaded = await asyncio.gather(*(twin.load(f"k{i}") for i in range(count)))
            assert loaded == list(range(count))

    asyncio.run(main())
    assert len(threads_seen) <= 3


@pytest.mark.parametrize("name", ["folder", "sqlite", "s3-wire", "s3-obstore"])
def test_a_twin_used_before_fork_works_in_the_child(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The child has none of the parent's threads: its calls get fresh ones instead of hanging."""
    store = make(name, tmp_path, request)
    twin = store.aio(max_workers=2)

    async def use(tag: str) -> None:
        await asyncio.gather(*(twin.dump(f"{tag}{i}", i) for i in range(8)))  # threads now exist, idle
        assert await twin.load(f"{tag}3") == 3
        keys = [f"{tag}{i}" for i in range(8)]
        assert len(await twin.load_many(keys)) == 8  # and the store's own pool (S3's), idle too

    asyncio.run(use("parent"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(20)  # a hang ends the child, and fails the test
        try:
            asyncio.run(use("child"))
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load("child7") == 7
    asyncio.run(twin.aclose())


# -- bad input in every argument: the sync call's error, before any I/O -------------------------------

BAD: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("load", (123,), {}),
    ("load", ("",), {}),
    ("load", ("a\nb/../c" * 200,), {}),
    ("get", (None,), {}),
    ("dump", (1, 1), {}),
    ("dump", ("k", object()), {}),
    ("dump", ("k", float("nan")), {}),
    ("dump", ("k", 1), {"colour": "red"}),
    ("dump", ("k", 1), {"timeout": -1}),
    ("delete", (b"k",), {}),
    ("pop", (5,), {}),
    ("setdefault", ("", 1), {}),
    ("load_if_changed", (5,), {}),
    ("load_many", ("ab",), {}),  # one str is no list of keys (the twin once read it as "a", "b")
    ("load_many", (None,), {}),
    ("load_many", ([1],), {}),
    ("delete_many", ("ab",), {}),  # ... and once deleted "a" and "b"
    ("delete_many", (["ok", ""],), {}),
    ("dump_many", ({"ok": 1, "": 2},), {}),
    ("dump_many", ({"ok": 1, "bad": object()},), {}),
    ("dump_many", ([("k",)],), {}),
    ("dump_many", (5,), {}),
    ("update", ({"": 1},), {}),
    ("stat", (5,), {}),
    ("lock", ("",), {}),
    ("lock", ("k",), {"ttl": 0}),
    ("lock", ("k",), {"timeout": -1}),
    ("list", (5,), {}),
]


def _sync_outcome(store: BaseBackend[Any, Any], name: str, args: Any, kwargs: Any) -> Any:
    try:
        result = getattr(store, name)(*args, **kwargs)
        return ("ok", list(result) if isinstance(result, Iterator) else result)
    except Exception as exc:
        return _error(exc)


async def _twin_outcome(twin: AsyncBackend[Any], name: str, args: Any, kwargs: Any) -> Any:
    try:
        result = getattr(twin, name)(*args, **kwargs)
        if hasattr(result, "__anext__"):
            return ("ok", [entry async for entry in result])
        return ("ok", await result) if inspect.isawaitable(result) else ("ok", None)
    except Exception as exc:
        return _error(exc)


def _error(exc: Exception) -> tuple[type[Exception], str]:
    # A BackendError's message (backend, operation, key, reason) is the same; Python's own
    # TypeError for a wrong argument names the function, which a native twin call is not.
    return (type(exc), str(exc) if isinstance(exc, backends.BackendError) else "")


def _check_bad_input(store: BaseBackend[Any, Any], sent: list[str]) -> None:
    store.dump_many({"a": 1, "b": 2, "ok": 3})
    before = dict(store.items())

    async def main() -> None:
        twin = store.aio()
        sent.clear()
        accepted = []
        for call, args, kwargs in BAD:
            expected = _sync_outcome(store, call, args, kwargs)
            assert await _twin_outcome(twin, call, args, kwargs) == expected, call
            assert expected[0] is not RuntimeError, call
            if expected[0] == "ok":
                accepted.append(call)
        if not accepted:  # every case refused, by both APIs, before any request
            assert sent == [] and dict(store.items()) == before
        else:  # the memory store keeps any object and NaN: all it took is a dump
            assert set(accepted) <= {"dump", "dump_many", "lock"}, accepted
        await twin.clear()
        await twin.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("name", ["memory", "folder", "jsoncache", "sqlite", "tier", "s3-boto3"])
def test_bad_input_gets_the_sync_calls_error_through_the_twin_and_changes_nothing(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = make(name, tmp_path, request)
    sent: list[str] = []
    client = getattr(store, "client", None)
    if client is not None:
        client.meta.events.register_first("before-send.s3", lambda **kw: sent.append("request"))
    _check_bad_input(store, sent)


def test_bad_input_of_the_redis_twin_is_the_sync_calls_error(redis: str) -> None:
    _check_bad_input(RedisJsonBackend(redis, prefix="aio-bad:"), [])


# -- faults and lost replies on S3, through the twin: the sync call's answer; no secret in a chain ------

#: the proxy's faults: the first three by default, all with BACKENDS_LONG=1
FAULTS = ["reset", "error500", "lose", "stall", "truncate", "slowdown", "cut500"]
SECRETS = ("testing-secret-never-shown", "planted-session-token-aio")


@pytest.mark.parametrize("engine", ["boto3", "obstore"])
def test_s3_faults_through_the_twin_are_the_sync_calls_errors(moto_server: S3Target, engine: str) -> None:
    from servers import Faults, Proxy

    with Proxy(moto_server.endpoint_url) as proxy:
        options = {**moto_server.options(), "endpoint_url": proxy.endpoint, "session_token": SECRETS[1]}
        store = S3JsonBackend(
            moto_server.bucket,
            prefix=f"aio-faults-{engine}/",
            engine=engine,
            retries=0,
            timeout=0.5,
            **options,
        )
        twin = store.aio()
        store.dump("present", 1)

        def calls(tag: str) -> list[tuple[str, Callable[[Any], Any]]]:
            return [
                ("dump", lambda api: api.dump(f"{tag}-new", 1, if_absent=True)),
                ("load", lambda api: api.load("present")),
                ("delete", lambda api: api.delete(f"{tag}-absent")),
            ][: 3 if LONG else 2]

        async def twin_outcome(action: Callable[[Any], Any]) -> Any:
            try:
                return ("ok", await action(twin))
            except Exception as exc:
                return (type(exc), exc)

        for fault in FAULTS if LONG else FAULTS[:3]:
            for label, action in calls(f"{fault}-sync"):
                proxy.faults = Faults(plan=[fault], stall_seconds=0.8)
                try:
                    sync: Any = ("ok", action(store))
                except Exception as exc:
                    sync = (type(exc), exc)
                proxy.faults = Faults(plan=[fault], stall_seconds=0.8)
                twin_action = next(c[1] for c in calls(f"{fault}-twin") if c[0] == label)
                aio = asyncio.run(twin_outcome(twin_action))
                assert aio[0] == sync[0], (fault, label, sync, aio)
                for outcome in (sync, aio):
                    if isinstance(outcome[1], BaseException):
                        text = "".join(traceback.format_exception(outcome[1]))
                        assert not any(secret in text or secret in repr(outcome[1]) for secret in SECRETS)
        proxy.faults = Faults()
        asyncio.run(twin.clear())
        asyncio.run(twin.aclose())


def test_listings_of_any_public_call_are_async_iterators_a_page_per_hop(tmp_path: Path) -> None:
    """``stat_many`` and ``strays`` (generators in the sync API) are ``async for``, as ``list``."""
    store = FileSystemJsonBackend(tmp_path)
    store.dump_many({f"k{i}": i for i in range(5)})
    (tmp_path / "not a key\n").write_text("x")  # a stray

    async def main() -> None:
        async with store.aio() as twin:
            assert [s.key async for s in twin.stat_many("")] == [s.key for s in store.stat_many("")]
            assert [s async for s in twin.strays()] == list(store.strays()) != []
            assert sorted([v async for v in twin.values()]) == list(range(5))

    asyncio.run(main())


def test_aclose_from_one_loop_while_another_loop_calls(tmp_path: Path) -> None:
    """Loop B's calls either finish or raise StoreError; nothing hangs, no RuntimeError."""
    store = FileSystemJsonBackend(tmp_path)
    twin = store.aio(max_workers=2)
    outcomes: list[object] = []
    running = threading.Event()

    async def caller() -> None:
        for i in range(10_000):
            try:
                await twin.dump(f"k{i % 50}", i)
            except StoreError as exc:
                outcomes.append(exc)
                return
            running.set()
        outcomes.append("never closed")

    thread = threading.Thread(target=lambda: asyncio.run(caller()))
    thread.start()
    assert running.wait(30)
    asyncio.run(twin.aclose())
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcomes) == 1 and isinstance(outcomes[0], StoreError) and "closed" in str(outcomes[0])
    with FileSystemJsonBackend(tmp_path) as again:
        assert list(again.strays()) == []  # no write torn by the close


@pytest.mark.parametrize("name", ["folder", "sqlite"])
def test_processes_writing_one_store_through_their_twins_lose_nothing(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """8 forked processes (4 by default), each awaiting concurrent dumps on one store: every value lands."""
    store = make(name, tmp_path, request)
    store.dump("ready", True)  # the store exists (SQLite: its schema and WAL) before the children start
    processes, each = (8, 100) if LONG else (4, 25)

    async def write(child: int) -> None:
        async with make(name, tmp_path, request).aio(max_workers=4) as twin:
            assert all(await asyncio.gather(*(twin.dump(f"p{child}/{i}", i) for i in range(each))))

    children = []
    for child in range(processes):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.alarm(30)
            try:
                asyncio.run(write(child))
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0] * processes
    keys = [f"p{child}/{i}" for child in range(processes) for i in range(each)]
    assert store.load_many(keys) == {f"p{child}/{i}": i for child in range(processes) for i in range(each)}
    store.close()


@pytest.mark.parametrize("engine", ["boto3", "obstore"])
def test_secrets_from_the_environment_stay_out_of_the_twins_errors(
    moto_server: S3Target, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servers import CREDENTIALS, Faults, Proxy

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS[0])
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRETS[1])
    with Proxy(moto_server.endpoint_url) as proxy:
        store = S3JsonBackend(
            moto_server.bucket, prefix="aio-env/", endpoint_url=proxy.endpoint, addressing_style="path",
            engine=engine, retries=0,
        )  # fmt: skip

        async def main() -> list[BaseException]:
            errors: list[BaseException] = []
            async with store.aio() as twin:
                for fault in ("error500", "reset", "lose"):
                    proxy.faults = Faults(plan=[fault])
                    try:
                        await twin.load("k")
                    except StoreError as exc:
                        errors.append(exc)
            return errors

        errors = asyncio.run(main())
    assert len(errors) == 3
    for error in errors:
        text = "".join(traceback.format_exception(error)) + repr(error) + repr(store)
        assert not any(secret in text for secret in SECRETS)
