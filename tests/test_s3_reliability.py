"""Reliability II: each S3 defect the attack campaign found, reproduced through the public API.

Every test here failed before its fix. The fault campaign against a model
is in ``test_s3_campaign.py``.
"""

from __future__ import annotations

import gzip
import io
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Faults, Pipe, Proxy, S3Target, counting

from backends import CorruptValueError, LockError, S3RawBackend

# -- 1, 2. the first streamed write into a missing bucket; the caller's file stays open -----


SOURCES = ["path", "file", "offset-file", "pipe"]


def source_of(kind: str, data: bytes, tmp_path: Path) -> Any:
    if kind == "path":
        path = tmp_path / "source"
        path.write_bytes(data)
        return path
    if kind == "pipe":
        return Pipe(data)
    if kind == "offset-file":
        stream = io.BytesIO(b"skipped" + data)
        stream.seek(7)  # the value starts where the caller's file stands
        return stream
    return io.BytesIO(data)


@pytest.mark.parametrize("key", ["a.bin", "a.txt"], ids=["plain", "gzipped"])
@pytest.mark.parametrize("if_absent", [False, True], ids=["put", "if_absent"])
@pytest.mark.parametrize("kind", SOURCES)
def test_the_first_streamed_write_into_a_missing_bucket_stores_exactly_the_bytes(
    moto: S3Target, tmp_path: Path, kind: str, if_absent: bool, key: str
) -> None:
    data = os.urandom(3000)
    backend = S3RawBackend(f"new-{kind}-{int(if_absent)}-{key[2:]}", client=moto.client, create_bucket=True)
    source = source_of(kind, data, tmp_path)
    assert backend.dump_file(key, source, if_absent=if_absent) is True
    assert backend.load(key) == data
    if not isinstance(source, Path):
        assert not source.closed  # the caller's file is the caller's to close


def test_dump_file_never_closes_the_callers_file(moto: S3Target) -> None:
    backend = S3RawBackend(moto.bucket, prefix="open", client=moto.client)
    big = io.BytesIO(os.urandom(9 * 1024 * 1024))  # multipart through s3transfer
    for key, source in (("small.bin", io.BytesIO(b"x")), ("big.bin", big), ("style.css", io.BytesIO(b"a{}"))):
        assert backend.dump_file(key, source)
        assert not source.closed
    assert backend.load("big.bin") == big.getvalue()
    backend.clear()


# -- 3. a copy or move onto itself keeps the value ---------------------------------------------


@pytest.mark.parametrize("size", [10, 9 * 1024 * 1024])
def test_move_and_copy_onto_itself_keep_the_value(moto: S3Target, size: int) -> None:
    backend = S3RawBackend(moto.bucket, prefix="self", client=moto.client)
    value = os.urandom(size)
    backend["k"] = value
    with counting(moto.client) as log:
        assert backend.move("k", "k") is True
        assert backend.copy("k", "k") is True
    assert log.count() == {"HeadObject": 2}
    assert backend["k"] == value
    assert backend.move("absent", "absent") is False and backend.copy("absent", "absent") is False
    backend.clear()


# -- 4. a failed load_file leaves the caller's file alone -------------------------------------


def test_a_gzip_object_that_does_not_decode_leaves_the_target_untouched(
    moto: S3Target, tmp_path: Path
) -> None:
    backend = S3RawBackend(moto.bucket, prefix="gz", client=moto.client)
    moto.client.put_object(Bucket=moto.bucket, Key="gz/bad.txt", Body=b"not gzip", ContentEncoding="gzip")
    cut = gzip.compress(os.urandom(100_000))[:500]
    moto.client.put_object(Bucket=moto.bucket, Key="gz/cut.txt", Body=cut, ContentEncoding="gzip")
    for key in ("bad.txt", "cut.txt"):
        target = tmp_path / "target"
        target.write_bytes(b"keep me")
        with pytest.raises(CorruptValueError):
            backend.load_file(key, target)
        assert target.read_bytes() == b"keep me"
        stream = io.BytesIO(b"mine")
        stream.seek(4)
        with pytest.raises(CorruptValueError):
            backend.load_file(key, stream)
        assert stream.getvalue() == b"mine"
    assert sorted(os.listdir(tmp_path)) == ["target"]  # no temporary file left
    moto.client.put_object(
        Bucket=moto.bucket, Key="gz/ok.txt", Body=gzip.compress(b"fine"), ContentEncoding="gzip"
    )
    assert backend.load_file("ok.txt", tmp_path / "target") is True
    assert (tmp_path / "target").read_bytes() == b"fine"
    backend.clear()


