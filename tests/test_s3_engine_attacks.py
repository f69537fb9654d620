"""Reliability V (#25): the obstore engine as strict as boto3's, attacked as ATTACKS.md says.

Every failure of the loopback proxy (``servers.ACTIONS``: 503s, 500s, cut
500s, resets, lost, cut, stalled and trickled answers, a 403 that echoes the
signed request, a 301 to another region) and every bad input runs through
both engines: the same error class and the same botocore cause on each, no
secret anywhere in an exception chain, and no request at all for bad input.
``BACKENDS_LONG=1`` runs every call through every fault, and more threads.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from servers import ACTIONS, REAL_REGION, Faults, Pipe, Proxy, S3Target, chain, denied

import backends
from backends import (
    BackendError,
    PermissionDeniedError,
    S3JsonBackend,
    S3RawBackend,
    StoreError,
    StoreUnavailableError,
)

LONG = os.environ.get("BACKENDS_LONG") == "1"
ENGINES = ["boto3", "obstore"]
SECRET = "SECRETkey/" + "q" * 30
TOKEN = "TOKENsession" + "z" * 40
PLANTED = {"access_key": "AKIAPLANTED", "secret_key": SECRET, "session_token": TOKEN}


@pytest.fixture
def wire(moto_server: S3Target) -> Iterator[tuple[Proxy, Faults]]:
    faults = Faults()
    with Proxy(moto_server.endpoint_url or "", faults) as proxy:
        yield proxy, faults


@pytest.fixture(scope="module")
def quiet_wire(moto_endpoint: str) -> Iterator[Proxy]:
    """One proxy for the bad-input tests, which count what it forwarded."""
    with Proxy(moto_endpoint) as proxy:
        yield proxy


def through(proxy: Proxy, target: S3Target, engine: str, cls: Any = S3JsonBackend, **options: Any) -> Any:
    """A backend on ``target`` through ``proxy``, signing with the planted secret key and token."""
    settings = {"addressing_style": "path", "retries": 1, "timeout": 1, **PLANTED, **options}
    return cls(target.bucket, endpoint_url=proxy.endpoint, engine=engine, **settings)


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert TOKEN not in text


def sent(proxy: Proxy) -> int:
    return sum(proxy.requests.values())


# -- secrets: a 403 that echoes the signed request ----------------------------------------------


def test_the_proxys_denial_echoes_the_session_token_as_aws_does() -> None:
    body = denied("GET", "/b/k", {"X-Amz-Security-Token": TOKEN, "Host": "h"}).decode()
    assert "<Code>SignatureDoesNotMatch</Code>" in body and TOKEN in body


@pytest.mark.parametrize("given", ["argument", "environment"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_denial_echoing_the_token_leaves_no_secret_in_the_chain(
    moto_server: S3Target,
    wire: tuple[Proxy, Faults],
    monkeypatch: pytest.MonkeyPatch,
    engine: str,
    given: str,
) -> None:
    proxy, faults = wire
    keys: dict[str, Any] = PLANTED
    if given == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", PLANTED["access_key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
        keys = {"access_key": None, "secret_key": None, "session_token": None}
    backend = through(proxy, moto_server, engine, prefix=f"deny-{engine}", **keys)
    backend["k"] = {"v": 1}
    faults.always = "deny"
    calls: list[Callable[[], Any]] = [
        lambda: backend.load("k"),
        lambda: backend.dump("k", 2),
        lambda: "k" in backend,
        lambda: backend.stat("k"),
        lambda: backend.load_if_changed("k", '"abc"'),
        lambda: backend.load_many(["k", "j"]),
        lambda: backend.dump_many({"k": 1, "j": 2}),
    ]
    for call in calls:
        with pytest.raises(PermissionDeniedError, match="access denied") as info:
            call()
        assert_no_secret(chain(info.value))
    assert proxy.injected["deny"] >= len(calls)
    faults.always = ""
    backend.clear()
    backend.close()
    with pytest.raises(StoreError, match="closed") as info:
        backend.load("k")  # closed: refused, and no secret either
    assert_no_secret(chain(info.value) + repr(backend))


# -- one fault, one error, on both engines ----------------------------------------------------------


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """The error class of a call and the class of its cause ("ok" when it returned)."""
    try:
        call()
    except BackendError as exc:
        assert_no_secret(chain(exc))
        return type(exc).__name__, type(exc.__cause__).__name__
    return "ok", ""


def fault_calls(backend: Any, action: str = "") -> dict[str, Callable[[], Any]]:
    calls: dict[str, Callable[[], Any]] = {"load": lambda: backend.load("k")}
    if LONG or action != "stall":  # a stall costs its timeout twice: the default run loads only
        calls["dump"] = lambda: backend.dump("k", {"pad": "y" * 300})
    if LONG:
        calls |= {
            "contains": lambda: "k" in backend,
            "stat": lambda: backend.stat("k"),
            "load_if_changed": lambda: backend.load_if_changed("k", '"abc"'),
            "if_absent": lambda: backend.dump("new", 1, if_absent=True),
        }
    return calls


def test_every_fault_gives_the_same_error_and_cause_on_both_engines(
    moto_server: S3Target, wire: tuple[Proxy, Faults], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, faults = wire
    caplog.set_level(logging.DEBUG, logger="backends")
    faults.stall_seconds, faults.trickle_chunks, faults.trickle_gap = 1.0, 4, 0.1
    seen: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}
    for engine in ENGINES:
        backend = through(proxy, moto_server, engine, prefix=f"faults-{engine}", timeout=0.5)
        seen[engine] = {}
        for action in ACTIONS:
            for name, call in fault_calls(backend, action).items():
                backend.dump("k", {"pad": "x" * 300})
                faults.always = action
                seen[engine][action, name] = outcome(call)
                faults.always = ""
        backend.clear()
        backend.close()
        backend.close()  # twice: nothing more
        for name, call in fault_calls(backend).items():
            seen[engine]["closed", name] = outcome(call)
    print("\n".join(f"{where}: {seen['boto3'][where]} {seen['obstore'][where]}" for where in seen["boto3"]))
    classes = {engine: {where: got[0] for where, got in found.items()} for engine, found in seen.items()}
    assert classes["obstore"] == classes["boto3"]
    # The cause too, but for a 500 cut off after a PUT: boto3 meets the reset on its retry
    # (ConnectionClosedError), obstore while reading the 500 (ResponseStreamingError).
    loads = {
        engine: {where: got for where, got in found.items() if where[1] != "dump"}
        for engine, found in seen.items()
    }
    assert loads["obstore"] == loads["boto3"]
    expected = {
        "slowdown": ("StoreUnavailableError", "ClientError"),
        "error500": ("StoreUnavailableError", "ClientError"),
        "reset": ("StoreUnavailableError", "ConnectionClosedError"),
        "lose": ("StoreUnavailableError", "ConnectionClosedError"),
        "stall": ("StoreUnavailableError", "ReadTimeoutError"),
        "trickle": ("ok", ""),
        "deny": ("PermissionDeniedError", "ClientError"),
        "redirect": ("StoreError", "ClientError"),
        "hostile": ("StoreUnavailableError", "ClientError"),
        "garbled": ("StoreUnavailableError", "ClientError"),
    }
    for action, answer in expected.items():
        assert seen["obstore"][action, "load"] == answer, action
    assert seen["obstore"]["truncate", "load"] == ("StoreUnavailableError", "ResponseStreamingError")
    assert seen["obstore"]["closed", "load"] == ("StoreError", "NoneType")
    logged = "\n".join(record.getMessage() + repr(record.args) for record in caplog.records)
    assert_no_secret(logged)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wrong_region_names_the_real_one(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, prefix="region")
    faults.always = "redirect"
    for call in (lambda: backend.load("k"), lambda: backend.dump("k", 1), lambda: "k" in backend):
        with pytest.raises(StoreError, match=f"region {REAL_REGION!r}.*pass region={REAL_REGION!r}") as info:
            call()
        assert not isinstance(info.value, StoreUnavailableError)
        assert_no_secret(chain(info.value))


@pytest.mark.parametrize("action", ["hostile", "garbled"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_hostile_error_message_reaches_the_caller_on_one_line(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str, action: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, prefix="hostile")
    faults.always = action  # a 500 whose message holds CR/LF, ESC, BEL, CSI (and invalid UTF-8)
    with pytest.raises(StoreUnavailableError, match="S3 kept failing") as info:
        backend.load("k")
    message = str(info.value)
    if engine == "obstore":  # botocore's XML parser refuses the control characters: "500: ..."
        assert "one\\r\\nline two \\x1b[31mred" in message
    assert not any(ord(char) < 32 or 0x7F <= ord(char) < 0xA0 for char in message), message
    assert message.encode("utf-8")  # no lone surrogate either


@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_that_cannot_be_reached_is_could_not_connect(engine: str) -> None:
    backend = S3JsonBackend("bucket", endpoint_url="http://127.0.0.1:9", engine=engine, retries=0, **PLANTED)
    with pytest.raises(StoreUnavailableError, match="EndpointConnectionError") as info:
        backend.load("k")
    assert_no_secret(chain(info.value))


@pytest.mark.parametrize("engine", ENGINES)
def test_no_credentials_anywhere_is_said_so_on_both_engines(
    moto_server: S3Target, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    backend = S3JsonBackend(
        moto_server.bucket,
        endpoint_url=moto_server.endpoint_url,
        region="us-east-1",
        engine=engine,
        retries=0,
    )
    with pytest.raises(PermissionDeniedError, match="no AWS credentials found") as info:
        backend.load("k")
    assert type(info.value.__cause__).__name__ == "NoCredentialsError"


# -- time: a timeout bounds each read, and a stalled server is a bounded, typed error ---------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_timeout_bounds_each_read_not_the_whole_transfer(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, S3RawBackend, prefix=f"slow-{engine}", timeout=1)
    value = os.urandom(2 * 1024 * 1024)
    backend["big.bin"] = value
    # 2 MB in 8 parts 0.2 s apart: 1.6 s in all, longer than the timeout; no read waits 1 s.
    faults.always, faults.trickle_chunks, faults.trickle_gap = "trickle", 8, 0.2
    before = proxy.requests["GET"]
    assert backend["big.bin"] == value
    assert proxy.requests["GET"] - before == 1  # read at the first try: no timeout, no retry
    faults.always = ""
    backend.clear()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stalled_server_is_a_read_timeout_and_service_comes_back(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, prefix=f"stall-{engine}", timeout=0.5, retries=1)
    backend["k"] = 1
    faults.always, faults.stall_seconds = "stall", 1.5  # a paused server: every answer late
    before = proxy.requests["GET"]
    with pytest.raises(StoreUnavailableError, match="ReadTimeoutError"):
        backend.load("k")
    assert proxy.requests["GET"] - before == 2  # the request and its one retry, each timed out
    faults.always = ""  # the server resumes
    assert backend.load("k") == 1
    backend.clear()


# -- stat tells what a HEAD tells --------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_stat_tells_the_storage_class_and_size(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, _ = wire
    cold = through(
        proxy, moto_server, engine, S3RawBackend, prefix=f"class-{engine}", storage_class="STANDARD_IA"
    )
    cold["x.bin"] = b"12345"
    plain = through(proxy, moto_server, engine, S3RawBackend, prefix=f"class-{engine}")
    plain["y.bin"] = b"1"
    head = moto_server.client.head_object(Bucket=moto_server.bucket, Key=f"class-{engine}/x.bin")
    assert head["StorageClass"] == "STANDARD_IA"
    before = proxy.requests["HEAD"]
    found, other = cold.stat("x.bin"), plain.stat("y.bin")
    assert found is not None and (found.storage_class, found.size) == ("STANDARD_IA", 5)
    assert other is not None and other.storage_class == "STANDARD"
    assert proxy.requests["HEAD"] - before == 2  # one HEAD each, as before
    cold.clear()


# -- bad input in every header-bound argument: refused before any request ---------------------------

#: (argument named in the error, backend options) refused at construction
BAD_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("cache_control", {"cache_control": "max-age=1\r\nX-Evil: 1"}),
    ("cache_control", {"cache_control": "max-âge"}),
    ("cache_control", {"cache_control": 60}),
    ("cache_control", {"cache_control": " max-age=1"}),
    ("content_type", {"content_type": "text/plain\nX: y"}),
    ("content_type", {"content_type": "tëxt/plain"}),
    ("content_type", {"content_type": b"text/plain"}),
    ("acl", {"acl": "public-read\r\n"}),
    ("acl", {"acl": "everyone"}),
    ("acl", {"acl": 1}),
    ("storage_class", {"storage_class": "STANDARD\r\nX: y"}),
    ("storage_class", {"storage_class": "STANDARD IA"}),
    ("storage_class", {"storage_class": 3}),
    ("metadata", {"metadata": {"owner": "zoë"}}),
    ("metadata", {"metadata": {"owner": "a\r\nX-Evil: 1"}}),
    ("metadata", {"metadata": {"own\ner": "a"}}),
    ("metadata", {"metadata": {"owner": 42}}),
    ("metadata", {"metadata": {42: "a"}}),
    ("metadata", {"metadata": {"ünïcode": "a"}}),
    ("metadata", {"metadata": [("owner", "a")]}),
    ("metadata", {"metadata": {"backends-size": "1"}}),
    ("metadata", {"metadata": {"Backends-Token": "1"}}),
    ("metadata", {"metadata": {"big": "x" * 1950}}),  # 2 KB with the backend's own
    ("metadata", {"metadata": {"big": "x" * 3000}}),
    ("region", {"region": "eu-west-1\r\nX: y"}),
    ("region", {"region": "ëu"}),
]
#: (argument named in the error, a call with it)
BAD_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("if_match", lambda b: b.dump("k", 1, if_match='"abc"\r\nX-Evil: 1')),
    ("if_match", lambda b: b.dump("k", 1, if_match=123)),
    ("if_match", lambda b: b.dump("k", 1, if_match="")),
    ("if_match", lambda b: b.dump("k", 1, if_match='"ä"')),
    ("if_match", lambda b: b.dump("k", 1, if_match=b'"abc"')),
    ("if_match", lambda b: b.dump("k", 1, if_match='"' + "a" * 2000 + '"')),
    ("etag", lambda b: b.load_if_changed("k", '"abc"\r\nX-Evil: 1')),
    ("etag", lambda b: b.load_if_changed("k", 123)),
    ("etag", lambda b: b.load_if_changed("k", "\x00")),
    ("etag", lambda b: b.load_if_changed("k", '"é"')),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("argument", "options"), BAD_OPTIONS, ids=lambda v: repr(v)[:40])
def test_a_bad_option_is_refused_at_construction_on_both_engines(  # noqa: PLR0917 - fixtures
    moto_server: S3Target,
    quiet_wire: Proxy,
    capfd: pytest.CaptureFixture[str],
    engine: str,
    argument: str,
    options: dict[str, Any],
) -> None:
    proxy = quiet_wire
    before = sent(proxy)
    with pytest.raises(ValueError, match=argument) as info:
        through(proxy, moto_server, engine, prefix="bad-options", **options).dump("k", 1)
    assert not isinstance(info.value, BackendError) or isinstance(info.value, ValueError)
    assert sent(proxy) == before
    assert "panicked" not in capfd.readouterr().err
    assert_no_secret(chain(info.value))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_bad_etag_is_refused_before_any_request_on_both_engines(
    moto_server: S3Target, quiet_wire: Proxy, capfd: pytest.CaptureFixture[str], engine: str
) -> None:
    proxy = quiet_wire
    backend = through(proxy, moto_server, engine, prefix="bad-calls")  # one client for every case
    before = sent(proxy)
    for argument, call in BAD_CALLS:
        with pytest.raises(ValueError, match=rf"S3JsonBackend\(.*\): \w+ 'k': {argument} is an ETag") as info:
            call(backend)
        assert_no_secret(chain(info.value))
    assert sent(proxy) == before  # nothing sent, so nothing changed
    assert "panicked" not in capfd.readouterr().err


@pytest.mark.parametrize("engine", ENGINES)
def test_good_header_values_still_reach_the_object(moto_server: S3Target, engine: str) -> None:
    backend = S3RawBackend(
        moto_server.bucket,
        prefix=f"good-{engine}",
        client=moto_server.client,
        engine=engine,
        cache_control="public, max-age=60",
        content_type="text/plain; charset=utf-8",
        metadata={"Owner": "ops team", "x_y.z": ""},
    )
    backend["a.bin"] = b"1"
    found = backend.stat("a.bin")
    assert found is not None and found.cache_control == "public, max-age=60"
    assert found.content_type == "text/plain; charset=utf-8"
    assert found.metadata == {"owner": "ops team", "x_y.z": ""}
    tag = backend.load_if_changed("a.bin")
    assert isinstance(tag, backends.Versioned) and backend.dump("a.bin", b"2", if_match=tag.etag) is True
    backend.clear()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["Content-Type", "storage-class", "Cache-Control"])
def test_metadata_named_like_a_header_stays_metadata(moto_server: S3Target, engine: str, name: str) -> None:
    backend = S3RawBackend(
        moto_server.bucket,
        prefix=f"named-{engine}",
        client=moto_server.client,
        engine=engine,
        metadata={name: "GLACIER"},
    )
    backend["k.bin"] = b"1"  # obstore took such a name for the header itself: type, storage class
    found = backend.stat("k.bin")
    assert found is not None and found.metadata == {name.lower(): "GLACIER"}
    assert (found.content_type, found.storage_class, found.cache_control) == (
        "application/octet-stream",
        "STANDARD",
        None,
    )
    backend.clear()


# -- foreign data: another tool's object with headers obstore cannot read --------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_another_tools_non_utf8_metadata_gets_the_answer_boto3_gives(
    moto_server: S3Target, engine: str
) -> None:
    import http.client

    host = (moto_server.endpoint_url or "").split("//", 1)[1]
    connection = http.client.HTTPConnection(host, timeout=10)
    connection.putrequest("PUT", f"/{moto_server.bucket}/foreign-{engine}/odd")
    connection.putheader("x-amz-meta-note", "café".encode().decode("latin-1").encode("latin-1"))
    connection.putheader("Content-Length", "1")
    connection.endheaders(b"7")
    assert connection.getresponse().status == 200
    connection.close()
    backend = S3JsonBackend(
        moto_server.bucket, prefix=f"foreign-{engine}", client=moto_server.client, engine=engine
    )
    assert backend.load("odd") == 7 and "odd" in backend
    found = backend.stat("odd")
    assert found is not None and "note" in found.metadata
    backend.clear()


# -- lost replies: the server applied the request, its answer never came ----------------------------


def lost_reply_answers(backend: Any, faults: Faults) -> dict[str, Any]:
    """Each write with its answer dropped once after the server applied it, and what it said."""
    answers: dict[str, Any] = {}
    faults.plan = ["lose"]
    answers["dump"] = backend.dump("a", 1)
    faults.plan = ["lose"]
    answers["if_absent"] = backend.dump("b", 1, if_absent=True)
    tag = backend.load_if_changed("a")
    faults.plan = ["lose"]
    answers["if_match"] = backend.dump("a", 2, if_match=tag.etag)
    answers["a"] = backend.load("a")
    faults.plan = ["pass", "lose"]  # the HEAD passes; the DELETE's answer is lost
    answers["delete"] = backend.delete("a")
    backend["c"] = 3
    faults.plan = ["lose"]  # pop's GET
    answers["pop"] = backend.pop("c")
    answers["state"] = dict(backend.items())
    return answers


def test_lost_replies_get_the_same_answers_on_both_engines(
    moto_server: S3Target, wire: tuple[Proxy, Faults]
) -> None:
    proxy, faults = wire
    answers = {}
    for engine in ENGINES:
        backend = through(proxy, moto_server, engine, prefix=f"lost-{engine}", retries=2)
        answers[engine] = lost_reply_answers(backend, faults)
        backend.clear()
    assert answers["obstore"] == answers["boto3"]
    # "if_absent still knows it won" (ATTACKS.md): so does if_match.
    assert answers["obstore"] == {
        "dump": True,
        "if_absent": True,
        "if_match": True,
        "a": 2,
        "delete": True,
        "pop": 3,
        "state": {"b": 1},
    }
    assert proxy.injected["lose"] == 10


#: a conditional write of "new" on key "k" (absent unless ``present``), and what it returns when it won
CONDITIONAL_WRITES: dict[str, tuple[bool, Callable[[Any, Any], Any], Any]] = {
    "if_absent": (False, lambda b, etag: b.dump("k", b"new", if_absent=True), True),
    "if_match": (True, lambda b, etag: b.dump("k", b"new", if_match=etag), True),
    "setdefault": (False, lambda b, etag: b.setdefault("k", b"new"), b"new"),
    "dump_file": (False, lambda b, etag: b.dump_file("k", io.BytesIO(b"new"), if_absent=True), True),
    "dump_file pipe": (False, lambda b, etag: b.dump_file("k", Pipe(b"new"), if_absent=True), True),
    "gzipped if_absent": (False, lambda b, etag: b.dump("k.json", b"new", if_absent=True), True),
    "gzipped if_match": (True, lambda b, etag: b.dump("k.json", b"new", if_match=etag), True),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(CONDITIONAL_WRITES))
def test_a_conditional_write_whose_answer_was_lost_knows_it_won(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str, case: str
) -> None:
    proxy, faults = wire
    present, write, won = CONDITIONAL_WRITES[case]
    key = "k.json" if "gzipped" in case else "k"
    backend = through(
        proxy, moto_server, engine, S3RawBackend, prefix=f"won-{engine}-{case}", metadata={"owner": "me"}
    )
    backend.clear()
    etag = None
    if present:
        backend[key] = b"old"
        etag = backend.stat(key).etag
    before = proxy.requests.copy()
    faults.plan = ["lose"]  # the first PUT is applied, its answer lost; botocore sends it again
    assert write(backend, etag) == won
    assert proxy.injected["lose"] == 1
    # The retry's 412, then one HEAD that finds the call's own token: nothing else.
    assert proxy.requests - before == Counter({"PUT": 2, "HEAD": 1})
    assert backend[key] == b"new"
    found = backend.stat(key)
    assert found is not None and found.metadata == {"owner": "me"}  # the token is not the caller's
    if "gzipped" in case:
        assert found.content_encoding == "gzip" and found.size == 3
    backend.clear()
    backend.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_conditional_write_answered_past_the_timeout_knows_it_won(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    faults.stall_seconds = 1.0  # applied at once, answered after the client's read timeout
    backend = through(proxy, moto_server, engine, prefix=f"stall-{engine}", timeout=0.5)
    backend.clear()
    before = proxy.requests.copy()
    faults.plan = ["stall"]
    assert backend.dump("k", 1, if_absent=True) is True
    assert proxy.requests - before == Counter({"PUT": 2, "HEAD": 1})
    etag = backend.stat("k").etag
    faults.plan = ["stall"]
    assert backend.dump("k", 2, if_match=etag) is True
    assert backend.load("k") == 2 and proxy.injected["stall"] == 2
    backend.clear()
    backend.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_the_head_after_a_retried_condition_fails_typed_and_without_a_secret(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, prefix=f"head-{engine}", retries=1)
    backend.clear()
    # The PUT applied and its answer lost, the retry's 412, then the HEAD denied (echoing
    # the signed request) or lost at every try: the call raises, typed, and says nothing false.
    for fault, error in (("deny", PermissionDeniedError), ("lose", StoreUnavailableError)):
        faults.plan = ["lose", "pass", fault, fault]
        with pytest.raises(error) as info:
            backend.dump(f"k-{fault}", 1, if_absent=True)
        assert_no_secret(chain(info.value))
        assert "dump" in str(info.value) and f"k-{fault}" in str(info.value)
        faults.plan = []
        assert backend.load(f"k-{fault}") == 1  # it was applied: StoreUnavailableError said it may be
    backend.clear()
    backend.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_condition_costs_no_request_more_and_a_retry_one_head(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, prefix=f"fail-{engine}")
    other = S3JsonBackend(moto_server.bucket, prefix=f"fail-{engine}", client=moto_server.client)
    backend.clear()
    assert other.dump("k", "theirs", if_absent=True) is True  # a conditional write of another call
    stale = '"0123456789abcdef0123456789abcdef"'

    def sent_by(call: Callable[[], Any]) -> tuple[Any, Counter[str]]:
        before = proxy.requests.copy()
        answer = call()
        return answer, proxy.requests - before

    # The normal path: one PUT, whatever its answer.
    assert sent_by(lambda: backend.dump("new", 1, if_absent=True)) == (True, Counter({"PUT": 1}))
    assert sent_by(lambda: backend.dump("k", 1, if_absent=True)) == (False, Counter({"PUT": 1}))
    assert sent_by(lambda: backend.dump("k", 1, if_match=stale)) == (False, Counter({"PUT": 1}))
    assert sent_by(lambda: backend.dump("absent", 1, if_match=stale)) == (False, Counter({"PUT": 1}))
    assert sent_by(lambda: backend.setdefault("k", 1)) == ("theirs", Counter({"PUT": 1, "GET": 1}))
    # A try sent again (its first refused unapplied) that finds another writer's value:
    # one HEAD, which finds no token of this call, and False.
    for fault in ("reset", "slowdown", "error500"):
        faults.plan = [fault]
        found = sent_by(lambda: backend.dump("k", 1, if_absent=True))
        assert found == (False, Counter({"PUT": 2, "HEAD": 1})), fault
        faults.plan = [fault]
        found = sent_by(lambda: backend.dump("k", 1, if_match=stale))
        assert found == (False, Counter({"PUT": 2, "HEAD": 1})), fault
    assert backend.load("k") == "theirs" and other.stat("k").metadata == {}
    backend.clear()
    backend.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_delete_and_pop_keep_their_answers_whichever_answer_is_lost(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, prefix=f"gone-{engine}", retries=2)
    backend.clear()
    for position in range(2):  # delete: HEAD, DELETE
        backend["a"] = 1
        faults.plan = ["pass"] * position + ["lose"]
        assert backend.delete("a") is True, position
        assert "a" not in backend
    faults.plan = ["lose"]
    assert backend.delete("a") is False  # absent: the HEAD asked again says so
    for position in range(3):  # pop: GET, HEAD, DELETE
        backend["c"] = 3
        faults.plan = ["pass"] * position + ["lose"]
        assert backend.pop("c", None) == 3, position
        assert "c" not in backend
        faults.plan = []
    backend["d"] = 4
    faults.plan = ["pass", "lose"]
    del backend["d"]  # no KeyError for the key this very call removed
    assert list(backend) == []
    for position in range(2):  # move: CopyObject, DELETE
        backend["m"] = 5
        faults.plan = ["pass"] * position + ["lose"]
        assert backend.move("m", "n") is True, position
        assert dict(backend.items()) == {"n": 5}
        backend.clear()
    assert proxy.injected["lose"] == 2 + 1 + 3 + 1 + 2
    backend.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_racing_if_absent_writers_under_lost_answers_have_one_winner(
    moto_server: S3Target, wire: tuple[Proxy, Faults], engine: str
) -> None:
    proxy, faults = wire
    threads, rounds = (8, 40) if LONG else (8, 6)
    faults.lose = 0.25  # a quarter of all answers lost after the server applied the request
    backend = through(proxy, moto_server, engine, prefix=f"race-{engine}", retries=4, timeout=5)
    barrier = threading.Barrier(threads)
    answers: dict[tuple[int, int], Any] = {}

    def race(index: int) -> None:
        for turn in range(rounds):
            barrier.wait()
            try:
                answers[index, turn] = backend.dump(f"r{turn}", index, if_absent=True)
            except StoreUnavailableError as exc:  # every try lost: it may have been applied
                answers[index, turn] = exc

    running = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    faults.lose = 0.0
    for turn in range(rounds):
        said = {index: answers[index, turn] for index in range(threads)}
        winners = [index for index, answer in said.items() if answer is True]
        stored = backend.load(f"r{turn}")
        assert len(winners) <= 1, said
        # The value stored is the one whose call said True, or one whose call raised.
        assert winners == [stored] if winners else isinstance(said[stored], StoreUnavailableError), said
    assert proxy.injected["lose"] > 0
    backend.clear()
    backend.close()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fault", ["pass", "truncate", "lose"])
def test_load_file_of_a_gzipped_value_reads_it_whole_on_both_engines(
    moto_server: S3Target, wire: tuple[Proxy, Faults], tmp_path: Any, engine: str, fault: str
) -> None:
    # obstore's body handed its whole data to gzip's 2-byte read of the magic: every
    # load_file of a gzipped key (.txt, .json, .html...) was "stored gzip data is broken";
    # and on boto3 a gzipped body cut off mid-read was not asked again.
    proxy, faults = wire
    backend = through(proxy, moto_server, engine, S3RawBackend, prefix=f"gzfile-{engine}-{fault}", retries=2)
    value = os.urandom(3000)
    backend["page.html"] = value
    before = proxy.requests.copy()
    faults.plan = ["pass", fault]  # the HEAD passes; the GET of the gzipped body: the fault
    target = io.BytesIO()
    assert backend.load_file("page.html", target) is True
    assert target.getvalue() == value
    assert backend.load_file("page.html", tmp_path / "copy") is True
    assert (tmp_path / "copy").read_bytes() == value
    again = 0 if fault == "pass" else 1
    assert proxy.requests - before == Counter({"HEAD": 2, "GET": 2 + again})
    backend.clear()
    backend.close()


# -- pressure: more threads than the pool has connections ---------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_pool_exhausted_by_threads_serves_every_call(moto_server: S3Target, engine: str) -> None:
    threads, rounds = (32, 20) if LONG else (16, 4)
    backend = S3JsonBackend(
        moto_server.bucket,
        prefix=f"pool-{engine}",
        engine=engine,
        max_workers=2,  # a pool of 2 connections, for 16 threads at once
        **moto_server.options(),
    )
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        barrier.wait()
        try:
            for turn in range(rounds):
                backend[f"t{index}/{turn}"] = [index, turn]
                assert backend[f"t{index}/{turn}"] == [index, turn]
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    running = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    assert errors == []
    assert len(backend) == threads * rounds
    backend.clear()
    backend.close()


# -- processes: fork after first use ------------------------------------------------------------------


def _in_child(backend: Any, results: Any) -> None:
    try:
        backend["child"] = os.getpid()
        results.put(("ok", backend["parent"], backend["child"] == os.getpid(), "child" in backend))
    except BaseException as exc:  # reported to the parent
        results.put(("error", type(exc).__name__, str(exc)))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_child_forked_after_first_use_is_served(moto_server: S3Target, engine: str) -> None:
    backend = S3JsonBackend(
        moto_server.bucket,
        prefix=f"fork-{engine}",
        engine=engine,
        timeout=5,
        **moto_server.options(),
    )
    backend["parent"] = 1
    assert backend["parent"] == 1  # obstore's runtime is running now
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_in_child, args=(backend, results))
    child.start()
    child.join(30)  # before the fix, an obstore child waited forever
    alive = child.is_alive()
    if alive:
        child.kill()
        child.join()
    assert not alive, "the forked child's call never returned"
    assert results.get(timeout=5) == ("ok", 1, True, True)
    assert backend["parent"] == 1 and "child" in backend  # and the parent still works
    backend.clear()


RACER = """
import json, sys
from backends import S3JsonBackend
endpoint, bucket, prefix, index, keys, key_id, secret = sys.argv[1:]
backend = S3JsonBackend(bucket, prefix=prefix, endpoint_url=endpoint, addressing_style="path",
                        access_key=key_id, secret_key=secret, engine="obstore")
assert backend.load("warm-up") is None  # obstore's runtime started before the race
sys.stdin.readline()
print(json.dumps([f"k{i}" for i in range(int(keys)) if backend.dump(f"k{i}", int(index), if_absent=True)]))
"""


def test_processes_racing_on_the_obstore_engine_have_exactly_one_winner_per_key(
    moto_server: S3Target,
) -> None:
    import json
    import subprocess
    import sys

    processes, keys = (8, 60) if LONG else (4, 20)
    options = moto_server.options()
    argv = [moto_server.endpoint_url or "", moto_server.bucket, "race-processes", "", str(keys)]
    argv += [options["access_key"], options["secret_key"]]
    racers = []
    for index in range(processes):
        argv[3] = str(index)
        racers.append(
            subprocess.Popen(
                [sys.executable, "-c", RACER, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    won = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        won.append(json.loads(out))
    assert sorted(key for keys_won in won for key in keys_won) == sorted(f"k{i}" for i in range(keys))
    backend = S3JsonBackend(moto_server.bucket, prefix="race-processes", client=moto_server.client)
    assert all(backend[key] == index for index, keys_won in enumerate(won) for key in keys_won)
    backend.clear()
