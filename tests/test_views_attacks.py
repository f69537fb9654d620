"""Attacks on views (#27): exact namespace boundaries on every store, read-only views that send
nothing, hostile arguments, views composed with tiers, events and @cached, closing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from servers import S3Target, counting

import backends
from backends.errors import InvalidKeyError, ReadOnlyError, StoreError

#: prefixes full of glob (Redis SCAN / MATCH) and LIKE (SQLite) metacharacters
METACHARACTERS = ["a*", "a?", "a[b]", "a\\", "a%", "a_", "a[", "a]", "a^", "a-"]
#: keys a metacharacter prefix would match if a store used it as a pattern
NEIGHBOURS = ["ab/x", "a\\/x", "aZ/x", "a[b]/y", "b/x", "a%b/x", "a_b/x", "aX/x", "a[b/x", "ab]/x", "a*b/x"]


def _boundary(base: backends.BaseBackend[Any, Any], prefix: str) -> None:
    """The namespace ``prefix`` of ``base`` sees, counts and clears its one key only."""
    around = {key: number for number, key in enumerate(NEIGHBOURS) if not key.startswith(prefix + "/")}
    base.dump_many({**around, prefix + "/k": -1})
    view = base.namespace(prefix)
    assert sorted(view) == ["k"], prefix
    assert len(view) == 1 and bool(view), prefix
    assert list(view.list("")) == ["k"] and list(view.list("", None)) == ["k"], prefix
    assert view.load_many(["k", "x", "b/x"]) == {"k": -1}
    view.clear()
    assert dict(base.items()) == around, prefix
    assert len(view) == 0 and not view
    base.clear()


@pytest.mark.parametrize("prefix", METACHARACTERS, ids=repr)
def test_a_redis_namespace_of_glob_characters_sees_its_keys_only(redis: str, prefix: str) -> None:
    for store_prefix in ("atk-views", "atk*[?"):
        base = backends.RedisJsonBackend(redis, prefix=store_prefix)
        try:
            _boundary(base, prefix)
        finally:
            base.close()


@pytest.mark.parametrize("prefix", METACHARACTERS, ids=repr)
def test_a_sqlite_namespace_of_like_wildcards_sees_its_keys_only(tmp_path: Path, prefix: str) -> None:
    with backends.SqliteJsonBackend(tmp_path / "kv.db") as base:
        _boundary(base, prefix)


def test_an_s3_namespace_of_metacharacters_sees_its_keys_only(moto: S3Target) -> None:
    for store_prefix in ("", "x*"):
        base = backends.S3JsonBackend(moto.bucket, prefix=store_prefix, client=moto.client)
        for prefix in METACHARACTERS:
            _boundary(base, prefix)


@pytest.mark.parametrize("parent", ["../", "..", "./", "/", "../a2/", "2"], ids=repr)
def test_a_listing_below_a_dotted_prefix_never_climbs_out_of_the_namespace(
    tmp_path: Path, parent: str
) -> None:
    for base in (
        backends.FileSystemJsonBackend(tmp_path / "hashed"),
        backends.FileSystemJsonBackend(tmp_path / "plain", layout="plain"),
        backends.VolatileBackend(),
    ):
        base.dump_many({"a/x": 1, "a2/y": 2, "b/z": 3})
        view = base.namespace("a")
        for delimiter in ("/", None):
            assert list(view.list(parent, delimiter)) == []
        for call in ("stat_many", "strays"):
            if hasattr(view, call):
                assert list(getattr(view, call)(parent)) == []


# -- read-only: not one request (S3 counted) --------------------------------------------------


def _s3_writes(view: Any, source: Path) -> dict[str, Any]:
    def setitem() -> None:
        view["k"] = b"2"

    def delitem() -> None:
        del view["k"]

    return {
        "dump": lambda: view.dump("k", b"2"),
        "dump_if_absent": lambda: view.dump("new", b"2", if_absent=True),
        "dump_if_match": lambda: view.dump("k", b"2", if_match='"etag"'),
        "dump_timeout_bad": lambda: view.dump("k", b"2", if_match=7),
        "setitem": setitem,
        "delitem": delitem,
        "delete": lambda: view.delete("k"),
        "pop": lambda: view.pop("k"),
        "popitem": view.popitem,
        "update": lambda: view.update(k=b"3"),
        "clear": view.clear,
        "dump_many": lambda: view.dump_many([("k", b"2")]),
        "dump_many_bad": lambda: view.dump_many([("", b"2")]),
        "delete_many": lambda: view.delete_many(["k"]),
        "dump_file": lambda: view.dump_file("k", source),
        "dump_file_absent": lambda: view.dump_file("k", source.parent / "absent"),
        "copy": lambda: view.copy("k", "c"),
        "move": lambda: view.move("k", "m"),
        "make_public": lambda: view.make_public("k"),
        "make_private": lambda: view.make_private("k"),
        "copy_bad": lambda: view.copy("", "//"),
    }


def test_every_write_of_a_read_only_s3_view_sends_no_request(moto: S3Target, tmp_path: Path) -> None:
    base = backends.S3RawBackend(moto.bucket, prefix="ro", client=moto.client)
    base["t/k"] = b"1"
    (tmp_path / "in").write_bytes(b"new")
    for view in (base.readonly(), base.namespace("t").readonly(), base.readonly().namespace("t")):
        with counting(moto.client) as log:
            for name, write in _s3_writes(view, tmp_path / "in").items():
                with pytest.raises(ReadOnlyError):
                    write()
                assert log.count() == {}, name
    assert dict(base.items()) == {"t/k": b"1"}
    base.clear()


def test_every_write_of_a_read_only_s3_twin_sends_no_request(moto: S3Target, tmp_path: Path) -> None:
    base = backends.S3RawBackend(moto.bucket, prefix="ro-twin", client=moto.client)
    base["t/k"] = b"1"
    (tmp_path / "in").write_bytes(b"new")

    async def main() -> None:
        for twin in (base.aio().readonly(), base.aio().namespace("t").readonly(), base.readonly().aio()):
            with counting(moto.client) as log:
                for name, write in _s3_writes(twin, tmp_path / "in").items():
                    if name in ("setitem", "delitem"):
                        continue  # no item syntax on a twin
                    with pytest.raises(ReadOnlyError):
                        await write()
                    assert log.count() == {}, name
            await twin.aclose()

    asyncio.run(main())
    assert dict(base.items()) == {"t/k": b"1"} and not base.closed
    base.clear()


def test_a_read_only_view_cannot_be_a_tiers_cache() -> None:
    """README: a read-only view cannot be a tier's cache, which the tier writes."""
    cache = backends.MemoryCache(clock=FrozenClock())
    with pytest.raises((ValueError, TypeError), match="cache"):
        backends.TieredBackend(cache.readonly(), backends.VolatileBackend())


