"""The attack classes of ATTACKS.md against RedisStreamSink, ``backends status`` and the status page.

Each test is bounded (a second or two); the Redis servers that are paused,
filled or proxied are this file's own, started and stopped by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
import servers

from backends.cli import main
from backends.cli.status import run_status
from backends.cli.statusweb import make_app, parse_address, server
from backends.cli.terminal import printable
from backends.errors import PermissionDeniedError, StoreUnavailableError
from backends.events import HOST, Event
from backends.redis.stream import RedisStreamSink, read_processes, read_recent

NOW = time.time()


def event(key: str | None, outcome: str = "finished", **more: Any) -> Event:
    fields: dict[str, Any] = {"host": "web1", "pid": 11, "backend": "VolatileBackend()", **more}
    return Event(
        NOW - 5, fields.pop("host"), fields.pop("pid"), fields.pop("backend"), "dump", key, outcome, **fields
    )


def ours(client: Any, stream: str, *events: Event) -> None:
    """Entries as RedisStreamSink writes them (its documented layout: one field e, a JSON array)."""
    for one in events:
        client.xadd(stream, {"e": json.dumps(list(one))})


def beat(client: Any, stream: str, name: str, **fields: Any) -> None:
    data = {
        "host": "web1",
        "pid": 11,
        "started": time.time() - 60,
        "seen": time.time() - 1,  # not NOW: a heartbeat is live for 15 s
        "sent": 3,
        "dropped": 0,
        **fields,
    }
    client.hset(stream + ":processes", name, json.dumps(data))


@pytest.fixture
def raw(redis: str) -> Iterator[Any]:
    client = redis_py.Redis.from_url(redis)
    yield client
    client.close()


@pytest.fixture
def stream(raw: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"test:attacks:{request.node.name}"
    yield name
    raw.delete(name, name + ":processes")


def command(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``backends`` in a child process, its output as the bytes a terminal would get."""
    return subprocess.run(
        [sys.executable, "-m", "backends", *argv],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
        check=False,
    )


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    running = server(app, "127.0.0.1:0")
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{running.server_port}"
    finally:
        running.shutdown()
        running.server_close()


def get_json(url: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], json.load(error)


# -- 2, 4. foreign entries: skipped, named, counted; the rest is shown ----------------------------------


def plant_foreign(raw: Any, stream: str) -> None:
    ours(raw, stream, event("users/1"))
    raw.xadd(stream, {"hello": "world"})  # XADD backends:events * hello world
    for e in (
        "[1, 2]",  # an e of the wrong shape
        "not json",
        '{"time": 1}',
        json.dumps([NOW, "h", "not a pid", "b", "o", "k", "s", None, None, None, ""]),
        '[NaN,"h",1,"b","o","k","s",null,null,null,""]',
        json.dumps([1e300, "h", 1, "b", "o", "k", "s", None, None, None, ""]),
        json.dumps([NOW, "h", True, "b", "o", "k", "s", None, None, None, ""]),
        "[" * 100_000,  # nesting without end
        "[" + "9" * 5000 + "]",  # a number of 5,000 digits
    ):
        raw.xadd(stream, {"e": e})
    raw.xadd(stream, {b"e": b"\xff\xfe not utf-8"})
    ours(raw, stream, event("users/2"))
    beat(raw, stream, "web1:11")
    raw.hset(
        stream + ":processes", "web1:12", json.dumps({"host": "web1", "pid": 12, "sent": 0, "dropped": 0})
    )
    raw.hset(stream + ":processes", "junk", "not json")
    raw.hset(
        stream + ":processes",
        b"\xff:1",
        json.dumps({"host": "h", "pid": 1, "seen": "yesterday", "sent": 0, "dropped": 0}),
    )


