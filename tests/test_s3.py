"""S3 backends: request budget, folders, metadata, URLs, ACLs, errors, secrets."""

from __future__ import annotations

import gzip
import io
import logging
import math
import pickle
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from servers import CREDENTIALS, Faults, Proxy, S3Target, counting

import backends
from backends import S3JsonBackend, S3RawBackend, S3TextBackend

SECRET = CREDENTIALS["aws_secret_access_key"]


def json_backend(target: S3Target, **options: Any) -> S3JsonBackend:
    return S3JsonBackend(target.bucket, client=target.client, **options)


# -- request budget --------------------------------------------------------------------


def test_construction_sends_no_request(moto: S3Target) -> None:
    with counting(moto.client) as log:
        backend = json_backend(moto, prefix="app")
        repr(backend)
        backend.url("k")
    assert log.operations == []


def test_single_key_calls_cost_one_request(moto: S3Target) -> None:
    backend = json_backend(moto, prefix="app")
    with counting(moto.client) as log:
        backend.dump("users/42", {"a": 1})
        assert log.count() == {"PutObject": 1}
        log.clear()
        backend.load("users/42")
        backend.load("absent")  # no HEAD first
        assert log.count() == {"GetObject": 2}
        log.clear()
        assert "users/42" in backend
        assert "absent" not in backend
        assert log.count() == {"HeadObject": 2}
        log.clear()
        assert backend.delete("users/42") is True
        assert log.count() == {"HeadObject": 1, "DeleteObject": 1}
        log.clear()
        assert backend.delete("users/42") is False
        assert log.count() == {"HeadObject": 1}


@pytest.mark.parametrize("count", [0, 1000, 1001])
def test_listing_costs_one_page_per_thousand_keys(moto: S3Target, count: int) -> None:
    backend = json_backend(moto, prefix="many")
    backend.dump_many({f"k{i:05d}": i for i in range(count)})
    other = json_backend(moto, prefix="other")
    other.dump("outside", 1)
    pages = max(1, math.ceil(count / 1000))
    with counting(moto.client) as log:
        assert len(backend) == count
        assert log.count() == {"ListObjectsV2": pages}
        log.clear()
        assert sum(1 for _ in backend.keys()) == count  # noqa: SIM118 - the view is what is tested
        assert log.count() == {"ListObjectsV2": pages}
        log.clear()
        assert bool(backend) is (count > 0)
        assert log.count() == {"ListObjectsV2": 1}
        log.clear()
        backend.clear()
        expected = Counter({"ListObjectsV2": pages, "DeleteObjects": math.ceil(count / 1000)})
        assert log.count() == +expected
    assert len(backend) == 0
    assert other.load("outside") == 1  # clear() left the rest of the bucket alone


