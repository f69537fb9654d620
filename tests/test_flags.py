"""``if_absent`` is a flag on every store, its twin and its views: anything but True or False is a
TypeError naming it, before any I/O, and nothing changes (``"no"`` was taken as true)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from backends import BaseBackend, JsonCache, MemoryCache, RedisJsonBackend, SqliteJsonBackend, VolatileBackend


@pytest.mark.parametrize("bad", ["no", "", 1, 0, None, 1.0])
def test_an_if_absent_that_is_no_flag_is_a_type_error_and_writes_nothing(
    backend: BaseBackend[Any, Any], sample: Any, bad: Any
) -> None:
    backend.dump("k", sample(1))
    with pytest.raises(TypeError, match="if_absent is True or False"):
        backend.dump("k", sample(2), if_absent=bad)
    with pytest.raises(TypeError, match="if_absent is True or False"):
        backend.dump("new", sample(2), if_absent=bad)
    twin = backend.aio()
    with pytest.raises(TypeError, match="if_absent is True or False"):
        asyncio.run(twin.dump("new", sample(2), if_absent=bad))
    view = backend.namespace("ns/")
    with pytest.raises(TypeError, match="if_absent is True or False"):
        view.dump("new", sample(2), if_absent=bad)
    assert backend.load("k") == sample(1)
    assert "new" not in backend and "ns/new" not in backend
    assert backend.dump("k", sample(3), if_absent=False) is True
    assert backend.dump("k", sample(4), if_absent=True) is False
    assert backend.load("k") == sample(3)


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("a repr that fails")


def test_an_argument_whose_repr_raises_is_named_by_its_type() -> None:
    store = VolatileBackend()
    with pytest.raises(TypeError, match=r"if_absent is True or False, not a _NoRepr \(its repr failed\)"):
        store.dump("k", 1, if_absent=_NoRepr())
    assert "k" not in store


def _caches(kind: str, tmp_path: Path, redis: str) -> Any:
    return {
        "folder": lambda: JsonCache(tmp_path / "c", timeout=60),
        "memory": lambda: MemoryCache(timeout=60),
        "sqlite": lambda: SqliteJsonBackend(tmp_path / "kv.db", timeout=60),
        "redis": lambda: RedisJsonBackend(redis, prefix=f"etag-{tmp_path.name}", timeout=60),
    }[kind]()


@pytest.mark.parametrize("kind", ["folder", "memory", "sqlite", "redis"])
@pytest.mark.parametrize("bad", [5, b'"e"', "", 1.5])
def test_an_etag_that_is_no_str_is_a_type_error_in_fill_and_renew(
    kind: str, bad: Any, tmp_path: Path, redis: str
) -> None:
    """The ETag a tier hands to its cache: a number was a raw AttributeError in a folder cache and a
    silent False elsewhere; "" stood for no ETag in Redis. Every cache now refuses it, changing nothing."""
    cache = _caches(kind, tmp_path, redis)
    cache.fill("k", {"v": 1}, etag='"e1"')
    with pytest.raises(TypeError, match="fill's etag is a non-empty str or None"):
        cache.fill("k", {"v": 2}, etag=bad)
    with pytest.raises(TypeError, match="renew's etag is a non-empty str"):
        cache.renew("k", bad)
    with pytest.raises(TypeError, match="renew's etag is a non-empty str"):
        cache.renew("k", None)
    assert cache.load("k") == {"v": 1} and cache.renew("k", '"e1"') is True
    cache.fill("k", {"v": 3})  # no ETag: fine, and nothing to renew it by
    assert cache.load("k") == {"v": 3} and cache.renew("k", '"e1"') is False
    cache.close()