def test_entries_it_did_not_write_are_skipped_named_and_counted(
    raw: Any, stream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plant_foreign(raw, stream)
    assert main(["status", _url(raw), "--stream", stream]) == 1
    shown = capsys.readouterr()
    assert "dump users/1 finished" in shown.out and "dump users/2 finished" in shown.out
    assert "[1] web1:11  live" in shown.out
    assert "11 entries of the stream could not be read (not written by backends), skipped: " in shown.out
    assert "(no field e)" in shown.out and "(not JSON)" in shown.out and "and 6 more" in shown.out
    assert "3 heartbeats could not be read" in shown.out and "\\xff:1 (its seen is not a time" in shown.out
    assert shown.err.strip() == "backends status: 11 entries and 3 heartbeats could not be read (skipped)"
    assert main(["status", _url(raw), "--stream", stream, "--json"]) == 1
    view = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in view["events"]] == ["users/1", "users/2"]
    reasons = [(u["kind"], u["reason"]) for u in view["unreadable"]]
    assert reasons[:3] == [
        ("entry", "no field e"),
        ("entry", "e is not an array of 7 to 11 fields"),
        ("entry", "not JSON"),
    ]
    assert ("entry", "it holds NaN") in reasons and ("heartbeat", "no seen") in reasons
    assert ("entry", "its pid is not a whole number >= 0") in reasons
    assert ("entry", "its time is not a time since the epoch") in reasons
    # The library's readers skip them too, never raising.
    assert [e.key for e in read_recent(raw, stream)] == ["users/1", "users/2"]
    assert list(read_processes(raw, stream)) == ["web1:11"]