def test_listing_is_streamed_page_by_page(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend.dump_many({f"k{i:05d}": i for i in range(2500)})
    with counting(moto.client) as log:
        iterator = iter(backend)
        next(iterator)
        assert log.count() == {"ListObjectsV2": 1}  # not the whole listing up front


def test_delete_many_costs_the_list_pages_and_one_batch_per_thousand(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend.dump_many({f"k{i:05d}": i for i in range(1500)})
    wanted = [f"k{i:05d}" for i in range(0, 1500, 2)] + ["absent"]
    with counting(moto.client) as log:
        assert backend.delete_many(wanted) == 750
    assert log.count() == {"ListObjectsV2": 2, "DeleteObjects": 1}
    assert len(backend) == 750


def test_bulk_calls_run_concurrently_with_one_request_per_key(moto: S3Target) -> None:
    backend = json_backend(moto, max_workers=8)
    with counting(moto.client) as log:
        backend.dump_many({f"k{i}": i for i in range(50)})
        assert log.count() == {"PutObject": 50}
        log.clear()
        assert backend.load_many([f"k{i}" for i in range(60)]) == {f"k{i}": i for i in range(50)}
        assert log.count() == {"GetObject": 60}
        log.clear()
        assert dict(backend.items()) == {f"k{i}": i for i in range(50)}
        assert log.count() == {"ListObjectsV2": 1, "GetObject": 50}
    backend.close()


def test_a_per_key_failure_in_a_batch_delete_raises(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend.dump_many({"a": 1, "b": 2})
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>'
        b"<Error><Key>b</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        b"</DeleteResult>"
    )
    with answering(moto.client, "DeleteObjects", 200, body):
        with pytest.raises(backends.PermissionDeniedError, match=r"1 of 2 keys not deleted: 'b'"):
            backend.delete_many(["a", "b"])


# -- conditional writes ------------------------------------------------------------------


def test_if_match_writes_only_over_the_given_etag(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend["k"] = 1
    stat = backend.stat("k")
    assert stat is not None and stat.etag
    with counting(moto.client) as log:
        assert backend.dump("k", 2, if_match=stat.etag) is True
        assert backend.dump("k", 3, if_match=stat.etag) is False  # the ETag moved on
        assert backend.dump("absent", 3, if_match=stat.etag) is False
    assert log.count() == {"PutObject": 3}
    assert backend["k"] == 2
    assert "absent" not in backend
    with pytest.raises(TypeError):
        backend.dump("k", 1, if_absent=True, if_match=stat.etag)


def test_if_absent_sends_if_none_match(moto: S3Target) -> None:
    backend = json_backend(moto)
    sent: list[bytes | None] = []
    moto.client.meta.events.register_first(
        "before-send.s3.PutObject", lambda request, **_: sent.append(request.headers.get("If-None-Match"))
    )
    assert backend.dump("k", 1, if_absent=True) is True
    assert backend.dump("k", 2, if_absent=True) is False
    assert sent == [b"*", b"*"]
    assert backend["k"] == 1


# -- folders and metadata ----------------------------------------------------------------


def test_folder_markers_of_other_tools_are_folders_not_keys(moto: S3Target) -> None:
    client, bucket = moto.client, moto.bucket
    client.put_object(Bucket=bucket, Key="app/photos/", Body=b"")
    client.put_object(Bucket=bucket, Key="app/videos_$folder$", Body=b"")
    client.put_object(Bucket=bucket, Key="app/docs", Body=b"", ContentType="application/x-directory")
    client.put_object(Bucket=bucket, Key="app/photos/cat.jpg", Body=b"jpg")
    client.put_object(Bucket=bucket, Key="app/a//b", Body=b"x")  # no key can be this name
    raw = S3RawBackend(bucket, prefix="app", client=client)
    raw["empty"] = b""  # an empty value is a key, not a marker
    assert set(raw) == {"photos/cat.jpg", "empty"}
    assert len(raw) == 2
    assert "docs" not in raw and raw.load("docs") is None
    assert sorted(raw.list()) == ["a/", "empty", "photos/", "videos/"]
    assert list(raw.list("photos/")) == ["photos/cat.jpg"]


def test_list_gives_one_level(moto: S3Target) -> None:
    backend = json_backend(moto, prefix="tree")
    backend.dump_many({"a": 1, "b/c": 2, "b/d/e": 3, "b/d/f": 4, "bb": 5})
    with counting(moto.client) as log:
        assert sorted(backend.list()) == ["a", "b/", "bb"]
        assert sorted(backend.list("b/")) == ["b/c", "b/d/"]
        assert sorted(backend.list("b")) == ["b/", "bb"]
    assert log.count() == {"ListObjectsV2": 3}


def test_stat_and_stat_many(moto: S3Target) -> None:
    raw = S3RawBackend(
        moto.bucket,
        client=moto.client,
        storage_class="STANDARD_IA",
        cache_control="max-age=60",
        metadata={"owner": "ada"},
    )
    raw["img/cat.png"] = b"\x89PNG"
    stat = raw.stat("img/cat.png")
    assert stat is not None
    assert (stat.size, stat.content_type, stat.storage_class) == (4, "image/png", "STANDARD_IA")
    assert (stat.cache_control, stat.metadata) == ("max-age=60", {"owner": "ada"})
    assert stat.etag and stat.last_modified is not None
    assert raw.stat("absent") is None
    raw["img/dog.png"] = b"12345"
    with counting(moto.client) as log:
        stats = {s.key: s for s in raw.stat_many("img/")}
    assert log.count() == {"ListObjectsV2": 1}
    assert {k: s.size for k, s in stats.items()} == {"img/cat.png": 4, "img/dog.png": 5}
    assert stats["img/cat.png"].etag == stat.etag


def test_copy_and_move_on_the_server(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend["src"] = {"v": 1}
    with counting(moto.client) as log:
        assert backend.copy("src", "dst") is True
        assert log.count() == {"CopyObject": 1}
        log.clear()
        assert backend.move("dst", "moved") is True
        assert log.count() == {"CopyObject": 1, "DeleteObject": 1}
    assert backend.copy("absent", "x") is False
    assert backend.move("absent", "x") is False
    assert dict(backend.items()) == {"src": {"v": 1}, "moved": {"v": 1}}


# -- publishing -------------------------------------------------------------------------


def test_url_is_region_correct_and_percent_encoded(moto: S3Target) -> None:
    aws = S3JsonBackend("my-bucket", "eu-west-1", access_key="k", secret_key="s")
    assert aws.url("a b/é+x") == "https://my-bucket.s3.eu-west-1.amazonaws.com/a%20b/%C3%A9%2Bx"
    dotted = S3JsonBackend("my.bucket", "eu-west-1", prefix="p", access_key="k", secret_key="s")
    assert dotted.url("k") == "https://s3.eu-west-1.amazonaws.com/my.bucket/p/k"
    local = S3JsonBackend("bkt", endpoint_url="http://127.0.0.1:9000", access_key="k", secret_key="s")
    assert local.url("x y") == "http://127.0.0.1:9000/bkt/x%20y"


def test_presigned_url_works_over_http(moto_server: S3Target) -> None:
    backend = S3RawBackend(moto_server.bucket, prefix="pub", **moto_server.options())
    backend["hello world.bin"] = b"\x00payload"
    url = backend.url("hello world.bin", expires=300)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    assert url.startswith(moto_server.endpoint_url + "/")
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"\x00payload"
    backend.close()


def test_acls(moto: S3Target) -> None:
    sent: list[bytes | None] = []
    moto.client.meta.events.register_first(
        "before-send.s3.PutObject", lambda request, **_: sent.append(request.headers.get("x-amz-acl"))
    )
    default = json_backend(moto)
    default["k"] = 1
    json_backend(moto, acl="public-read")["p"] = 1
    assert sent == [None, b"public-read"]  # no ACL unless asked for
    assert default.make_public("k") is True
    grants = moto.client.get_object_acl(Bucket=moto.bucket, Key="k")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    assert default.make_private("k") is True
    assert default.make_public("absent") is False


def test_acls_on_a_bucket_with_acls_disabled_name_the_alternative(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend["k"] = 1
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessControlListNotSupported</Code>'
        b"<Message>The bucket does not allow ACLs</Message></Error>"
    )
    with answering(moto.client, "PutObjectAcl", 400, body):
        with pytest.raises(backends.StoreError, match=r"ACLs disabled.*bucket policy") as info:
            backend.make_public("k")
    assert info.value.__cause__ is not None


# -- raw values -------------------------------------------------------------------------


def test_text_assets_are_gzipped_and_come_back_plain(moto: S3Target) -> None:
    raw = S3RawBackend(moto.bucket, client=moto.client)
    script = b"function f() { return 1; }\n" * 200
    raw["static/app.js"] = script
    raw["static/logo.png"] = b"\x89PNG"
    stored = moto.client.get_object(Bucket=moto.bucket, Key="static/app.js")
    assert stored["ContentEncoding"] == "gzip"
    assert stored["ContentType"] == "text/javascript"
    assert gzip.decompress(stored["Body"].read()) == script
    assert raw["static/app.js"] == script
    plain = moto.client.head_object(Bucket=moto.bucket, Key="static/logo.png")
    assert "ContentEncoding" not in plain and plain["ContentType"] == "image/png"
    out = io.BytesIO()
    assert raw.load_file("static/app.js", out) and out.getvalue() == script
    raw.dump_file("static/site.css", io.BytesIO(b"body{}" * 100))
    assert raw["static/site.css"] == b"body{}" * 100
    none = S3RawBackend(moto.bucket, client=moto.client, gzip_extensions=())
    none["x.js"] = b"1"
    assert "ContentEncoding" not in moto.client.head_object(Bucket=moto.bucket, Key="x.js")


def test_json_and_text_content_types(moto: S3Target) -> None:
    json_backend(moto)["j"] = {"a": 1}
    S3TextBackend(moto.bucket, client=moto.client)["t"] = "é\r\n"
    head = moto.client.head_object
    assert head(Bucket=moto.bucket, Key="j")["ContentType"] == "application/json"
    assert head(Bucket=moto.bucket, Key="t")["ContentType"] == "text/plain; charset=utf-8"
    assert moto.client.get_object(Bucket=moto.bucket, Key="t")["Body"].read() == "é\r\n".encode()


def test_files_stream_through_s3transfer(moto: S3Target, tmp_path: Any) -> None:
    raw = S3RawBackend(moto.bucket, client=moto.client)
    source = tmp_path / "big.bin"
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB: three multipart parts
    source.write_bytes(payload)
    with counting(moto.client) as log:
        assert raw.dump_file("blobs/big.bin", source) is True
    assert log.count()["UploadPart"] == 3
    target = tmp_path / "out.bin"
    with counting(moto.client) as log:
        assert raw.load_file("blobs/big.bin", target) is True
    assert target.read_bytes() == payload
    assert log.count() == {"HeadObject": 1, "GetObject": 3}
    assert raw.load_file("absent", tmp_path / "none.bin") is False
    assert not (tmp_path / "none.bin").exists()
    assert raw.dump_file("blobs/big.bin", source, if_absent=True) is False
    assert raw.dump_file("blobs/new.bin", io.BytesIO(b"abc"), if_absent=True) is True
    assert raw["blobs/new.bin"] == b"abc"
    raw.close()


# -- buckets, errors, secrets ------------------------------------------------------------


def test_a_missing_bucket_is_an_error_on_first_use(moto: S3Target) -> None:
    backend = S3JsonBackend("no-such-bucket", client=moto.client)
    with pytest.raises(backends.BucketNotFoundError, match="no-such-bucket") as info:
        backend["k"] = 1
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_create_bucket_creates_it_in_the_region(moto: S3Target, region: str) -> None:
    backend = S3JsonBackend(f"made-{region}", region, create_bucket=True, **fake_keys())
    with counting(backend.client) as log:
        backend["k"] = 1
    assert log.count() == {"PutObject": 2, "CreateBucket": 1}
    location = backend.client.get_bucket_location(Bucket=f"made-{region}")["LocationConstraint"]
    assert (location or "us-east-1") == region
    assert backend["k"] == 1


def test_threads_meeting_a_missing_bucket_create_it_once(moto: S3Target) -> None:
    backend = S3JsonBackend("made-once", create_bucket=True, **fake_keys())
    with counting(backend.client) as log:
        backend.dump_many({f"k{i}": i for i in range(64)})
    assert log.count()["CreateBucket"] == 1
    assert len(backend) == 64
    backend.client.delete_objects(
        Bucket="made-once", Delete={"Objects": [{"Key": f"k{i}"} for i in range(64)]}
    )
    backend.client.delete_bucket(Bucket="made-once")
    backend["again"] = 1  # deleted later: made again
    assert backend["again"] == 1


def test_create_bucket_refuses_someone_elses_bucket(moto: S3Target) -> None:
    backend = S3JsonBackend("taken", create_bucket=True, client=moto.client)
    missing = (
        b"<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>"
    )
    taken = (
        b"<Error><Code>BucketAlreadyExists</Code>"
        b"<Message>The requested bucket name is not available</Message></Error>"
    )
    with (
        answering(moto.client, "PutObject", 404, missing),
        answering(moto.client, "CreateBucket", 409, taken),
    ):
        with pytest.raises(backends.PermissionDeniedError, match="belongs to another account"):
            backend["k"] = 1


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (403, "AccessDenied", backends.PermissionDeniedError),
        (403, "SignatureDoesNotMatch", backends.PermissionDeniedError),
        (403, "InvalidAccessKeyId", backends.PermissionDeniedError),
        (503, "SlowDown", backends.StoreUnavailableError),
        (500, "InternalError", backends.StoreUnavailableError),
    ],
)
def test_errors_are_typed_and_keep_the_cause(moto: S3Target, status: int, code: str, error: type) -> None:
    backend = S3JsonBackend(
        moto.bucket, client=moto.new_client(retries={"mode": "standard", "total_max_attempts": 3})
    )
    body = f"<Error><Code>{code}</Code><Message>nope</Message></Error>".encode()
    with answering(backend.client, "GetObject", status, body) as calls, pytest.raises(error) as info:
        backend.load("k")
    assert info.value.__cause__ is not None
    assert len(calls) == (3 if status >= 500 else 1)  # retried with backoff, then raised


def test_a_wrong_region_names_the_real_one(moto: S3Target) -> None:
    backend = json_backend(moto)
    body = b"<Error><Code>PermanentRedirect</Code><Message>Use the right endpoint</Message></Error>"
    with answering(moto.client, "GetObject", 301, body, {"x-amz-bucket-region": "ap-southeast-2"}):
        with pytest.raises(
            backends.StoreError, match=r"region 'ap-southeast-2'.*pass region='ap-southeast-2'"
        ):
            backend.load("k")


def test_no_credentials_is_a_clear_permission_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    backend = S3JsonBackend("bkt", endpoint_url="http://127.0.0.1:9", retries=0)
    with pytest.raises(backends.PermissionDeniedError, match="no AWS credentials"):
        backend.load("k")


def test_an_unreachable_endpoint_is_store_unavailable() -> None:
    backend = S3JsonBackend("bkt", endpoint_url="http://127.0.0.1:9", retries=1, timeout=2, **fake_keys())
    with pytest.raises(backends.StoreUnavailableError, match="unreachable") as info:
        backend.load("k")
    assert info.value.__cause__ is not None


def test_aws_endpoint_url_s3_is_honoured(moto_server: S3Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint_url)
    backend = S3JsonBackend(moto_server.bucket, prefix="env", addressing_style="path", **fake_keys())
    backend["k"] = 1
    assert moto_server.client.get_object(Bucket=moto_server.bucket, Key="env/k")["Body"].read() == b"1"


def test_no_secret_in_repr_messages_or_logs(moto_server: S3Target, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="must not carry credentials") as refused:
        S3JsonBackend(
            "bkt", endpoint_url=moto_server.endpoint_url.replace("http://", f"http://user:{SECRET}@")
        )
    backend = S3JsonBackend(
        "no-such-bucket-here",
        endpoint_url=moto_server.endpoint_url,
        access_key=CREDENTIALS["aws_access_key_id"],
        secret_key=SECRET,
        session_token="session-token-never-shown",
        addressing_style="path",
        retries=0,
    )
    texts = [str(refused.value), repr(backend), str(backend), repr(vars(backend))]
    for action in (
        lambda: backend.load("k"),
        lambda: backend.dump("k", math.nan),
        lambda: backend.load("../k"),
    ):
        with pytest.raises(backends.BackendError) as info:
            action()
        texts += [str(info.value), repr(info.value)]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("backends")]
    for text in texts + ours:
        assert SECRET not in text
        assert "session-token-never-shown" not in text
    # botocore's own DEBUG log (opt-in) prints the signed request, session
    # token header included, but never the secret key (README: "Secrets").
    assert caplog.records
    assert not any(SECRET in record.getMessage() for record in caplog.records)


def test_pickling_is_refused_clearly(moto: S3Target) -> None:
    with pytest.raises(TypeError, match="one per process"):
        pickle.dumps(json_backend(moto))


# -- helpers ------------------------------------------------------------------------------


def fake_keys() -> dict[str, str]:
    return {"access_key": CREDENTIALS["aws_access_key_id"], "secret_key": SECRET}


class answering:
    """Answer one S3 operation of a client with a fixed HTTP response (the real error bodies)."""

    def __init__(
        self, client: Any, operation: str, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.client, self.event = client, f"before-send.s3.{operation}"
        self.status, self.body, self.headers = status, body, headers or {}
        self.calls: list[str] = []

    def __call__(self, request: Any, **kwargs: Any) -> AWSResponse:
        self.calls.append(request.url)
        raw = _Raw(self.body)
        return AWSResponse(request.url, self.status, {"Content-Type": "application/xml", **self.headers}, raw)

    def __enter__(self) -> list[str]:
        self.client.meta.events.register_first(self.event, self)
        return self.calls

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister(self.event, self)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Any:
        yield self.body


def test_without_boto3_the_package_imports_and_s3_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
        "import backends\n"
        "backends.FileSystemJsonBackend(sys.argv[1])['k'] = 1\n"
        "try:\n"
        "    backends.S3JsonBackend('bucket')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [sys.executable, "-c", script, folder], capture_output=True, text=True, check=True
        )
    assert done.stdout.strip() == "S3 backends need boto3: pip install 'backends[s3]'"


def test_setdefault_gives_up_when_the_store_contradicts_itself(seaweedfs: S3Target) -> None:
    # SeaweedFS answers 412 to a conditional PUT of "a" while "a/b" exists,
    # and NoSuchKey to a GET of "a": setdefault must not spin forever.
    backend = S3JsonBackend(seaweedfs.bucket, prefix="quirk", client=seaweedfs.client)
    backend["a/b"] = 1
    with counting(seaweedfs.client) as log:
        with pytest.raises(backends.StoreError, match="refuses to create the key"):
            backend.setdefault("a", 2)
    assert log.count() == {"PutObject": 8, "GetObject": 8}
    backend.clear()


def test_metadata_leaves_room_for_the_backends_own_and_reserves_its_token() -> None:
    # S3 takes 2 KB of user metadata in all: ours (size, MD5, a conditional write's
    # token) takes up to 123 bytes of it, so that no conditional PUT is refused for its size.
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
    }
    S3RawBackend("bucket", metadata={"big": "x" * 1922}, **options).close()  # 1925 bytes: no request
    with pytest.raises(ValueError, match="at most 1925"):
        S3RawBackend("bucket", metadata={"big": "x" * 1923}, **options)
    with pytest.raises(ValueError, match="backend's own"):
        S3RawBackend("bucket", metadata={"BACKENDS-TOKEN": "mine"}, **options)


