"""Views (backends.views): every store through ``namespace()`` and ``readonly()``, and the attacks on them."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from conftest import LONG
from servers import S3Target

import backends
from backends.base import MISSING, UNCHANGED, Versioned
from backends.errors import BackendError, InvalidKeyError, ReadOnlyError, StoreError
from backends.events import MemorySink
from backends.info import utc
from backends.testing import StoreCase, check_parity
from backends.testing.views import namespaced, read_only
from backends.transfers import FileTransfers
from backends.views import refuses_writes

#: parity (examples, steps) of a view of a local store, and of a server's, in the default run
#: (the long run: the case's own share of examples, 40 steps)
LOCAL, SERVER = (3, 25), (1, 15)


@pytest.mark.parametrize("view", [namespaced, read_only], ids=["namespace", "readonly"])
def test_every_store_through_each_view_behaves_like_a_dict(
    view: object, case: StoreCase, tmp_path: Path
) -> None:
    """The parity machine on a view of each store: a namespace with foreign keys planted around it
    (checked untouched after every run), and a read-only view of a filled store (every write refused)."""
    viewed = view(case)  # type: ignore[operator]
    if LONG:
        check_parity(viewed, tmp_path)
    else:
        examples, steps = SERVER if case.remote else LOCAL
        check_parity(viewed, tmp_path, examples=examples, steps=steps)


# -- namespaces: exact boundaries, and everything through them -------------------------------


def test_a_namespace_is_a_folder_and_sees_nothing_at_its_boundary(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path)
    around = {"a": 0, "a2/x": 1, "ab": 2, "a~/x": 3, "b/a/x": 4}
    base.dump_many({**around, "a/x": 5, "a/y/z": 6})
    view = base.namespace("a")
    assert view == base.namespace("a/")
    assert view.prefix == "a/"
    assert sorted(view) == ["x", "y/z"]
    assert len(view) == 2
    assert list(view.list("")) == ["x", "y/"]
    assert list(view.list("y/", None)) == ["y/z"]
    assert "a" not in view and "2/x" not in view
    assert view.load_many(["x", "y/z", "b"]) == {"x": 5, "y/z": 6}
    view.clear()
    assert dict(base.items()) == around


def test_a_namespace_of_a_namespace_is_one_view_with_both_prefixes() -> None:
    base = backends.VolatileBackend()
    inner = base.namespace("t").namespace("u").readonly().namespace("v")
    assert inner.base is base
    assert (inner.prefix, inner.is_readonly) == ("t/u/v/", True)
    assert repr(inner) == "VolatileBackend().namespace('t/u/v/').readonly()"
    base["t/u/v/k"] = 1
    assert inner["k"] == 1


def test_a_namespaced_key_is_checked_as_the_full_key_it_becomes(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path)
    view = base.namespace("tenant-a")
    assert view.max_key_bytes == base.max_key_bytes - len("tenant-a/")
    longest = "k" * view.max_key_bytes
    view[longest] = 1
    assert base.load("tenant-a/" + longest) == 1
    with pytest.raises(InvalidKeyError) as raised:
        view.dump(longest + "k", 1)
    assert raised.value.key == longest + "k"  # as the caller wrote it
    assert "namespace('tenant-a/')" in str(raised.value)
    for bad in ["", "/x", "x/", "a//b", "..", "x\n", "\udcff", 7]:
        with pytest.raises(InvalidKeyError):
            view.load(bad)  # type: ignore[arg-type]
    assert sorted(base) == ["tenant-a/" + longest]


def test_a_plain_tree_namespace_keeps_the_tree_rules_of_the_full_key(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path, layout="plain")
    view = base.namespace("t")
    with pytest.raises(InvalidKeyError) as raised:
        view.dump("x" * 256, 1)  # one segment over a file name's 255 bytes
    assert raised.value.key == "x" * 256
    with pytest.raises(ValueError, match="prefix"):
        base.namespace("x" * 256)


@pytest.mark.parametrize(
    "bad",
    ["", "/", "a//", "//a", "a/../b", "..", ".", "a\r\nb", "a\x1b[31m", "\udcff", "x" * 1023, "é" * 600],
    ids=repr,
)
def test_a_bad_prefix_is_a_value_error_naming_it_before_any_io(bad: str, tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path / "never")
    with pytest.raises(ValueError, match=r"^prefix ") as raised:
        base.namespace(bad)
    assert "\n" not in str(raised.value) and "\x1b" not in str(raised.value)
    str(raised.value).encode("utf-8")  # no lone surrogate in the message
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("bad", [None, 7, b"a/", ["a"]], ids=repr)
def test_a_prefix_that_is_no_str_is_a_type_error_naming_it(bad: object) -> None:
    with pytest.raises(TypeError, match=r"^prefix is a str"):
        backends.VolatileBackend().namespace(bad)  # type: ignore[arg-type]


def test_locks_of_a_namespace_are_the_base_locks_of_the_full_keys(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path)
    view = base.namespace("tenant-a")
    with view.lock("k", timeout=0):
        assert not base.lock("tenant-a/k", timeout=0).try_acquire()
        assert base.lock("k", timeout=0).try_acquire()  # another key: free
        assert not base.namespace("tenant-a/").lock("k", timeout=0).try_acquire()
    assert list(base) == []  # a lock is no key, in the base either


def test_etags_and_conditional_writes_work_through_a_namespace(redis: str) -> None:
    base = backends.RedisJsonBackend(redis, prefix="t/views-etag")
    view = base.namespace("tenant-a").namespace("b")
    try:
        assert view.dump("k", {"v": 1}, if_absent=True)
        assert not view.dump("k", {"v": 2}, if_absent=True)
        found = view.stat("k")
        assert found is not None and found.key == "k" and found.etag
        assert not view.dump("k", {"v": 3}, if_match="0" * 40)
        assert view.dump("k", {"v": 4}, if_match=found.etag)
        assert base.load("tenant-a/b/k") == {"v": 4}
    finally:
        base.clear()
        base.close()


def test_load_if_changed_and_a_tiers_revalidation_work_through_a_namespace(moto: S3Target) -> None:
    base = backends.S3JsonBackend(moto.bucket, prefix="app", client=moto.client)
    view = base.namespace("tenant-a")
    view["k"] = {"v": 1}
    loaded = view.load_if_changed("k")
    assert isinstance(loaded, Versioned) and loaded.value == {"v": 1} and loaded.etag
    assert view.load_if_changed("k", loaded.etag) is UNCHANGED
    assert view.load_if_changed("absent") is MISSING
    clock = FrozenClock()
    tier = backends.TieredBackend(backends.MemoryCache(clock=clock, timeout=10), view)
    assert tier["k"] == {"v": 1}
    clock.advance(11)
    assert tier["k"] == {"v": 1} and tier.stats.revalidations == 1  # a 304 through the view


def test_s3_objects_at_the_boundary_are_strays_of_the_namespace_or_nothing(moto: S3Target) -> None:
    """Class 2: names no key can be (``a//b``, ``a/``), and a neighbour ``a2/x``, put by another program."""
    client, bucket = moto.client, moto.bucket
    for name in ["app/a", "app/a/", "app/a//b", "app/a2/x", "app/a/x", "app/a/y/"]:
        client.put_object(Bucket=bucket, Key=name, Body=b'"x"')
    base = backends.S3JsonBackend(bucket, prefix="app", client=client)
    view = base.namespace("a")
    assert list(view) == ["x"]
    assert len(view) == 1
    assert dict(view.items()) == {"x": "x"}
    assert sorted(view.strays()) == sorted((path[len("a/") :], why) for path, why in base.strays("a/"))
    assert all(path.startswith("/") or path.endswith("/") or path == "" for path, _ in view.strays())
    view.clear()
    names = {item["Key"] for item in client.list_objects_v2(Bucket=bucket, Prefix="app/")["Contents"]}
    assert names == {"app/a", "app/a/", "app/a//b", "app/a2/x", "app/a/y/"}  # only its key went


def test_expiry_through_a_namespace_names_the_views_keys() -> None:
    clock = FrozenClock()
    cache = backends.MemoryCache(clock=clock, timeout=60)
    view = cache.namespace("t")
    view.dump("k", 1, timeout=10)
    cache.dump("other", 2)
    assert view.expires("k") == utc(clock.now + 10)
    with pytest.raises(KeyError) as raised:
        view.expires("absent")
    assert raised.value.args == ("absent",)
    assert view.peek("k") is not None
    view.fill("f", 3, etag="e1")
    assert view.renew("f", "e1") and not view.renew("f", "e2")
    clock.advance(11)
    assert view.purge() == 1  # the base's expired entries: here only the view's
    assert "k" not in view
    assert sorted(cache) == ["other", "t/f"]


def test_events_of_a_view_name_the_view_and_its_keys(sink: MemorySink) -> None:
    base = backends.VolatileBackend()
    view = base.namespace("t")
    seen: list[backends.Event] = []
    with view.subscribe(seen.append):
        view["k"] = 1
        view.load("k")
        view.delete("k")
    assert {(event.backend, event.key) for event in seen} == {(repr(view), "k")}
    assert [event.operation for event in seen if event.outcome == "finished"] == ["dump", "load", "delete"]


def test_a_tier_over_views_and_a_view_over_a_tier(tmp_path: Path) -> None:
    origin = backends.FileSystemJsonBackend(tmp_path / "origin")
    cache = backends.JsonCache(tmp_path / "cache", clock=FrozenClock())
    tier = backends.TieredBackend(cache.namespace("c"), origin.namespace("o"))
    tier["k"] = 1
    assert origin.load("o/k") == 1 and cache.load("c/k") == 1
    assert tier.stats.hits == 0 and tier["k"] == 1 and tier.stats.hits == 1
    over = tier.namespace("n")
    over["j"] = 2
    assert origin.load("o/n/j") == 2 and list(over) == ["j"]
    assert set(tier) == {"k", "n/j"}


# -- read-only ---------------------------------------------------------------------------------


def _writes(view: backends.BaseBackend[Any, Any]) -> dict[str, Callable[[], object]]:
    def setitem() -> None:
        view["k"] = 1

    def delitem() -> None:
        del view["k"]

    return {
        "dump": lambda: view.dump("k", 1),
        "dump_if_absent": lambda: view.dump("new", 1, if_absent=True),
        "setitem": setitem,
        "delete": lambda: view.delete("k"),
        "delitem": delitem,
        "pop": lambda: view.pop("k"),
        "pop_absent": lambda: view.pop("absent", None),
        "popitem": view.popitem,
        "setdefault_bad_key": lambda: view.setdefault("", 1),
        "update": lambda: view.update({"k": 2}),
        "update_nothing": view.update,
        "clear": view.clear,
        "dump_many": lambda: view.dump_many({"k": 2}),
        "delete_many": lambda: view.delete_many(["k"]),
        "dump_bad_key": lambda: view.dump("", 1),
    }


def test_every_write_to_a_read_only_view_raises_one_error_before_any_io(tmp_path: Path) -> None:
    base = backends.JsonCache(tmp_path, clock=FrozenClock())
    base["k"] = 1
    view = base.readonly()
    seen: list[backends.Event] = []
    writes = {
        **_writes(view),
        "purge": view.purge,
        "fill": lambda: view.fill("k", 2),
        "renew": lambda: view.renew("k", "e"),
    }
    with base.subscribe(seen.append):
        for name, write in writes.items():
            with pytest.raises(ReadOnlyError) as raised:
                write()
            assert isinstance(raised.value, backends.PermissionDeniedError), name
            assert raised.value.backend == repr(view)
    assert seen == []  # the base was never called
    assert dict(base.items()) == {"k": 1}
    assert view.setdefault("k", 5) == 1  # present: a read
    with pytest.raises(ReadOnlyError):
        view.setdefault("absent", 5)  # a read tells it would be a write
    assert view["k"] == 1 and list(view) == ["k"] and view.expires("k") is not None


def test_a_read_only_view_streams_reads_and_refuses_uploads(tmp_path: Path) -> None:
    base = backends.FileSystemRawBackend(tmp_path / "store")
    base["k"] = b"data"
    view = base.readonly().namespace("t")
    base["t/k"] = b"inner"
    (tmp_path / "in").write_bytes(b"new")
    with pytest.raises(ReadOnlyError):
        view.dump_file("k", tmp_path / "in")
    assert view.load_file("k", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"inner"
    assert isinstance(view, FileTransfers)


def test_a_read_only_view_takes_locks(tmp_path: Path) -> None:
    """Locks coordinate, they store no value: a reader may wait for a writer's lock."""
    base = backends.FileSystemJsonBackend(tmp_path)
    with base.readonly().lock("k", timeout=0):
        assert not base.lock("k", timeout=0).try_acquire()


def test_a_tier_over_a_read_only_origin_reads_and_refuses_writes(tmp_path: Path) -> None:
    origin = backends.FileSystemJsonBackend(tmp_path)
    origin["k"] = 1
    tier = backends.TieredBackend(backends.MemoryCache(clock=FrozenClock()), origin.readonly())
    assert tier["k"] == 1 and tier["k"] == 1 and tier.stats.hits == 1
    assert refuses_writes(tier) and not refuses_writes(origin)
    with pytest.raises(ReadOnlyError):
        tier["k"] = 2
    assert origin["k"] == 1 and tier["k"] == 1


def test_the_twin_of_a_read_only_view_refuses_its_writes(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path)
    base["k"] = 1

    async def main() -> None:
        twin = base.aio().readonly()
        assert await twin.load("k") == 1
        assert [key async for key in twin] == ["k"]
        for write in (twin.dump("k", 2), twin.delete("k"), twin.clear(), twin.dump_many({"j": 1})):
            with pytest.raises(ReadOnlyError):
                await write
        await twin.aclose()

    asyncio.run(main())
    assert dict(base.items()) == {"k": 1} and not base.closed


# -- closing (class 3) ---------------------------------------------------------------------------


def test_closing_a_view_closes_the_view_only(tmp_path: Path) -> None:
    base = backends.SqliteJsonBackend(tmp_path / "kv.db")
    view = base.namespace("t")
    view["k"] = 1
    view.close()
    view.close()
    assert view.closed and not base.closed
    calls: list[Callable[[], object]] = [
        lambda: view.load("k"),
        lambda: view.dump("k", 2),
        lambda: list(view),
        lambda: len(view),
        lambda: view.load_many(["k"]),
        lambda: view.lock("k"),
        lambda: view.stat("k"),
        view.clear,
    ]
    for call in calls:
        with pytest.raises(StoreError, match="this view is closed"):
            call()
    assert base.load("t/k") == 1  # nothing written after close
    assert base.namespace("t")["k"] == 1  # a new view of the open base


def test_a_view_of_a_closed_base_raises_the_bases_store_error(tmp_path: Path) -> None:
    base = backends.SqliteJsonBackend(tmp_path / "kv.db")
    view = base.namespace("t").readonly()
    base.close()
    assert view.closed
    with pytest.raises(StoreError) as raised:
        view.load("k")
    assert raised.value.backend == repr(view) and raised.value.key == "k"
    assert isinstance(raised.value.__cause__, StoreError)  # the base's own, as the cause


def test_the_twin_of_a_closed_view_raises_store_error() -> None:
    view = backends.VolatileBackend().namespace("t")
    twin = view.aio()

    async def main() -> None:
        await twin.dump("k", 1)
        view.close()
        with pytest.raises(StoreError):
            await twin.load("k")

    asyncio.run(main())


# -- hostile text (class 4), bad URL values (class 5), secrets (class 10) ------------------------


def test_a_repr_of_a_view_escapes_what_a_terminal_would_run() -> None:
    view = backends.VolatileBackend().namespace("\u202eevil\u00e9")
    assert repr(view) == "VolatileBackend().namespace('\\u202eevilé/')"


@pytest.mark.parametrize(
    "query",
    [
        "readonly=maybe",
        "readonly=",
        "readonly=2",
        "readonly=1&readonly=1",
        "namespace=",
        "namespace=%2F",
        "namespace=a%0D%0Ab",
        "namespace=%1B%5B31m",
        "namespace=%ED%B2%80",
        "namespace=..",
        "namespace=a%2F%2Fb",
        "namespace=" + "x" * 1100,
        "namespace=a&namespace=b",
    ],
)
def test_a_bad_view_parameter_is_a_value_error_naming_it_before_any_io(query: str, tmp_path: Path) -> None:
    folder = tmp_path / "never"
    with pytest.raises(ValueError) as raised:
        backends.open(f"file://{folder}?{query}")
    message = str(raised.value)
    assert query.partition("=")[0] in message
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    message.encode("utf-8")
    assert not folder.exists()


def test_url_parameters_make_the_view_and_leave_the_rest_of_the_query(tmp_path: Path) -> None:
    view = backends.open(f"file://{tmp_path}?format=text&namespace=tenant-a&readonly=yes")
    assert isinstance(view, backends.View) and isinstance(view.base, backends.FileSystemTextBackend)
    assert (view.prefix, view.is_readonly) == ("tenant-a/", True)
    same = backends.open(f"file://{tmp_path}", namespace="t", readonly=True)
    assert same == backends.FileSystemJsonBackend(tmp_path).namespace("t").readonly()
    tier = backends.open(f"cache://{tmp_path}/c?namespace=c::file://{tmp_path}/o?readonly=1")
    assert isinstance(tier, backends.TieredBackend) and refuses_writes(tier)
    assert isinstance(tier.cache, backends.View) and tier.cache.prefix == "c/"


def test_no_secret_of_a_url_reaches_a_views_errors() -> None:
    secret = "hunter2-SECRET"
    for url in [
        f"redis://:{secret}@127.0.0.1:1/0?namespace=%0A",
        f"s3://bucket/app?namespace=t&secret_key={secret}",
        f"redis://:{secret}@127.0.0.1:1/0?readonly=maybe",
    ]:
        with pytest.raises(ValueError) as raised:
            backends.open(url)
        assert secret not in "".join(traceback.format_exception(raised.value))
    view = backends.open("redis://127.0.0.1:1/0?namespace=t&readonly=1", password=secret)
    for call in (lambda: view.load("k"), lambda: view.dump("k", 1), lambda: list(view)):
        with pytest.raises(BackendError) as failed:
            call()
        assert secret not in "".join(traceback.format_exception(failed.value))
    assert secret not in repr(view) + repr(view.aio())


def test_no_secret_of_an_s3_backend_reaches_its_views_repr_or_errors(moto: S3Target) -> None:
    secret = "wJalrXUtnFEMI-SECRET-KEY"
    base = backends.S3JsonBackend(
        moto.bucket,
        prefix="app",
        access_key="AKIDTESTKEY",
        secret_key=secret,
        endpoint_url="http://127.0.0.1:1",
    )
    view = base.namespace("tenant-a").readonly()
    texts = [repr(view), repr(view.aio())]
    for call in (lambda: view.load("k"), lambda: view.dump("k", 1), lambda: view.load("")):
        with pytest.raises(BackendError) as raised:
            call()
        texts.append("".join(traceback.format_exception(raised.value)))
    assert not any(secret in text for text in texts)


def test_the_command_refuses_writes_into_a_read_only_url_with_2(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    backends.FileSystemJsonBackend(source)["k"] = 1
    for argv in (
        ["put", f"file://{target}?readonly=1", "k", "1"],
        ["rm", f"file://{source}?readonly=1", "k"],
        ["cp", f"file://{source}", f"file://{target}?readonly=1"],
        ["cp", f"file://{source}", f"cache://{tmp_path}/c::file://{target}?readonly=1"],
    ):
        done = cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert b"read-only" in done.stderr and done.stderr.count(b"\n") == 1
    assert not target.exists()
    assert backends.FileSystemJsonBackend(source)["k"] == 1


def test_the_command_shows_a_namespace_and_escapes_a_hostile_one(tmp_path: Path) -> None:
    store = backends.FileSystemJsonBackend(tmp_path)
    store.dump_many({"tenant-a/k": 1, "tenant-a2/x": 2, "tenant-a/\u202ej": 3})
    listed = cli("ls", f"file://{tmp_path}?namespace=tenant-a")
    assert listed.returncode == 0 and listed.stdout.decode().split() == ["k", "\\u202ej"]
    refused = cli("ls", f"file://{tmp_path}?namespace=%1B%5D0%3Bpwned%07")
    assert refused.returncode == 1 and b"\x1b" not in refused.stderr and b"\x07" not in refused.stderr
    assert refused.stderr.count(b"\n") == 1 and b"namespace" in refused.stderr


# -- processes and loops (class 9) -----------------------------------------------------------------


def test_a_view_pickles_to_a_worker_process(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path)
    view = base.namespace("tenant-a").readonly()
    assert pickle.loads(pickle.dumps(view)) == view
    writer = base.namespace("tenant-a")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_write_through, (writer, "k", 1)) == ["k"]
        with pytest.raises(ReadOnlyError):
            pool.apply(_write_through, (view, "j", 2))
    assert dict(base.items()) == {"tenant-a/k": 1}


def _write_through(view: backends.BaseBackend[Any, Any], key: str, value: Any) -> list[str]:
    view[key] = value
    return list(view)


def test_the_twin_of_a_view_serves_two_event_loops(tmp_path: Path) -> None:
    base = backends.FileSystemJsonBackend(tmp_path)
    twin = base.namespace("t").aio()

    async def work(name: str) -> list[str]:
        await twin.dump_many({f"{name}/{n}": n for n in range(20)})
        return [key async for key in twin.list(f"{name}/", None)]

    found: dict[str, list[str]] = {}
    threads = [
        threading.Thread(target=lambda name=name: found.__setitem__(name, asyncio.run(work(name))))
        for name in ("one", "two")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {name: len(keys) for name, keys in found.items()} == {"one": 20, "two": 20}
    assert asyncio.run(work("three"))[:2] == ["three/0", "three/1"]  # a third loop, later
    assert len(base) == 60 and all(key.startswith("t/") for key in base)


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "backends", *args],
        capture_output=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_processes_writing_their_namespaces_of_one_store_at_once(tmp_path: Path) -> None:
    """Class 9: four processes, each in its own namespace and all in a shared one: each namespace
    holds its own keys only, and of the racing ``setdefault`` calls exactly one value won."""
    base = backends.SqliteJsonBackend(tmp_path / "kv.db")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        won = pool.starmap(_fill_namespace, [(base, number) for number in range(4)])
    assert len(set(won)) == 1 and won[0] in range(4)
    for number in range(4):
        assert dict(base.namespace(f"w{number}").items()) == {f"k{n}": number for n in range(25)}
    assert dict(base.namespace("shared").items()) == {"winner": won[0]}
    assert len(base) == 4 * 25 + 1


def _fill_namespace(base: backends.BaseBackend[Any, Any], number: int) -> Any:
    base.namespace(f"w{number}").dump_many({f"k{n}": number for n in range(25)})
    return base.namespace("shared").setdefault("winner", number)


def test_a_view_made_by_hand_checks_its_arguments() -> None:
    base = backends.VolatileBackend()
    assert backends.View(base, "t") == base.namespace("t/")
    with pytest.raises(ValueError, match="prefix"):
        backends.View(base.namespace("t"), "/x")
    with pytest.raises(TypeError, match="readonly"):
        backends.View(base, "", "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="backend"):
        backends.View({}, "t")  # type: ignore[arg-type]


def test_a_views_server_side_copies_and_acls_stay_in_the_namespace(moto: S3Target) -> None:
    base = backends.S3RawBackend(moto.bucket, prefix="app", client=moto.client)
    view = base.namespace("t")
    view["x"] = b"1"
    assert view.copy("x", "y") and view.move("y", "z/w") and not view.copy("absent", "q")
    assert sorted(base) == ["t/x", "t/z/w"]
    assert view.make_public("x") and view.make_private("x") and not view.make_public("absent")
    read_only = view.readonly()
    for write in (
        lambda: read_only.copy("x", "c"),
        lambda: read_only.move("x", "m"),
        lambda: read_only.make_public("x"),
    ):
        with pytest.raises(ReadOnlyError):
            write()
    assert sorted(base) == ["t/x", "t/z/w"]
    base.clear()


def test_a_folders_paths_and_open_files_through_a_namespace(tmp_path: Path) -> None:
    base = backends.FileSystemRawBackend(tmp_path)
    view = base.namespace("t").readonly()
    base["t/k"] = b"data"
    assert view.path("k") == base.path("t/k")
    with view.open("k") as opened:
        assert opened.read() == b"data"
    with pytest.raises(KeyError) as raised:
        view.open("absent")
    assert raised.value.args == ("absent",)


class _ClosingBetweenBatches(backends.VolatileBackend):
    """A store that runs ``between`` once, after its first batch delete: a close there is a close
    between two batches of a bulk call, at a known point (no race with a poll)."""

    between: Callable[[], None] | None = None

    def _delete_many(self, keys: list[str]) -> int:
        removed = super()._delete_many(keys)
        if self.between is not None:
            self.between, between = None, self.between
            between()
        return removed


def test_a_view_closed_between_the_batches_of_its_clear_writes_nothing_after() -> None:
    base = _ClosingBetweenBatches()
    view = base.namespace("t")
    base.dump_many({f"t/{n:04}": n for n in range(2500)})
    base["outside"] = 1
    base.between = view.close
    with pytest.raises(StoreError, match="this view is closed"):
        view.clear()
    assert len(base) == 1500 + 1  # the first batch went; none after the close
    base.namespace("t").clear()
    assert list(base) == ["outside"]


def test_the_command_names_the_strays_of_a_namespace_and_fails(tmp_path: Path) -> None:
    """Class 2 and 4: another program's files below the namespace: named (escaped), relative to it, exit 1."""
    backends.FileSystemJsonBackend(tmp_path, layout="plain")["tenant-a/k"] = 1
    (tmp_path / "tenant-a" / "link").symlink_to(tmp_path / "elsewhere")
    os.close(
        os.open(os.path.join(os.fsencode(tmp_path), b"tenant-a", b"bad\xff\x1b"), os.O_CREAT | os.O_WRONLY)
    )
    (tmp_path / "tenant-a2").mkdir()
    (tmp_path / "tenant-a2" / "other").symlink_to(tmp_path / "elsewhere")
    listed = cli("ls", f"file://{tmp_path}?layout=plain&namespace=tenant-a")
    assert listed.returncode == 1 and listed.stdout == b"k\n"
    lines = listed.stderr.decode("utf-8").splitlines()
    assert any("not a key: link:" in line for line in lines)
    assert any("not a key: bad\\xff\\x1b:" in line for line in lines)
    assert not any("other" in line or "tenant-a" in line for line in lines)
    assert b"\x1b" not in listed.stderr


def test_the_native_redis_twin_makes_views_too(redis: str) -> None:
    base = backends.RedisJsonBackend(redis, prefix="t/views-twin")

    async def main() -> None:
        twin = base.aio()
        tenant = twin.namespace("tenant-a")
        await tenant.dump("k", {"v": 1}, if_absent=True)
        assert await tenant.load("k") == {"v": 1}
        assert [key async for key in tenant.list("", None)] == ["k"]
        with pytest.raises(ReadOnlyError):
            await tenant.readonly().delete("k")
        await tenant.aclose()
        assert await twin.load("tenant-a/k") == {"v": 1}  # closing the view's twin left the store open
        await twin.aclose()

    try:
        asyncio.run(main())
    finally:
        with backends.RedisJsonBackend(redis, prefix="t/views-twin") as cleanup:
            cleanup.clear()


def test_a_lock_in_a_namespace_is_the_stores_lock_of_the_full_key_on_every_store(
    case: StoreCase, tmp_path: Path
) -> None:
    with case.opened(tmp_path / "store") as base:
        view = base.namespace("tenant-a")
        lock = view.lock("k", timeout=0, ttl=30)  # every store has locks: one without fails here
        with lock:
            assert not base.lock("tenant-a/k", timeout=0).try_acquire()
            assert not base.namespace("tenant-a/").lock("k", timeout=0).try_acquire()
            other = base.lock("k", timeout=0)
            assert other.try_acquire()
            other.release()
        again = base.lock("tenant-a/k", timeout=0)
        assert again.try_acquire()
        again.release()
        assert list(view) == []