def _url(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def test_the_page_shows_the_rest_and_counts_what_it_skipped(raw: Any, stream: str) -> None:
    plant_foreign(raw, stream)
    with serving(make_app(_url(raw), stream=stream)) as base:
        for _ in range(2):  # every poll: an answer, never a bare 500 nor a traceback
            status, kind, view = get_json(base + "/status.json")
            assert (status, kind) == (200, "application/json")
            assert [e["key"] for e in view["events"]] == ["users/1", "users/2"]
            assert len(view["unreadable"]) == 14


def test_a_key_with_a_lone_surrogate_is_printed_escaped(raw: Any, stream: str) -> None:
    ours(raw, stream, event("a\ud800b"), event("c\udcffd"))
    done = command("status", _url(raw), "--stream", stream)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")  # strictly: it is UTF-8
    assert "dump a\\ud800b finished" in text and "dump c\\xffd finished" in text
    done = command("status", _url(raw), "--stream", stream, "--json")
    assert done.returncode == 0
    assert [e["key"] for e in json.loads(done.stdout.decode("utf-8"))["events"]] == ["a\ud800b", "c\udcffd"]


HOSTILE = [
    "\x1b]0;pwned\x07",  # retitles the terminal
    "\x1b[2J\x1b[H",  # clears it
    "line\nforged 12:00:00.000   [1] dump fake finished",
    "carriage\rreturn",
    "c1\x9b31m and \x85",
    "bidi \u202eevil\u202c",
    "del\x7f",
    "sep\u2028arator",
]


def test_control_characters_reach_the_terminal_escaped_on_one_line(raw: Any, stream: str) -> None:
    ours(raw, stream, *(event(key) for key in HOSTILE))
    ours(raw, stream, event("k", host="evil\nhost", detail="\x1b[31mred", backend="B\x07"))
    beat(raw, stream, "web1:11")
    beat(raw, stream, "h\x1b[2J:1", host="h\x1b[2J", pid=1)
    done = command("status", _url(raw), "--stream", stream)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert not [b for b in out if (b < 0x20 and b != 0x0A) or b == 0x7F]
    text = out.decode("utf-8")
    assert not [c for c in text if 0x80 <= ord(c) <= 0x9F or c in "\u202e\u202c\u2028"]
    lines = text.splitlines()
    processes = 3  # web1:11, h\x1b[2J:1 and evil\nhost:11 (no heartbeat)
    assert len(lines) == 1 + processes + 1 + len(HOSTILE) + 1
    assert "dump \\x1b]0;pwned\\x07 finished" in text and "line\\nforged 12:00" in text
    assert "(\\x1b[31mred)" in text and "h\\x1b[2J:1" in text
    done = command("status", _url(raw), "--stream", stream, "--json")
    view = json.loads(done.stdout.decode("utf-8"))  # valid UTF-8 JSON, every text exactly
    assert [e["key"] for e in view["events"]][: len(HOSTILE)] == HOSTILE


def test_printable_escapes_every_control_character_and_nothing_else() -> None:
    assert printable("a\x1b[2Jb\nc\td\x00\x7f\x9b\ud800\udcff\u202e\u2029") == (
        "a\\x1b[2Jb\\nc\\td\\x00\\x7f\\x9b\\ud800\\xff\\u202e\\u2029"
    )
    kept = "users/42 café 日本 \\x1b ✓ <b>"
    assert printable(kept) == kept
    assert all(printable(chr(c)).isprintable() for c in range(0x110000) if c < 0xA0 or 0xD800 <= c < 0xE000)


# -- 5. bad input in every argument: a usage error naming it, before any I/O ---------------------------

BAD = [
    (["--serve", "127.0.0.1:99999"], "argument --serve: the port to serve on is 0 (any free one) to 65535"),
    (["--serve", "127.0.0.1"], "argument --serve: the address to serve on is HOST:PORT"),
    (["--serve", "127.0.0.1:80\r\n"], "argument --serve"),
    (["--serve", "hôte:80"], "argument --serve"),
    (["--serve", "127.0.0.1:-1"], "argument --serve"),
    (["-n", "0"], "argument -n/--count: count is a whole number from 1 to 100000, not 0"),
    (["-n", "-3"], "argument -n/--count: a whole number of events from 1 to 100000, not '-3'"),
    (["-n", "1e3"], "argument -n/--count"),
    (["-n", "100001"], "argument -n/--count"),
    (["-n", "99999999999999999999"], "argument -n/--count"),
    (["--stream", ""], "argument --stream: stream is the name of a Redis stream"),
    (["--stream", "a\udcff"], "argument --stream: stream is not UTF-8 text"),  # an argv byte no UTF-8
    (["--timeout", "0"], "argument --timeout"),
    (["--timeout", "-1"], "argument --timeout"),
    (["--timeout", "nan"], "argument --timeout"),
    (["--timeout", "inf"], "argument --timeout"),
    (["--timeout", "1e9"], "argument --timeout"),
    (["--serve", "127.0.0.1:0", "--follow"], "--serve and --follow"),
    (["--serve", "127.0.0.1:0", "--json"], "--serve and --json"),
]
BAD_URLS = [
    ("http://127.0.0.1:6379/0", "starts with redis://"),
    ("redis://127.0.0.1:99999/0", "port is a number from 1 to 65535"),
    ("redis://127.0.0.1:0/0", "port is a number from 1 to 65535"),
    ("redis://127.0.0.1:/0", "port is a number from 1 to 65535"),
    ("redis://127.0.0.1:6379/x", "path is its database number"),
    ("redis://127.0.0.1:6379/0/1", "path is its database number"),
    ("redis://127.0.0.1:6379/0?foo=1", "option 'foo' is not one"),
    ("redis://127.0.0.1:6379/0?db=x", "Invalid value for 'db'"),
    ("redis://127.0.0.1:6379/0?socket_timeout=1", "option 'socket_timeout' is not one"),
    ("redis://127.0.0.1:6379/0\r\nQUIT", "printable ASCII"),
    ("redis://hôte:6379/0", "printable ASCII"),
    ("redis://h\udcff:6379/0", "printable ASCII"),
]


@pytest.mark.parametrize(("argv", "said"), BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_a_bad_argument_is_a_usage_error_before_any_io(
    raw: Any, argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    connections = raw.info("stats")["total_connections_received"]
    with pytest.raises(SystemExit) as usage:
        main(["status", _url(raw), *argv])
    err = capsys.readouterr().err
    assert usage.value.code == 2 and said in err and "Traceback" not in err, err
    assert raw.info("stats")["total_connections_received"] == connections  # no I/O


@pytest.mark.parametrize(("url", "said"), BAD_URLS, ids=[url for url, _ in BAD_URLS])
def test_a_bad_url_is_a_usage_error_naming_it(
    url: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["status", url])
    err = capsys.readouterr().err
    assert usage.value.code == 2 and "argument url: " in err and said in err, err
    with pytest.raises(ValueError, match=said.replace("(", r"\(")):
        make_app(url)


def test_the_library_refuses_bad_arguments_naming_them() -> None:
    url = "redis://127.0.0.1:6379/0"
    for bad in (0, -3, True, 10**6, "5", 2.0):
        with pytest.raises(ValueError, match="count"):
            make_app(url, count=bad)  # type: ignore[arg-type]
    for seconds in (0, -1, math.nan, math.inf, 3601, "1", True):
        with pytest.raises(ValueError, match="timeout"):
            make_app(url, timeout=seconds)  # type: ignore[arg-type]
    for name in ("", "a\ud800", 5, None):
        with pytest.raises(ValueError, match="stream"):
            make_app(url, stream=name)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="stream"):
            RedisStreamSink(url, stream=name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="password is a str"):
        RedisStreamSink(url, password=5)  # type: ignore[arg-type]
    for bad_url, said in BAD_URLS:  # the sink takes the view's URLs: none fails later, in its thread
        with pytest.raises(ValueError, match=said.replace("(", r"\(")):
            RedisStreamSink(bad_url)
    for size in (0, 10**30, True, 1.5):
        with pytest.raises(ValueError, match="maxlen"):
            RedisStreamSink(url, maxlen=size)  # type: ignore[arg-type]
    assert parse_address(":8080") == ("127.0.0.1", 8080) and parse_address("[::1]:0") == ("::1", 0)
    for address in ("127.0.0.1:99999", "nohost", "a b:80", "127.0.0.1:80\n", ":", 8080):
        with pytest.raises(ValueError, match="serve on"):
            server(make_app(url), address)  # type: ignore[arg-type]


def test_an_address_in_use_is_one_line_and_exit_1(raw: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with serving(make_app(_url(raw))) as base:
        assert main(["status", _url(raw), "--serve", base.removeprefix("http://")]) == 1
    err = capsys.readouterr().err
    assert err == f"backends status: [Errno 98] cannot serve on {base[7:]}: Address already in use\n"


def test_head_sends_no_body_and_405_names_what_is_allowed(raw: Any, stream: str) -> None:
    ours(raw, stream, event("k"))
    with serving(make_app(_url(raw), stream=stream)) as base:
        port = int(base.rsplit(":", 1)[1])
        for path in ("/status", "/status.json", "/nope"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(f"HEAD {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                answer = b"".join(iter(lambda: conn.recv(65536), b""))
            head, _, body = answer.partition(b"\r\n\r\n")
            assert body == b"" and b"Content-Length: " in head, (path, answer[:200])
        for method in ("POST", "PUT", "DELETE"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, "/status.json", body=b"x")
            answer = conn.getresponse()
            assert answer.status == 405 and answer.headers["Allow"] == "GET, HEAD"
            conn.close()


# -- 1. lost replies ------------------------------------------------------------------------------------


class DropProxy:
    """A loopback TCP proxy to Redis that, once armed, forwards the next request holding ``word``
    and drops its answer (closing the client's connection): the server applied it, the client never
    heard."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("//")[1].split("/", maxsplit=1)[0].split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.armed: bytes | None = None
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.upstream)
                state = {"drop": False}
                threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
                threading.Thread(target=self._down, args=(upstream, client, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.armed is not None and self.armed in data:
                    self.armed, state["drop"] = None, True  # before it is forwarded: its answer is lost
                upstream.sendall(data)

    def _down(self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if state["drop"]:
                    self.dropped += 1
                    break
                client.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_lost_answer_to_a_send_never_puts_an_event_in_the_stream_twice(raw: Any, stream: str) -> None:
    proxy = DropProxy(_url(raw))
    sink = RedisStreamSink(proxy.url, stream=stream, interval=0.01, socket_timeout=2)
    try:
        sink._beat()  # the heartbeat is written before the drop is armed
        proxy.armed = b"XADD"
        for key in ("a", "b", "c"):
            sink(event(key))
        assert sink.flush()
        assert proxy.dropped == 1 and sink.failures >= 1 and sink.error == "ConnectionError"
        # The first batch (with "a"; the thread may have sent b and c with it or after it) was
        # applied and its answer lost: never repeated, and counted as dropped (unconfirmed).
        keys = [e.key for e in read_recent(raw, stream)]
        assert keys[0] == "a" and keys == sorted(set(keys)) and sink.dropped >= 1
        assert sink.sent + sink.dropped == 3 and len(keys) >= sink.sent
        sent = sink.sent
        sink(event("d"))
        assert sink.flush() and sink.sent == sent + 1
        assert [e.key for e in read_recent(raw, stream)] == [*keys, "d"]
    finally:
        sink.close()
        proxy.close()


def test_a_lost_answer_to_a_read_is_asked_again_and_shown_once(
    raw: Any, stream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ours(raw, stream, event("a"), event("b"))
    proxy = DropProxy(_url(raw))
    try:
        for word in (b"XREVRANGE", b"HGETALL"):
            proxy.armed = word
            assert main(["status", proxy.url, "--stream", stream, "--json"]) == 0
            assert [e["key"] for e in json.loads(capsys.readouterr().out)["events"]] == ["a", "b"]
        assert proxy.dropped == 2
    finally:
        proxy.close()


# -- 2. foreign data: keys another program retyped ------------------------------------------------------


def test_a_retyped_stream_key_is_named_by_the_command_and_the_page_alike(
    raw: Any, stream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, kind, retype in (
        (stream, "string", lambda: raw.set(stream, "x")),
        (stream + ":processes", "list", lambda: raw.rpush(stream + ":processes", "x")),
    ):
        raw.delete(stream, stream + ":processes")
        ours(raw, stream, event("k"))
        retype()
        said = f"status {key!r}: the key holds a {kind}, not a"
        assert main(["status", _url(raw), "--stream", stream]) == 1
        assert said in capsys.readouterr().err
        with serving(make_app(_url(raw), stream=stream)) as base:
            status, kind_, body = get_json(base + "/status.json")
        assert (status, kind_) == (503, "application/json") and said in body["error"]


def test_the_sink_counts_a_retyped_key_and_goes_on_once_it_is_back(raw: Any, stream: str) -> None:
    raw.set(stream + ":processes", "not a hash")  # the heartbeats fail; the events still go
    raw.set(stream, "not a stream")
    sink = RedisStreamSink(_url(raw), stream=stream, interval=0.01)
    try:
        sink(event("a"))
        assert sink.flush() and sink.dropped == 1 and sink.error == "ResponseError WRONGTYPE"
        raw.delete(stream)
        sink(event("b"))
        assert sink.flush() and sink.sent == 1
        assert [e.key for e in read_recent(raw, stream)] == ["b"]
        assert raw.get(stream + ":processes") == b"not a hash"  # never overwritten
    finally:
        sink.close()


def test_an_event_json_has_no_form_for_is_dropped_and_counted(raw: Any, stream: str) -> None:
    sink = RedisStreamSink(_url(raw), stream=stream, interval=0.01)
    try:
        sink(event("nan", duration=math.nan))
        sink(event("object", detail=object()))  # type: ignore[arg-type]
        sink(event("fine"))
        assert sink.flush() and (sink.sent, sink.dropped) == (1, 2)
        assert [e.key for e in read_recent(raw, stream)] == ["fine"]
    finally:
        sink.close()


# -- 3. closing -----------------------------------------------------------------------------------------


def test_close_twice_and_events_after_close_write_nothing(raw: Any, stream: str) -> None:
    sink = RedisStreamSink(_url(raw), stream=stream, interval=0.01)
    sink(event("before"))
    assert sink.flush()
    sink.close()
    sink.close()  # again: nothing
    sink(event("after"))
    assert sink.closed and sink.dropped == 1 and sink.flush()
    assert [e.key for e in read_recent(raw, stream)] == ["before"] and read_processes(raw, stream) == {}


# -- 7. time: a paused server ---------------------------------------------------------------------------


def test_a_paused_server_is_a_typed_error_and_service_comes_back(capsys: pytest.CaptureFixture[str]) -> None:
    with servers.redis_server() as url:  # its own: paused and resumed by its PID
        client = redis_py.Redis.from_url(url)
        pid = int(client.info("server")["process_id"])
        ours(client, "backends:events", event("k"))
        sink = RedisStreamSink(url, interval=0.01, socket_timeout=0.3)
        app = make_app(url, timeout=0.3)
        with serving(app) as base:
            os.kill(pid, signal.SIGSTOP)
            try:
                assert main(["status", url, "--timeout", "0.3"]) == 1
                said = "status 'backends:events': Redis did not answer within 0.3 s (TimeoutError)"
                assert said in capsys.readouterr().err
                status, _, body = get_json(base + "/status.json")
                assert status == 503 and body == {"error": said}  # the command's very words
                sink(event("while paused"))
                assert sink.flush(timeout=10) and sink.dropped >= 1 and sink.error == "TimeoutError"
            finally:
                os.kill(pid, signal.SIGCONT)
            following = follow_until_paused(url, pid)
            assert "did not answer within 0.3 s (TimeoutError)" in str(following)
            assert main(["status", url, "--timeout", "0.3", "--json"]) == 0
            assert [e["key"] for e in json.loads(capsys.readouterr().out)["events"]] == ["k"]
            assert get_json(base + "/status.json")[0] == 200
            sent = sink.sent
            sink(event("after"))
            assert sink.flush(timeout=15) and sink.sent == sent + 1
        os.kill(pid, signal.SIGSTOP)
        try:
            sink.close()  # returns (each request has its timeout), and says nothing
        finally:
            os.kill(pid, signal.SIGCONT)
        assert sink.closed
        client.close()


def follow_until_paused(url: str, pid: int) -> BaseException:
    """``status --follow`` from a thread: once the first screen is out, the server is paused; the
    follower ends with the error it raised."""
    printed, ended = threading.Event(), []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            printed.set()
            return super().write(text)

    def run() -> None:
        try:
            run_status(url, follow=True, out=Out(), timeout=0.3)
        except BaseException as exc:  # handed to the test
            ended.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert printed.wait(30)
    os.kill(pid, signal.SIGSTOP)
    try:
        thread.join(30)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not thread.is_alive()
    return ended[0]


# -- 8. pressure ----------------------------------------------------------------------------------------


def test_a_full_redis_drops_and_counts_events_and_they_flow_again(capsys: pytest.CaptureFixture[str]) -> None:
    with servers.redis_server(None, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction") as url:
        client = redis_py.Redis.from_url(url)
        ours(client, "backends:events", event("before"))
        with pytest.raises(redis_py.exceptions.OutOfMemoryError):  # till every write is refused
            for i in range(20):
                client.set(f"filler{i}", b"x" * 1_000_000)
        sink = RedisStreamSink(url, interval=0.01)
        sink(event("refused"))
        assert sink.flush() and sink.dropped == 1 and sink.error == "OutOfMemoryError"
        assert main(["status", url, "--json"]) == 0  # reading still works
        assert [e["key"] for e in json.loads(capsys.readouterr().out)["events"]] == ["before"]
        client.delete(*(f"filler{i}" for i in range(20)))
        sink(event("after"))
        assert sink.flush(timeout=15) and sink.sent == 1
        sink.close()
        client.close()


def test_a_long_stream_is_read_only_as_far_as_asked(
    raw: Any, stream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = 100_000 if os.environ.get("BACKENDS_LONG") == "1" else 20_000
    pipe = raw.pipeline(transaction=False)
    for i in range(entries):
        pipe.xadd(stream, {"e": json.dumps(list(event(f"k{i}")))})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    assert main(["status", _url(raw), "--stream", stream, "-n", "3", "--json"]) == 0
    keys = [e["key"] for e in json.loads(capsys.readouterr().out)["events"]]
    assert keys == [f"k{entries - 3}", f"k{entries - 2}", f"k{entries - 1}"]
    assert main(["status", _url(raw), "--stream", stream, "-n", "100000"]) == 0
    assert capsys.readouterr().out.count(" finished, ") == min(entries, 100_000)


# -- 9. processes ---------------------------------------------------------------------------------------


def test_forked_children_send_their_own_events_once_each(raw: Any, stream: str) -> None:
    sink = RedisStreamSink(_url(raw), stream=stream, interval=0.01)
    sink(event("parent"))
    assert sink.flush()  # first use before the fork: a pool, a thread, its lock
    children = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.alarm(30)
            for i in range(50):
                sink(event(f"child{n}/{i}", pid=os.getpid()))
            ok = sink.flush(timeout=20) and sink.sent >= 50
            sink.close()
            os._exit(0 if ok else 1)
        children.append(pid)
    assert all(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in children)
    sink(event("parent again"))
    assert sink.flush()
    keys = [e.key for e in read_recent(raw, stream, count=1000)]
    assert len(keys) == len(set(keys)) == 2 + 4 * 50
    assert {e.pid for e in read_recent(raw, stream, count=1000)} == {11, *children}
    assert list(read_processes(raw, stream)) == [f"{HOST}:{os.getpid()}"]  # each child took its own away
    sink.close()


def test_many_pages_polling_at_once_all_get_the_view(raw: Any, stream: str) -> None:
    ours(raw, stream, event("k"))
    answers: list[tuple[int, str, Any]] = []
    with serving(make_app(_url(raw), stream=stream)) as base:  # a pool of 4 connections
        polls = [
            threading.Thread(target=lambda: answers.append(get_json(base + "/status.json")))
            for _ in range(16)
        ]
        for poll in polls:
            poll.start()
        for poll in polls:
            poll.join(60)
    assert [(status, [e["key"] for e in view["events"]]) for status, _, view in answers] == [
        (200, ["k"])
    ] * 16


def test_a_child_forked_while_the_sending_thread_held_its_lock_still_sends(raw: Any, stream: str) -> None:
    sink = RedisStreamSink(_url(raw), stream=stream, interval=0.01)
    sink(event("parent"))
    assert sink.flush()
    with sink._counts:  # as the sending thread holds it while it counts a batch
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.alarm(10)  # a child stuck on the parent's lock dies here
            sink(event("child", pid=os.getpid()))
            os._exit(0 if sink.flush(timeout=5) and sink.sent >= 1 else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert [e.key for e in read_recent(raw, stream)] == ["parent", "child"]
    sink.close()


# -- 10. secrets ----------------------------------------------------------------------------------------


def test_a_planted_password_never_shows_anywhere(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "planted-secret-5d2e"
    with servers.redis_server() as url:
        admin = redis_py.Redis.from_url(url)
        admin.config_set("requirepass", "the-real-one")  # this connection stays authenticated
        monkeypatch.setenv("REDISCLI_AUTH", secret)  # the wrong one
        with pytest.raises(PermissionDeniedError) as refused:
            run_status(url, out=sys.stdout, timeout=2)
        assert refused.value.__context__ is None and refused.value.__cause__ is None
        assert main(["status", url]) == 1
        with serving(make_app(url, timeout=2)) as base:
            status, _, body = get_json(base + "/status.json")
        sink = RedisStreamSink(url, interval=0.01, password=secret)
        sink(event("k"))
        assert sink.flush()
        shown = servers.chain(refused.value)
        texts = [shown, capsys.readouterr().err, json.dumps(body), repr(sink), sink.error]
        assert status == 503 and "refused access" in body["error"] and sink.error == "AuthenticationError"
        sink.close()
        admin.close()
    for url in (f"redis://:{secret}@127.0.0.1:6379/0", f"rediss://127.0.0.1:6379/0?ssl_password={secret}"):
        with pytest.raises(SystemExit):
            main(["status", url])
        with pytest.raises(ValueError) as bad:
            make_app(url)
        texts += [capsys.readouterr().err, servers.chain(bad.value)]
    for text in texts:
        assert secret not in text


def test_an_unreachable_redis_is_the_same_error_for_the_command_and_the_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://127.0.0.1:{servers.free_port()}/0"
    with pytest.raises(StoreUnavailableError) as failed:
        run_status(url, out=sys.stdout, timeout=1)
    said = "status 'backends:events': Redis could not be read (ConnectionError)"
    assert str(failed.value) == said
    with serving(make_app(url, timeout=1)) as base:
        assert get_json(base + "/status.json")[::2] == (503, {"error": said})