# -- 5. S3 locks recognise their own lock object after a lost answer -----------------------------


@pytest.fixture
def lossy(moto_server: S3Target) -> Iterator[tuple[Faults, dict[str, Any], Proxy]]:
    faults = Faults()
    with Proxy(moto_server.endpoint_url or "", faults) as proxy:
        yield faults, {**moto_server.options(), "endpoint_url": proxy.endpoint, "retries": 2}, proxy


@pytest.mark.parametrize("engine", ["boto3", "obstore"])
@pytest.mark.parametrize("lost", ["acquire", "renew", "release", "take-over"])
def test_a_lock_survives_a_lost_answer(
    moto_server: S3Target, lossy: tuple[Faults, dict[str, Any], Proxy], lost: str, engine: str
) -> None:
    from backends import S3JsonBackend

    faults, options, proxy = lossy
    prefix = f"lost-{lost}-{engine}"
    backend = S3JsonBackend(moto_server.bucket, prefix=prefix, engine=engine, **options)
    other = S3JsonBackend(moto_server.bucket, prefix=prefix, client=moto_server.client)
    if lost == "take-over":
        clock = [1000.0]
        backend.clock = lambda: clock[0]
        stale = other.lock("k", ttl=5)
        stale.acquire()  # a holder that will never renew nor release
        waiter = backend.lock("k", timeout=0, ttl=30)
        with pytest.raises(LockError):
            waiter.acquire()  # first sight of the holder's lease
        clock[0] += 6
        faults.plan = ["pass", "pass", "lose"]  # PUT and GET pass; the taking-over PUT: answer lost
        lock = waiter.acquire()
    else:
        lock = backend.lock("k", timeout=2, ttl=30)
        faults.plan = ["lose"] if lost == "acquire" else []
        before = proxy.requests.copy()
        lock.acquire()
        # The PUT, its retry's 412, one GET that finds our token: at once, no waiting.
        wanted = {"PUT": 2, "GET": 1} if lost == "acquire" else {"PUT": 1}
        assert proxy.requests - before == Counter(wanted)
    assert lock.held
    with pytest.raises(LockError):
        other.lock("k", timeout=0).acquire()  # really held: nobody else gets it
    if lost == "renew":
        faults.plan = ["lose"]
        lock.renew()
        assert lock.held
    faults.plan = ["lose"] if lost in ("release", "renew") else []
    lock.release()  # no spurious LockError
    with other.lock("k", timeout=0):
        pass  # and no orphan: the lock is free at once
    assert list(other) == []


# -- 6. a cut-off error body is retried ---------------------------------------------------------


def test_a_cut_off_error_body_is_asked_again(moto_server: S3Target) -> None:
    from backends import S3JsonBackend, StoreUnavailableError, TieredBackend, VolatileBackend

    faults = Faults()
    with Proxy(moto_server.endpoint_url or "", faults) as proxy:
        options = {**moto_server.options(), "endpoint_url": proxy.endpoint, "retries": 2}
        backend = S3JsonBackend(moto_server.bucket, prefix="cut", **options)
        tier = TieredBackend(VolatileBackend(), backend)
        calls = {
            "load": lambda: backend.load("absent"),
            "get": lambda: backend.get("absent", "default"),
            "load_many": lambda: backend.load_many(["absent"]),
            "tier": lambda: tier.load("absent"),
            "len": lambda: len(backend),
        }
        for name, call in calls.items():
            faults.plan = ["truncate"]  # the 404's XML (or the listing) cut in half, then a reset
            before = proxy.requests["GET"]
            assert call() in (None, "default", {}, 0), name
            assert proxy.requests["GET"] - before == 2, name
        faults.plan = ["truncate"] * 3  # every attempt cut: the retries run out
        with pytest.raises(StoreUnavailableError):
            backend.load("absent")


# -- 7. foreign objects: one rule for every call -------------------------------------------------


