"""backends status: the recent events of every process, one column each, with their ages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import redis as redis_py

from backends import VolatileBackend
from backends.cli import main
from backends.cli.status import age, render
from backends.events import HOST, Event, subscribe
from backends.redis.stream import RedisStreamSink

NOW = 1_800_000_000.0


def event(
    pid: int, seconds_ago: float, operation: str, key: str | None, outcome: str, **more: object
) -> Event:
    return Event(NOW - seconds_ago, "web1", pid, "JsonCache('/var/cache')", operation, key, outcome, **more)  # type: ignore[arg-type]


def test_ages_read_as_people_say_them() -> None:
    assert [age(s) for s in (0.2, 1, 12, 60, 150, 7200, 3 * 86400)] == [
        "just now",
        "1 second ago",
        "12 seconds ago",
        "1 minute ago",
        "2 minutes ago",
        "2 hours ago",
        "3 days ago",
    ]


def test_each_process_has_its_column_and_trouble_stands_out() -> None:
    events = [
        event(11, 130, "load", "osm/15/5255/12664.png", "started"),
        event(22, 125, "lock", "osm/15/5255/12664.png", "acquired", duration=0.5, attempts=9),
        event(11, 121, "load", "osm/15/5255/12664.png", "finished", duration=0.724),
        event(22, 2, "dump", "users/42", "failed", duration=0.01, detail="StoreUnavailableError: S3 is down"),
    ]
    processes = {
        "web1:11": {"host": "web1", "pid": 11, "seen": NOW - 3, "sent": 40, "dropped": 0},
        "web1:22": {"host": "web1", "pid": 22, "seen": NOW - 60, "sent": 7, "dropped": 2},
        "web1:33": {"host": "web1", "pid": 33, "seen": NOW - 3600, "sent": 1, "dropped": 0},  # long dead
    }
    lines = render(events, processes, NOW)
    assert lines[:3] == [
        "processes:",
        "  [1] web1:11  live, heartbeat 3 seconds ago, 40 sent, 0 dropped",
        "  [2] web1:22  silent, heartbeat 1 minute ago, 7 sent, 2 dropped",
    ]
    assert lines[3] == "events, oldest first:"
    body = [re.sub(r"^\d\d:\d\d:\d\d\.\d\d\d ", "", line) for line in lines[4:]]
    assert body == [
        "  [1] load osm/15/5255/12664.png started, 2 minutes ago",
        "!     [2] lock osm/15/5255/12664.png acquired in 0.500 s (9 attempts), 2 minutes ago",
        "  [1] load osm/15/5255/12664.png finished in 0.724 s, 2 minutes ago",
        "!     [2] dump users/42 failed in 0.010 s (StoreUnavailableError: S3 is down), 2 seconds ago",
    ]


def test_the_command_shows_this_processs_events(redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    stream = "test:status-command"
    sink = RedisStreamSink(redis, stream=stream, interval=0.01)
    with subscribe(sink):
        VolatileBackend()["users/42"] = {"name": "Ada"}
        assert sink.flush()
        sink._beat()  # the heartbeat now, not in up to 5 s
        assert main(["status", redis, "--stream", stream, "--json"]) == 0
        view = json.loads(capsys.readouterr().out)
        assert [p["state"] for p in view["processes"]] == ["live"]
        assert [(e["key"], e["outcome"], e["column"]) for e in view["events"]] == [
            ("users/42", "started", 1),
            ("users/42", "finished", 1),
        ]
        assert main(["status", redis, "--stream", stream]) == 0
        text = capsys.readouterr().out
        assert f"[1] {HOST}:{os.getpid()}  live" in text and "dump users/42 finished in" in text
    sink.close()


def test_follow_prints_new_events_as_they_come(redis: str) -> None:
    stream = "test:status-follow"
    follower = subprocess.Popen(
        [sys.executable, "-m", "backends", "status", redis, "--stream", stream, "--follow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().strip() == "processes:"
        assert follower.stdout.readline().strip() == "no events yet"  # then it waits for new ones
        sink = RedisStreamSink(redis, stream=stream, interval=0.01)
        with subscribe(sink):
            VolatileBackend()["k"] = 1
            assert sink.flush()
        assert "dump k started" in follower.stdout.readline()
        assert "dump k finished" in follower.stdout.readline()
        sink.close()
        client = redis_py.Redis.from_url(redis)
        entry = client.xadd(stream, {"hello": "world"}).decode()  # not an event: named, and followed on
        client.xadd(stream, {"e": json.dumps([NOW, "h", 1, "B", "dump", "\x1b]0;x\x07\nk", "finished"])})
        assert follower.stdout.readline() == f"entry {entry} could not be read (no field e), skipped\n"
        assert "[2] dump \\x1b]0;x\\x07\\nk finished, " in follower.stdout.readline()
        client.delete(stream)
        client.close()
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_a_password_in_the_url_is_refused_and_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:  # a usage error, before any I/O
        main(["status", "redis://:hunter2@127.0.0.1:1/0"])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert "argument url:" in err and "password=" in err and "hunter2" not in err