@pytest.mark.parametrize("engine", ["boto3", "obstore"])
def test_a_conditional_write_whose_answer_was_lost_knows_it_won_on_seaweedfs(
    seaweedfs: S3Target, engine: str
) -> None:
    faults = Faults()
    with Proxy(seaweedfs.endpoint_url or "", faults) as proxy:
        options = {**seaweedfs.options(), "endpoint_url": proxy.endpoint, "retries": 2, "engine": engine}
        raw = S3RawBackend(seaweedfs.bucket, prefix=f"won-{engine}", **options)
        raw.clear()
        raw["m"] = b"old"
        etag = raw.stat("m").etag
        writes: list[tuple[str, Any]] = [
            ("k", lambda: raw.dump("k", b"new", if_absent=True)),
            ("m", lambda: raw.dump("m", b"new", if_match=etag)),
            ("f", lambda: raw.dump_file("f", io.BytesIO(b"new"), if_absent=True)),
            ("z.json", lambda: raw.dump("z.json", b"new", if_absent=True)),  # gzipped
        ]
        for key, write in writes:
            before = proxy.requests.copy()
            faults.plan = ["lose"]  # applied, the answer lost: the retry finds the condition failed
            assert write() is True, key
            assert proxy.requests - before == Counter({"PUT": 2, "HEAD": 1}), key
            assert raw[key] == b"new" and raw.stat(key).metadata == {}, key
        assert proxy.injected["lose"] == len(writes)
        assert raw.dump("k", b"again", if_absent=True) is False  # and a plain loss is still one
        raw.clear()
        raw.close()