def test_cached_over_a_read_only_view_is_refused_or_raises_read_only() -> None:
    store = backends.MemoryCache(clock=FrozenClock())
    calls: list[int] = []
    try:

        @backends.cached(store.readonly())
        def f(x: int) -> int:
            calls.append(x)
            return x
    except (ValueError, TypeError) as exc:
        assert "read-only" in str(exc) or "readonly" in str(exc)
        return
    with pytest.raises(ReadOnlyError):
        f(1)
    assert len(store) == 0


# -- events: the view's key to the view's subscribers, the full key to the base's ------------


def test_a_view_and_its_base_each_tell_their_own_key() -> None:
    base = backends.VolatileBackend()
    view = base.namespace("t")
    on_view: list[backends.Event] = []
    on_base: list[backends.Event] = []
    with view.subscribe(on_view.append), base.subscribe(on_base.append):
        view["k"] = 1
        view.pop("k")
    assert {event.key for event in on_view} == {"k"}
    assert {event.key for event in on_base} == {"t/k"}
    assert {event.backend for event in on_base} == {repr(base)}


# -- hostile arguments and text --------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "readonly=2",
        "readonly=",
        "readonly=yes%0d%0a",
        "namespace=",
        "namespace=a%2F..%2Fb",
        "namespace=%00",
        "namespace=a%0D%0Ab",
        "namespace=%ED%B3%BF",
        "namespace=%2F",
        "namespace=a&namespace=b",
        "readonly=1&readonly=0",
    ],
)
def test_a_hostile_view_parameter_is_a_value_error_naming_it(query: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"namespace|readonly") as raised:
        backends.open(f"{tmp_path / 'never'}?{query}")
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message and "\x00" not in message
    message.encode("utf-8")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("bad", [1, b"a", ["a"], 1.5, True], ids=repr)
def test_a_namespace_keyword_of_the_wrong_type_is_a_type_error(bad: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="namespace"):
        backends.open(str(tmp_path / "never"), namespace=bad)
    assert not (tmp_path / "never").exists()


def test_a_views_errors_show_a_hostile_key_escaped_on_one_line() -> None:
    view = backends.VolatileBackend().namespace("t\u00e9")
    for key in ["x\n\x1b[31m", "\udcff", "a\x07"]:
        with pytest.raises(InvalidKeyError) as raised:
            view.dump(key, 1)
        shown = str(raised.value)
        assert "\n" not in shown and "\x1b" not in shown and "\x07" not in shown
        shown.encode("utf-8")
        assert raised.value.key == key


# -- closing -----------------------------------------------------------------------------------


def test_closing_the_base_mid_listing_stops_the_views_listing(tmp_path: Path) -> None:
    base = backends.SqliteJsonBackend(tmp_path / "kv.db")
    base.dump_many({f"t/{n:04}": n for n in range(3000)})
    view = base.namespace("t")
    listing = iter(view)
    assert next(listing) == "0000"
    base.close()
    with pytest.raises(StoreError):
        list(listing)


def test_closing_a_view_mid_clear_writes_nothing_after_on_s3(moto: S3Target) -> None:
    base = backends.S3JsonBackend(moto.bucket, prefix="mid", client=moto.client)
    base.dump_many({f"t/{n:04}": n for n in range(1500)})
    view = base.namespace("t")
    deleted: list[int] = []

    def once(*args: Any, **kwargs: Any) -> None:
        deleted.append(1)
        view.close()

    moto.client.meta.events.register("after-call.s3.DeleteObjects", once)
    try:
        with pytest.raises(StoreError, match="closed"):
            view.clear()
    finally:
        moto.client.meta.events.unregister("after-call.s3.DeleteObjects", once)
    assert len(deleted) == 1 and len(base) == 500
    base.clear()
