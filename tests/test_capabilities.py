"""Capabilities: stat, url and expiry, as protocols the command checks, never getattr probes."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from clock import FrozenClock
from servers import S3Target

import backends
from backends import (
    FileSystemJsonBackend,
    FileSystemRawBackend,
    JsonCache,
    MemoryCache,
    S3JsonBackend,
    TieredBackend,
    VolatileBackend,
)
from backends.info import SupportsExpiry, SupportsStat, SupportsUrl, utc


def test_a_folder_stats_its_files_and_gives_file_urls(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    backend["a/b"] = {"v": 1}
    found = backend.stat("a/b")
    assert found is not None
    assert (found.key, found.size, found.content_type) == ("a/b", len(b'{"v":1}'), "application/json")
    assert found.last_modified is not None and found.last_modified >= before
    assert backend.stat("nope") is None and backend.stat("a") is None  # a folder is no key
    assert backend.url("a/b") == (tmp_path / "a+" / "b").as_uri()
    with pytest.raises(ValueError, match="does not expire"):
        backend.url("a/b", expires=60)
    with pytest.raises(backends.InvalidKeyError):
        backend.stat("../x")
    raw = FileSystemRawBackend(tmp_path / "raw")
    raw["k.png"] = b"\x89PNG"
    assert raw.stat("k.png").size == 4  # type: ignore[union-attr]


def test_a_cache_stat_tells_when_written_and_nothing_once_expired(tmp_path: Path) -> None:
    clock = FrozenClock(now=datetime.now(timezone.utc).timestamp())
    cache = JsonCache(tmp_path, timeout=60, clock=clock)
    cache["k"] = [1, 2]
    found = cache.stat("k")
    assert found is not None and found.size == len(b"[1,2]")
    # the time it was written (the ctime), not its deadline (the mtime)
    assert found.last_modified is not None and abs(found.last_modified.timestamp() - clock.now) < 60
    clock.advance(61)
    assert cache.stat("k") is None


def test_a_tier_stats_and_addresses_through_its_origin(tmp_path: Path, moto: S3Target) -> None:
    origin = S3JsonBackend(moto.bucket, prefix="caps", client=moto.client)
    tier = TieredBackend(JsonCache(tmp_path), origin)
    tier["k"] = {"v": 1}
    found, direct = tier.stat("k"), origin.stat("k")
    assert found is not None and found == direct and found.etag is not None
    assert tier.url("k") == origin.url("k")
    assert tier.stat("absent") is None
    memory_tier = TieredBackend(MemoryCache(), VolatileBackend())
    with pytest.raises(NotImplementedError, match="VolatileBackend has no stat"):
        memory_tier.stat("k")
    with pytest.raises(NotImplementedError, match="VolatileBackend has no url"):
        memory_tier.url("k")


def test_who_has_which_capability(tmp_path: Path, moto: S3Target) -> None:
    s3 = S3JsonBackend(moto.bucket, client=moto.client)
    folder, cache, memory = FileSystemJsonBackend(tmp_path / "f"), JsonCache(tmp_path / "c"), MemoryCache()
    has = {
        name: (isinstance(b, SupportsStat), isinstance(b, SupportsUrl), isinstance(b, SupportsExpiry))
        for name, b in {
            "folder": folder,
            "cache": cache,
            "memory cache": memory,
            "volatile": VolatileBackend(),
            "s3": s3,
            "tier": TieredBackend(cache, s3),
        }.items()
    }
    assert has == {
        "folder": (True, True, False),
        "cache": (True, True, True),
        "memory cache": (False, False, True),
        "volatile": (False, False, False),
        "s3": (True, True, False),
        "tier": (True, True, True),
    }


def test_a_tier_tells_when_its_cached_copy_expires(tmp_path: Path) -> None:
    clock = FrozenClock()
    tier = TieredBackend(MemoryCache(timeout=30, clock=clock), FileSystemJsonBackend(tmp_path))
    tier["k"] = 1
    assert tier.expires("k") == utc(clock.now + 30)
    with pytest.raises(KeyError):
        tier.expires("absent")
    plain = TieredBackend(VolatileBackend(), FileSystemJsonBackend(tmp_path))
    with pytest.raises(KeyError):
        plain.expires("k")  # in the origin, not in this cache
    plain["k2"] = 2
    assert plain.expires("k2") is None