def test_delete_many_lists_only_the_range_of_its_keys(moto: S3Target) -> None:
    backend = json_backend(moto)
    backend.dump_many({f"k{i:05d}": i for i in range(2100)})
    with counting(moto.client) as log:
        assert backend.delete_many(["k02050", "k02051", "k02099", "k99999"]) == 3
    assert log.count() == {"ListObjectsV2": 1, "DeleteObjects": 1}  # not the 3 pages of the whole store
    assert len(backend) == 2097


def test_a_conflicting_conditional_put_of_a_file_is_asked_again_from_the_start(moto_server: S3Target) -> None:
    # Over HTTP: after an earlier mock_aws, in-process moto answered the retry with 412.
    raw = S3RawBackend(moto_server.bucket, prefix="conflict", client=moto_server.client)
    conflict = b"<Error><Code>ConditionalRequestConflict</Code><Message>try again</Message></Error>"
    calls: list[str] = []

    def first_conflicts(request: Any, **kwargs: Any) -> AWSResponse | None:
        calls.append(request.url)
        if len(calls) == 1:
            return AWSResponse(request.url, 409, {"Content-Type": "application/xml"}, _Raw(conflict))
        return None  # then moto answers

    moto_server.client.meta.events.register_first("before-send.s3.PutObject", first_conflicts)
    assert raw.dump_file("blob.bin", io.BytesIO(b"0123456789" * 500), if_absent=True) is True
    assert len(calls) == 2
    assert raw["blob.bin"] == b"0123456789" * 500  # the whole body, not what was left after the first try
    assert raw.dump_file("blob.bin", io.BytesIO(b"x"), if_absent=True) is False
    moto_server.client.meta.events.unregister("before-send.s3.PutObject", first_conflicts)
    raw.clear()