def test_folder_markers_and_odd_objects_get_one_answer_from_every_call(moto: S3Target) -> None:
    from backends import S3JsonBackend

    put = moto.client.put_object
    put(Bucket=moto.bucket, Key="odd/marker", Body=b"", ContentType="application/x-directory")
    put(Bucket=moto.bucket, Key="odd/empty", Body=b"", ContentType="application/json")
    put(Bucket=moto.bucket, Key="odd/typed", Body=b'"v"', ContentType="application/x-directory")
    put(Bucket=moto.bucket, Key="odd/slash/", Body=b"")
    put(Bucket=moto.bucket, Key="odd/old_$folder$", Body=b"")
    backend = S3JsonBackend(moto.bucket, prefix="odd", client=moto.client)
    assert sorted(backend) == ["empty", "typed"] and len(backend) == 2
    assert "marker" not in backend and backend.load("marker") is None and backend.stat("marker") is None
    assert backend.delete("marker") is False and backend.delete_many(["marker", "nothing"]) == 0
    assert "empty" in backend
    with pytest.raises(CorruptValueError):
        backend.load("empty")
    assert backend.load("typed") == "v" and "typed" in backend
    assert backend.delete_many(["typed", "marker"]) == 1
    backend.clear()
    left = sorted(
        o["Key"] for o in moto.client.list_objects_v2(Bucket=moto.bucket, Prefix="odd/")["Contents"]
    )
    assert left == ["odd/marker", "odd/old_$folder$", "odd/slash/"]


# -- 8. options botocore would refuse get a ValueError naming them ---------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -5}, "retries is a whole number from 0 to 100"),
        ({"retries": 1.5}, "retries"),
        ({"addressing_style": "evil"}, "addressing_style is"),
        ({"timeout": -1}, "timeout is seconds"),
        ({"timeout": float("inf")}, "timeout is seconds"),
        ({"max_workers": 0}, "max_workers is"),
        ({"profile": "nope"}, "profile='nope' names no profile"),
    ],
)
def test_an_option_botocore_refuses_is_a_value_error(options: dict[str, Any], message: str) -> None:
    from backends import S3JsonBackend

    with pytest.raises(ValueError, match=message):
        S3JsonBackend("bucket", **options)


def test_an_unknown_profile_in_the_environment_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends import S3JsonBackend

    monkeypatch.setenv("AWS_PROFILE", "nope")
    with pytest.raises(ValueError, match="AWS_PROFILE in the environment names no profile"):
        S3JsonBackend("bucket")


@pytest.mark.parametrize("expires", [1e400, 0, -1, 8 * 86_400, float("nan"), True])
def test_a_presigned_url_lives_one_second_to_seven_days(moto: S3Target, expires: Any) -> None:
    from backends import S3JsonBackend

    backend = S3JsonBackend(moto.bucket, client=moto.client)
    with pytest.raises(ValueError, match="expires is seconds from 1 to 604800"):
        backend.url("k", expires=expires)
    assert "X-Amz-Expires=604800" in backend.url("k", expires=7 * 86_400)


@pytest.mark.parametrize("target", ["path", "file"])
def test_a_cut_off_error_body_inside_a_transfer_is_asked_again(
    moto_server: S3Target, tmp_path: Path, target: str
) -> None:
    faults = Faults()
    with Proxy(moto_server.endpoint_url or "", faults) as proxy:
        options = {**moto_server.options(), "endpoint_url": proxy.endpoint, "retries": 2}
        backend = S3RawBackend(moto_server.bucket, prefix="cut-transfer", **options)
        value = os.urandom(5000)
        source: Any = tmp_path / "source" if target == "path" else io.BytesIO(value)
        if target == "path":
            source.write_bytes(value)
        faults.plan = ["cut500"]  # s3transfer's PUT answered by a 500 cut in half
        assert backend.dump_file("k.bin", source) is True
        into: Any = tmp_path / "into" if target == "path" else io.BytesIO()
        faults.plan = ["pass", "cut500"]  # our HEAD passes; s3transfer's GET: a cut 500
        assert backend.load_file("k.bin", into) is True
        got = into.read_bytes() if target == "path" else into.getvalue()
        assert got == value
        assert proxy.injected["cut500"] == 2
        backend.clear()
