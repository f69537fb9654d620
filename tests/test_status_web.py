"""The status page: over real HTTP, and in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from backends import VolatileBackend
from backends.cli.statusweb import make_app, server
from backends.events import HOST, subscribe
from backends.redis.stream import RedisStreamSink


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError("chromium is missing: apt-get install -y chromium (.ci/run does)")
    return found


class Gate:
    """Wraps the app: counts requests by path, and holds the second poll until told to go on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: dict[str, int] = {}
        self.first_poll = threading.Event()
        self.written = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        self.requests[path] = self.requests.get(path, 0) + 1
        if path == "/status.json":
            if self.requests[path] == 1:
                self.first_poll.set()
            else:
                self.written.wait(30)  # the page's next poll sees what was written meanwhile
        return self.app(environ, start_response)


@pytest.fixture
def site(redis: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, Gate, RedisStreamSink]]:
    stream = f"test:{request.node.name}"
    gate = Gate(make_app(redis, stream=stream))
    running = server(gate, "127.0.0.1:0")
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    sink = RedisStreamSink(redis, stream=stream, interval=0.01)
    yield f"http://127.0.0.1:{running.server_port}", gate, sink
    sink.close()
    running.shutdown()
    running.server_close()


def write(sink: RedisStreamSink, key: str) -> None:
    with subscribe(sink):
        VolatileBackend()[key] = {"v": 1}
    assert sink.flush()
    sink._beat()  # the heartbeat now


def test_the_page_and_its_data_answer_over_http(site: tuple[str, Gate, RedisStreamSink]) -> None:
    base, gate, sink = site
    write(sink, "users/42")
    gate.written.set()
    with urllib.request.urlopen(base + "/status.json") as answer:
        view = json.load(answer)
    assert [(e["key"], e["outcome"]) for e in view["events"]] == [
        ("users/42", "started"),
        ("users/42", "finished"),
    ]
    assert (
        view["processes"][0]["process"] == f"{HOST}:{os.getpid()}" and view["processes"][0]["state"] == "live"
    )
    with urllib.request.urlopen(base + "/status") as answer:
        page = answer.read().decode()
        policy = answer.headers["Content-Security-Policy"]
    assert "<script nonce=" in page and "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "redis://" not in page  # where Redis is, and its password, are not the page's business
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/nope")
    assert missing.value.code == 404


HOSTILE = ["</li><script>alert(2)</script>", "a\x1b[2Jb\nc", "lone\ud800surrogate"]


def test_a_headless_browser_shows_the_processes_and_new_events_without_a_reload(
    site: tuple[str, Gate, RedisStreamSink], redis: str
) -> None:
    base, gate, sink = site
    client = redis_py.Redis.from_url(redis)
    write(sink, "users/42")
    write(sink, "<img src=x onerror=alert(1)>")  # a hostile key is shown as text
    for key in HOSTILE:  # written as the sink writes them: keys the key rule would refuse
        client.xadd(
            sink.stream, {"e": json.dumps([time.time(), HOST, os.getpid(), "B", "dump", key, "finished"])}
        )
    client.xadd(sink.stream, {"hello": "world"})  # not an event: counted on the page
    browser = subprocess.Popen(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=20000",
            "--dump-dom",
            base + "/status",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert gate.first_poll.wait(60), "the page never asked for its data"
        write(sink, "users/43")  # after the page drew what it had
        gate.written.set()
        dom, _ = browser.communicate(timeout=120)
    finally:
        if browser.poll() is None:
            browser.kill()
            browser.wait()
    assert gate.requests["/status"] == 1 and gate.requests["/status.json"] >= 2  # polled, never reloaded
    assert f'data-process="{HOST}:{os.getpid()}"' in dom and ">live<" in dom
    assert "dump users/42 finished in" in dom
    assert "dump users/43 finished in" in dom  # arrived by polling
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom and "<img src" not in dom
    assert "dump &lt;/li&gt;&lt;script&gt;alert(2)&lt;/script&gt; finished" in dom and "alert(2)</" not in dom
    assert "dump a\\x1b[2Jb\\nc finished" in dom  # shown escaped, as in the terminal
    assert "dump lone\\ud800surrogate finished" in dom and "\x1b" not in dom
    assert "1 entry could not be read (not written by backends), skipped: " in dom
    client.close()
