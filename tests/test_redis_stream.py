"""RedisStreamSink: events of every process in one Redis stream; a dead Redis never holds a call up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis as redis_py
import servers
from servers import S3Target, free_port

import backends
from backends import S3JsonBackend, VolatileBackend
from backends.events import HOST, Event, MemorySink, subscribe
from backends.redis.stream import RedisStreamSink, read_processes, read_recent

WORKER = str(Path(__file__).with_name("_worker.py"))


def test_events_reach_the_stream_as_the_memory_sink_has_them(
    redis: str, request: pytest.FixtureRequest
) -> None:
    stream = f"test:{request.node.name}"
    sink, memory = RedisStreamSink(redis, stream=stream, interval=0.01), MemorySink()
    store = VolatileBackend()
    with subscribe(sink), subscribe(memory):
        store["users/42"] = {"name": "Ada"}
        store.load("users/42")
        with pytest.raises(KeyError):
            store.pop("absent")
    assert sink.flush()
    client = redis_py.Redis.from_url(redis)
    assert read_recent(client, stream) == list(memory)  # every field, in order
    beat = read_processes(client, stream)[f"{HOST}:{os.getpid()}"]
    assert beat["pid"] == os.getpid() and beat["sent"] <= sink.sent == 6 and sink.dropped == 0
    sink.close()
    assert read_processes(client, stream) == {}  # a closed sink takes its heartbeat away
    client.delete(stream)
    client.close()


def test_a_dead_redis_drops_and_counts_events_and_the_sink_recovers() -> None:
    port = free_port()
    store = VolatileBackend()
    with servers.redis_server(port) as url:
        sink = RedisStreamSink(url, interval=0.01, queue_size=100, socket_timeout=0.2)
        with subscribe(sink):
            store["before"] = 1
            assert sink.flush()
    with subscribe(sink):  # the server is gone: every call goes on, events are dropped
        for i in range(1000):
            store[f"k{i}"] = i
        assert sink.flush(timeout=10) and sink.failures >= 1
        assert sink.dropped >= 1000 * 2 - 100  # all but what the queue holds at most
        with servers.redis_server(port) as url:  # back (empty) on the same address
            sent = sink.sent
            store["after"] = 2
            assert sink.flush(timeout=15) and sink.sent == sent + 2
            client = redis_py.Redis.from_url(url)
            assert [(e.key, e.outcome) for e in read_recent(client)] == [
                ("after", "started"),
                ("after", "finished"),
            ]
            client.close()
            sink.close()


def test_a_password_never_goes_in_the_url() -> None:
    with pytest.raises(ValueError, match="password="):
        RedisStreamSink("redis://:hunter2@127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="queue_size"):
        RedisStreamSink("redis://127.0.0.1:6379/0", queue_size=0)
    assert backends.events.HUB.on is False


@pytest.mark.slow
def test_two_processes_on_a_shared_cache_tell_their_story(
    redis: str, tmp_path: Path, moto_server: S3Target, request: pytest.FixtureRequest
) -> None:
    """A scripted scenario: each process's events, in the stream and in its own memory ring."""
    stream = f"test:{request.node.name}"
    S3JsonBackend(moto_server.bucket, prefix="story", client=moto_server.client)["hot"] = {"n": 1}
    where = f"s3:{moto_server.endpoint_url} {moto_server.bucket} story"
    procs = {
        name: subprocess.Popen(
            [sys.executable, WORKER, "events", str(tmp_path / "cache"), redis, stream, where],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    }

    def run(name: str, line: str) -> None:
        proc = procs[name]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"

    for name, line in [("a", "load hot"), ("b", "load hot"), ("a", "dump hot 2"), ("b", "load hot")]:
        run(name, line)
    rings = {}
    for name, proc in procs.items():
        out, _ = proc.communicate("quit\n", timeout=60)
        assert proc.returncode == 0
        rings[name] = [Event(**fields) for fields in json.loads(out.strip().splitlines()[-1])]
    client = redis_py.Redis.from_url(redis)
    streamed = read_recent(client, stream, count=1000)
    for name, proc in procs.items():
        assert [e for e in streamed if e.pid == proc.pid] == rings[name]  # every field, in order
    steps = {name: [(e.operation, e.key, e.outcome) for e in ring] for name, ring in rings.items()}
    miss = [
        ("load", "hot", "started"),
        ("lock", "hot", "attempted"),
        ("lock", "hot", "acquired"),
        ("load_if_changed", "hot", "started"),
        ("load_if_changed", "hot", "finished"),
        ("cache", "hot", "miss"),
        ("cache", "hot", "filled"),
        ("lock", "hot", "released"),
        ("load", "hot", "finished"),
    ]
    write = [
        ("dump", "hot", "started"),  # the tier's
        ("lock", "hot", "attempted"),
        ("lock", "hot", "acquired"),
        ("delete", "hot", "started"),  # the cache entry, dropped first
        ("delete", "hot", "finished"),
        ("dump", "hot", "started"),  # S3's
        ("dump", "hot", "finished"),
        ("cache", "hot", "filled"),
        ("lock", "hot", "released"),
        ("dump", "hot", "finished"),
    ]
    hit = [("load", "hot", "started"), ("cache", "hot", "hit"), ("load", "hot", "finished")]
    assert steps == {"a": miss + write, "b": hit + hit}  # b's second hit: a's value, in the shared cache
    dumps = [e.backend.split("(")[0] for e in rings["a"] if e.operation == "dump"]
    assert dumps == ["TieredBackend", "S3JsonBackend", "S3JsonBackend", "TieredBackend"]
    client.delete(stream, stream + ":processes")
    client.close()


def test_heartbeats_of_processes_silent_for_a_day_are_forgotten(redis: str) -> None:
    stream = "test:forget"
    client = redis_py.Redis.from_url(redis)
    old = {"host": "gone", "pid": 1, "seen": 1_000_000_000.0, "sent": 0, "dropped": 0}
    client.hset(stream + ":processes", mapping={"gone:1": json.dumps(old), "junk": "not json"})
    sink = RedisStreamSink(redis, stream=stream, interval=0.01)
    sink._beat()  # the first heartbeat, now rather than within the interval
    assert set(read_processes(client, stream)) == {f"{HOST}:{os.getpid()}"}
    sink.close()
    client.delete(stream, stream + ":processes")
    client.close()


def test_a_planted_password_never_reaches_the_stream_the_command_or_the_page(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    from backends.cli import main
    from backends.cli.statusweb import make_app, server

    secret = "planted-secret-8c1f"
    with servers.redis_server() as url:
        client = redis_py.Redis.from_url(url)
        client.config_set("requirepass", secret)  # this connection stays authenticated
        sink = RedisStreamSink(url, password=secret, interval=0.01)
        with subscribe(sink):
            VolatileBackend()["k"] = 1
            assert sink.flush()
        sink._beat()
        stored = repr(client.xrange("backends:events")) + repr(client.hgetall("backends:events:processes"))
        monkeypatch.setenv("REDISCLI_AUTH", secret)
        assert main(["status", url]) == 0 and main(["status", url, "--json"]) == 0
        monkeypatch.delenv("REDISCLI_AUTH")
        assert main(["status", url]) == 1  # no password: refused, saying so without one
        shown = capsys.readouterr()
        running = server(make_app(url, password=secret), "127.0.0.1:0")
        thread = threading.Thread(target=running.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{running.server_port}"
        pages = [urllib.request.urlopen(base + path).read().decode() for path in ("/status", "/status.json")]
        running.shutdown()
        running.server_close()
        assert "dump k finished" in shown.out and '"key": "k"' in pages[1]
        assert "refused access" in shown.err and "REDISCLI_AUTH" in shown.err
        for text in (stored, shown.out, shown.err, *pages, repr(sink)):
            assert secret not in text
        sink.close()
        client.close()
