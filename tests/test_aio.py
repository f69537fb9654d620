"""backends.aio: the async twin of every backend, its locks and cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

import backends
from backends import FileSystemJsonBackend, LockTimeoutError, VolatileBackend
from backends.aio import PAGE, AsyncBackend
from backends.testing import StoreCase
from backends.testing.blocking import Blocking
from backends.testing.parity import check_parity


def test_the_async_twin_of_every_backend_behaves_like_a_dict(case: StoreCase, tmp_path: Path) -> None:
    """The parity machine, unchanged, through AsyncBackend (fewer examples: it is the same store)."""
    twin = dataclasses.replace(
        case,
        name=f"aio-{case.name}",
        make=lambda folder: Blocking(case.make(folder).aio()),  # type: ignore[arg-type,return-value]
    )
    # An eighth of a local store's examples (the same store underneath), 4 for a server's.
    check_parity(twin, tmp_path, examples=max(4, case.examples // (10 if case.remote else 8)))


async def _roundtrip(backend: AsyncBackend[Any]) -> None:
    assert await backend.dump("users/42", {"name": "Ada"}) is True
    assert await backend.dump("users/42", {}, if_absent=True) is False
    assert await backend.load("users/42") == {"name": "Ada"}
    assert await backend.load("absent", "fallback") == "fallback"
    assert await backend.contains("users/42") and not await backend.contains("absent")
    await backend.dump_many({f"k/{i:04d}": i for i in range(PAGE + 5)})
    assert await backend.len() == PAGE + 6
    assert [key async for key in backend.list("k/", None)] == [f"k/{i:04d}" for i in range(PAGE + 5)]
    assert [key async for key in backend.list("")] == ["k/", "users/"]
    assert len([key async for key in backend]) == PAGE + 6
    assert dict([pair async for pair in backend.items()])["k/0007"] == 7
    assert await backend.load_many(["k/0001", "nope"]) == {"k/0001": 1}
    assert await backend.delete_many(["k/0001", "nope"]) == 1
    assert await backend.pop("users/42") == {"name": "Ada"}
    assert await backend.setdefault("s", [1]) == [1]
    assert (await backend.stat("s")).size == 3  # any other public call, awaited
    await backend.clear()
    assert await backend.len() == 0


def test_every_call_is_awaitable(tmp_path: Path) -> None:
    async def main() -> None:
        async with FileSystemJsonBackend(tmp_path).aio() as backend:
            await _roundtrip(backend)
        assert backend.backend.closed

    asyncio.run(main())


def test_a_listing_is_a_page_per_hop_and_released_when_left_early(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path)
    store.dump_many({f"k{i:05d}": i for i in range(3 * PAGE)})
    twin = store.aio(max_workers=1)
    hops = 0
    run = twin._run

    async def counted(call: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await run(call, *args, **kwargs)

    twin._run = counted  # type: ignore[method-assign]

    async def main() -> None:
        seen = [key async for key in twin]
        assert len(seen) == 3 * PAGE and hops == 1 + 4 + 1  # start, 3 full pages, the empty one, close
        async for _ in twin.list("", None):
            break  # the listing's folder is closed by the aclose of the generator
        await twin.aclose()

    asyncio.run(main())


def test_async_locks_exclude_each_other_and_wait_without_threads(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path).aio(max_workers=2)
    order: list[str] = []

    async def worker(name: str) -> None:
        async with backend.lock("job", timeout=5):
            order.append(f"{name} in")
            await asyncio.sleep(0)  # let the others try while it is held
            order.append(f"{name} out")

    async def main() -> None:
        # 20 waiters on a pool of 2 threads: waiting parks no thread between tries.
        await asyncio.gather(*(worker(str(n)) for n in range(20)))
        async with backend.lock("held", timeout=5):
            with pytest.raises(LockTimeoutError):
                await backend.lock("held", timeout=0.05).acquire()
        await backend.aclose()

    asyncio.run(main())
    assert len(order) == 40
    assert all(order[i].endswith(" in") and order[i + 1] == order[i][:-3] + " out" for i in range(0, 40, 2))


def test_a_cancelled_acquire_never_leaks_the_lock() -> None:
    store = VolatileBackend()
    backend = store.aio()
    trying, go_on = threading.Event(), threading.Event()
    lock = backend.lock("k", timeout=5)
    real = lock.lock._try_acquire

    def slow_try() -> bool:
        trying.set()
        go_on.wait(10)
        return real()  # it takes the lock, after its task was cancelled

    lock.lock._try_acquire = slow_try  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(lock.acquire())
        await asyncio.to_thread(trying.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go_on.set()
        # The try that took it gave it back: another lock gets it at once.
        async with backend.lock("k", timeout=5) as other:
            assert other.held
        await backend.aclose()

    asyncio.run(main())
    assert not lock.held


def test_a_cancelled_body_still_releases_its_lock(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path).aio()
    inside = asyncio.Event()

    async def hold() -> None:
        async with backend.lock("k", timeout=5):
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    async def main() -> None:
        task = asyncio.create_task(hold())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with backend.lock("k", timeout=0) as again:  # free: one try is enough
            assert again.held
        await backend.aclose()

    asyncio.run(main())


def test_a_cancelled_write_is_whole_or_absent(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path)
    store["doc"] = {"v": "old"}
    backend = store.aio()
    started, go_on = threading.Event(), threading.Event()
    real = store._dump

    def slow_dump(key: str, data: bytes, if_absent: bool) -> bool:
        started.set()
        go_on.wait(10)
        return real(key, data, if_absent)

    store._dump = slow_dump  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.create_task(backend.dump("doc", {"v": "new"}))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        go_on.set()
        await backend.aclose()  # waits for nothing: the write finishes in its thread

    asyncio.run(main())
    backend._pool.shutdown(wait=True)
    assert FileSystemJsonBackend(tmp_path)["doc"] in ({"v": "old"}, {"v": "new"})


def test_the_wrapper_takes_only_a_backend_and_a_sane_pool() -> None:
    with pytest.raises(TypeError, match="wraps a backend"):
        AsyncBackend({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_workers"):
        VolatileBackend().aio(max_workers=0)
    assert repr(VolatileBackend().aio()).startswith("AsyncBackend(VolatileBackend(")
    assert backends.VolatileBackend().aio().max_workers == 16


# -- Redis: native on redis.asyncio -------------------------------------------------------------


def test_redis_twin_sends_the_same_requests_natively(redis: str, commands: Any) -> None:
    from backends.redis.aio import AsyncRedisBackend

    store = backends.RedisJsonBackend(redis, prefix=f"aio-{id(commands)}")
    twin = store.aio()
    assert isinstance(twin, AsyncRedisBackend)

    async def main() -> dict[str, dict[str, int]]:
        await twin.len()  # a new connection's handshake, before counting
        seen = {}
        for name, call in (
            ("dump", lambda: twin.dump("k", {"v": 1})),
            ("load", lambda: twin.load("k")),
            ("contains", lambda: twin.contains("k")),
            ("load_many", lambda: twin.load_many([f"k{i}" for i in range(1500)])),
            ("len", twin.len),
            ("pop", lambda: twin.pop("k")),
        ):
            commands.reset()
            await call()
            seen[name] = commands.count()
        await twin.clear()
        await twin.aclose()
        return seen

    seen = asyncio.run(main())
    # What the blocking store sends (tests/test_redis.py), to the command.
    assert seen == {
        "dump": {"evalsha": 1},
        "load": {"evalsha": 1},  # reads are scripts: they see whether a value key is ours (#23)
        "contains": {"evalsha": 1},
        "load_many": {"evalsha": 2},
        "len": {"evalsha": 1},
        "pop": {"evalsha": 1},
    }


def test_ten_thousand_concurrent_loads_share_the_pool_and_start_no_thread(redis: str) -> None:
    import threading as threads

    import redis as redis_py

    store = backends.RedisJsonBackend(redis, prefix=f"aio-many-{id(redis)}", max_connections=8)
    store.dump_many({f"k{i}": i for i in range(100)})
    twin = store.aio()
    server = redis_py.Redis.from_url(redis)

    async def main() -> tuple[list[Any], int, int]:
        connected = len(server.client_list())
        before = threads.active_count()
        loaded = await asyncio.gather(*(twin.load(f"k{i % 100}") for i in range(10_000)))
        during = threads.active_count()
        clients = len(server.client_list()) - connected
        await twin.clear()
        await twin.aclose()
        return loaded, during - before, clients

    loaded, new_threads, clients = asyncio.run(main())
    assert loaded == [i % 100 for i in range(10_000)]
    assert new_threads <= 1  # the loads made none (clear() above is one pool thread)
    assert clients <= 8  # 10,000 awaits, one pool of 8 connections
    server.close()


def test_redis_twin_reloads_scripts_the_server_forgot(redis: str) -> None:
    import redis as redis_py

    twin = backends.RedisJsonBackend(redis, prefix=f"aio-flush-{id(redis)}").aio()

    async def main() -> Any:
        await twin.dump("a", 1)
        redis_py.Redis.from_url(redis).script_flush()  # as a restarted server
        await twin.dump("b", 2)
        found = await twin.load_many(["a", "b"])
        await twin.clear()
        await twin.aclose()
        return found

    assert asyncio.run(main()) == {"a": 1, "b": 2}


def test_redis_twin_refuses_bad_input_before_any_request(redis: str) -> None:
    twin = backends.RedisJsonBackend(redis, prefix="aio-bad").aio()

    async def main() -> None:
        with pytest.raises(backends.InvalidKeyError):
            await twin.load("a//b")
        with pytest.raises(backends.SerializationError):
            await twin.dump_many({"ok": 1, "nan": float("nan")})
        assert await twin.load("ok") is None  # nothing of the bad batch was written
        await twin.aclose()

    asyncio.run(main())


def test_concurrent_redis_loads_go_together(redis: str, commands: Any) -> None:
    store = backends.RedisJsonBackend(redis, prefix=f"aio-together-{id(commands)}")
    store.dump_many({f"k{i}": i for i in range(100)})
    twin = store.aio()

    async def main() -> tuple[list[Any], dict[str, int]]:
        await twin.len()  # a new connection's handshake, before counting
        commands.reset()
        cancelled = asyncio.ensure_future(twin.load("k1"))
        loads = [twin.load(f"k{i % 100}") for i in range(2500)] + [twin.load("absent", "none")]
        cancelled.cancel()  # stops waiting; the others are answered all the same
        loaded = await asyncio.gather(*loads)
        seen = commands.count()
        await twin.clear()
        await twin.aclose()
        return loaded, seen

    loaded, seen = asyncio.run(main())
    assert loaded == [i % 100 for i in range(2500)] + ["none"]
    assert seen == {"evalsha": 1}  # 101 distinct keys awaited together: one MGET script, not 2,501 reads


def test_a_memory_twin_calls_inline_without_its_threads() -> None:
    twin = VolatileBackend().aio()
    twin._pool.shutdown()  # any hop to a thread would now fail

    async def main() -> None:
        await twin.dump("k", [1])
        assert await twin.load("k") == [1] and await twin.len() == 1
        assert [key async for key in twin] == ["k"]

    asyncio.run(main())


def test_native_redis_calls_tell_their_events(redis: str) -> None:
    from backends.events import MemorySink

    store = backends.RedisJsonBackend(redis, prefix=f"aio-events-{id(redis)}")
    twin = store.aio()
    sink = MemorySink()

    async def main() -> None:
        with store.subscribe(sink):
            await twin.dump("k", 1)
            await twin.load("k")
            with pytest.raises(KeyError):
                await twin.pop("absent")
        await twin.clear()
        await twin.aclose()

    asyncio.run(main())
    told = [(e.operation, e.key, e.outcome) for e in sink]
    assert told == [
        ("dump", "k", "started"),
        ("dump", "k", "finished"),
        ("load", "k", "started"),
        ("load", "k", "finished"),
        ("pop", "absent", "started"),
        ("pop", "absent", "failed"),
    ]
