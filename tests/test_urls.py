"""backends.open(url): every scheme, options from the query, and clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from servers import S3Target

import backends


def test_memory_and_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(backends.open("memory://"), backends.VolatileBackend)
    fs = backends.open(f"file://{tmp_path}")
    assert type(fs) is backends.FileSystemJsonBackend and fs.root == tmp_path
    assert type(backends.open(f"{tmp_path}?format=text")) is backends.FileSystemTextBackend
    raw = backends.open(f"file://{tmp_path}/sub?format=raw&durable=yes")
    assert type(raw) is backends.FileSystemRawBackend and raw.durable and raw.root == tmp_path / "sub"
    monkeypatch.chdir(tmp_path)
    assert backends.open("data/x").root == tmp_path / "data" / "x"  # type: ignore[attr-defined]


def test_cache_and_tier_urls(tmp_path: Path, moto: S3Target) -> None:
    cache = backends.open(f"cache://{tmp_path}/c?timeout=30")
    assert type(cache) is backends.JsonCache and cache.timeout == 30
    assert backends.open(f"cache://{tmp_path}/c?timeout=none&format=text").timeout is None  # type: ignore[attr-defined]
    tier = backends.open(
        f"cache://{tmp_path}/c?timeout=5&stale_while_revalidate=10::s3://{moto.bucket}/app",
        client=moto.client,
    )
    assert isinstance(tier, backends.TieredBackend)
    assert tier.cache.timeout == 5 and tier.stale_while_revalidate == 10  # type: ignore[attr-defined]
    assert tier.origin.prefix == "app/"  # type: ignore[attr-defined]
    tier["k"] = {"v": 1}
    assert tier.origin["k"] == {"v": 1} and tier.cache["k"] == {"v": 1}


def test_s3_urls_take_the_backends_options(moto: S3Target) -> None:
    backend = backends.open(
        "s3://my-bucket/some/prefix?format=text&region=eu-west-1&retries=2&max_workers=4&create_bucket=true",
        access_key="k",
        secret_key="s",
    )
    assert type(backend) is backends.S3TextBackend
    assert (backend.bucket, backend.prefix, backend.region) == ("my-bucket", "some/prefix/", "eu-west-1")  # type: ignore[attr-defined]
    assert backend.max_workers == 4  # type: ignore[attr-defined]
    backend["k"] = "made the bucket"
    assert backend["k"] == "made the bucket"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "non-empty"),
        ("ftp://host/x", "unknown URL scheme 'ftp'"),
        ("s3://", "names a bucket"),
        ("s3://bucket:9000/x", "endpoint_url"),
        ("s3://b?colour=red", "unknown parameter 'colour'"),
        ("s3://b?retries=many", "retries='many' is not a valid int"),
        ("s3://b?format=xml", "format='xml'"),
        ("memory://somewhere", "takes no path"),
        ("file://otherhost/x", "not host 'otherhost'"),
        ("cache:///tmp/x?format=xml", "format='xml'"),
        ("cache:///tmp/x?maxbytes=0", "maxbytes is None"),
        ("cache:///tmp/x?maxsize=-3", "maxsize='-3' is not a valid bound"),
        ("cache:///tmp/x?maxbytes=1.5", "maxbytes='1.5' is not a valid bound"),
        ("cache:///tmp/x?maxsize=ten", "maxsize='ten' is not a valid bound"),
        ("cache:///tmp/x?maxbytes=9999999999999999999", "maxbytes is None"),
        (
            "cache:///tmp/x?maxbytes=99999999999999999999",
            "maxbytes='99999999999999999999' is not a valid bound",
        ),
        ("cache:///tmp/x?maxbytes=5&maxbytes=6", "parameter 'maxbytes' is given twice"),
        ("cache:///tmp/x?format=raw&format=json", "parameter 'format' is given twice"),
        ("sqlite:///tmp/x.db?maxsize=5&maxsize=5", "parameter 'maxsize' is given twice"),
        ("redis://127.0.0.1:1/0?prefix=a&prefix=b", "parameter 'prefix' is given twice"),
        ("redis://127.0.0.1:1/0?socket_timeout=1&socket_timeout=2", "socket_timeout. is given twice"),
        ("s3://bucket?region=a&region=b", "parameter 'region' is given twice"),
        ("file:///tmp/x?format=raw&format=json", "parameter 'format' is given twice"),
        ("s3://a::s3://b", "only a cache:// URL"),
    ],
)
def test_a_bad_url_names_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("(", r"\(")):
        backends.open(url)


@pytest.mark.parametrize(
    "url", ["cache:///tmp/x?maxbytes=", "sqlite:///tmp/x.db?maxsize=", "cache:///tmp/x?"]
)
def test_a_parameter_thousands_of_characters_long_is_refused_in_a_message_of_one_line(url: str) -> None:
    long = url + "9" * 5000 if url.endswith("=") else url + "x" * 5000 + "=1"
    with pytest.raises(ValueError) as caught:
        backends.open(long)
    assert len(str(caught.value)) < 300 and "..." in str(caught.value)


def test_a_bound_too_large_to_print_is_refused_by_its_size() -> None:
    with pytest.raises(ValueError, match=r"maxbytes is None .* not a whole number of about 5,001 digits"):
        backends.JsonCache("/tmp/never-made", maxbytes=10**5000)


@pytest.mark.parametrize(
    "url",
    [
        "s3://AKIAEXAMPLE:hunter2-secret@bucket/p",
        "s3://bucket/p?secret_key=hunter2-secret",
        "s3://bucket/p?aws_secret_access_key=hunter2-secret",
        "file://user:hunter2-secret@localhost/tmp/x",
    ],
)
def test_a_url_with_credentials_is_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(ValueError, match="environment") as caught:
        backends.open(url)
    assert "hunter2" not in str(caught.value) and "AKIA" not in str(caught.value)


def test_open_is_not_star_exported() -> None:
    namespace: dict[str, Any] = {}
    exec("from backends import *", namespace)
    assert "open" not in namespace and namespace["open_url"] is backends.open


def test_a_store_registers_its_own_scheme(tmp_path: Path) -> None:
    from backends.urls import as_bool, parse_query, register_scheme, schemes, unregister_scheme

    made: list[dict[str, Any]] = []

    def open_scratch(url: str, options: dict[str, Any]) -> backends.VolatileBackend:
        fmt, kwargs = parse_query(url, {"fast": as_bool}, options)
        made.append({"format": fmt, **kwargs})
        return backends.VolatileBackend()

    assert "scratch" not in schemes()
    register_scheme("scratch", open_scratch)
    try:
        assert {"", "cache", "file", "memory", "s3", "scratch"} <= set(schemes()) and schemes() == sorted(
            schemes()
        )
        assert isinstance(backends.open("scratch://?fast=yes"), backends.VolatileBackend)
        tier = backends.open(f"cache://{tmp_path}::scratch://?format=text", fast=False)
        assert isinstance(tier, backends.TieredBackend)
        assert made == [{"format": "json", "fast": True}, {"format": "text", "fast": False}]
        with pytest.raises(ValueError, match="unknown parameter 'slow'"):
            backends.open("scratch://?slow=1")
        with pytest.raises(ValueError, match="needs '//'"):
            backends.open("scratch:x")
    finally:
        unregister_scheme("scratch")
    with pytest.raises(ValueError, match="unknown URL scheme 'scratch'"):
        backends.open("scratch://")
    with pytest.raises(ValueError, match="URL scheme is lower case"):
        register_scheme("Bad Scheme", open_scratch)
