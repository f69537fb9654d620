"""RedisStreamSink: every process's events in one Redis stream, for the live status view.

A storage call only appends its event to a bounded queue in memory; one
background thread per process sends the queue in batches (one pipeline of
``XADD ... MAXLEN ~`` per batch, on its own small connection pool) and
writes the process's heartbeat. A slow or dead Redis never blocks or slows
the call: while it cannot be reached, events are dropped and counted, and
sending resumes by itself once it is back.

Layout: the stream ``S`` (``backends:events`` by default) holds one entry
per event, its one field ``e`` the event as a JSON array in the order of
:class:`~backends.events.Event`'s fields (``[time, host, pid, backend,
operation, key, outcome, duration, bytes, attempts, detail]``); the hash
``S + ":processes"`` holds one field per process (``host:pid``) with its
last heartbeat, as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

from ..events import HOST, Event
from .client import check_redis_url, import_redis, make_client

__all__ = [
    "DEFAULT_STREAM",
    "FORGET_AFTER",
    "RedisStreamSink",
    "follow",
    "latest",
    "read_processes",
    "read_recent",
    "read_view",
]

DEFAULT_STREAM: Final = "backends:events"
#: seconds after its last heartbeat when a process's entry is removed (by the next sink that starts)
FORGET_AFTER: Final = 86_400.0


class RedisStreamSink:
    """Events to a Redis stream from a background thread; see the module's documentation.

    ``maxlen``: about how many events the stream keeps (``MAXLEN ~``);
    ``queue_size``: events waiting in this process at most (more are
    dropped, and counted in :attr:`dropped`); ``interval``: seconds between
    two sends; ``heartbeat``: seconds between two heartbeats. A password
    goes in ``password=`` (or ``REDISCLI_AUTH``), never in the URL.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream: str = DEFAULT_STREAM,
        maxlen: int = 10_000,
        queue_size: int = 10_000,
        interval: float = 0.1,
        heartbeat: float = 5.0,
        password: str | None = None,
        username: str | None = None,
        socket_timeout: float = 1.0,
    ) -> None:
        check_redis_url(url)
        for name, value in (("maxlen", maxlen), ("queue_size", queue_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} is an int >= 1, not {value!r}")
        for name, seconds in (
            ("interval", interval),
            ("heartbeat", heartbeat),
            ("socket_timeout", socket_timeout),
        ):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 3600:
                raise ValueError(f"{name} is seconds > 0, at most 3600, not {seconds!r}")
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.queue_size = queue_size
        self.interval = float(interval)
        self.heartbeat = float(heartbeat)
        #: events sent to Redis, and events dropped (queue full, or Redis unreachable)
        self.sent = 0
        self.dropped = 0
        #: sends that failed (each dropped its batch)
        self.failures = 0
        self._password, self._username, self._timeout = password, username, float(socket_timeout)
        self._queue: deque[Event] = deque()
        self._inflight = False
        self._counts = threading.Lock()
        self._pid = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start()

    # -- the caller's side: never waits --------------------------------------------

    def __call__(self, event: Event) -> None:
        if self._pid != os.getpid():  # a forked child: its own pool and thread
            self._start()
        if len(self._queue) >= self.queue_size:
            with self._counts:
                self.dropped += 1
            return
        self._queue.append(event)

    # -- the background thread ---------------------------------------------------------

    def _start(self) -> None:
        redis = import_redis()
        self._client = make_client(
            self.url,
            password=self._password,
            username=self._username,
            max_connections=2,
            timeout=self._timeout,
            retries=0,
        )
        self._errors = (redis.RedisError, OSError)
        self._pid = os.getpid()
        self._started = time.time()
        self._pruned = False
        self._queue.clear()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backends-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_beat = 0.0
        pause = self.interval
        while not self._stop.wait(pause):
            now = time.monotonic()
            try:
                if now >= next_beat:
                    self._beat()
                    next_beat = now + self.heartbeat
                self._send()
                pause = self.interval
            except self._errors:
                # Unreachable: what waits is dropped (and counted); try again later, less often.
                self._drop_queued()
                with self._counts:
                    self.failures += 1
                next_beat = 0.0
                pause = min(max(pause * 2, self.interval), 5.0)

    def _send(self) -> None:
        while self._queue:
            self._inflight = True  # popped, not yet sent: flush() waits for it too
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
            pipe = self._client.pipeline(transaction=False)
            for event in batch:
                pipe.xadd(self.stream, _fields(event), maxlen=self.maxlen, approximate=True)
            try:
                pipe.execute()
            except self._errors:
                with self._counts:
                    self.dropped += len(batch)
                    self._inflight = False
                raise
            with self._counts:
                self.sent += len(batch)
                self._inflight = False

    def _beat(self) -> None:
        with self._counts:
            state = {"sent": self.sent, "dropped": self.dropped}
        now = time.time()
        beats = self.stream + ":processes"
        beat = {"host": HOST, "pid": self._pid, "started": self._started, "seen": now, **state}
        self._client.hset(beats, f"{HOST}:{self._pid}", json.dumps(beat))
        if not self._pruned:  # once per process: processes silent for a day are gone for good
            old = [
                name
                for name, value in self._client.hgetall(beats).items()
                if _seen(value) < now - FORGET_AFTER
            ]
            if old:
                self._client.hdel(beats, *old)
            self._pruned = True

    def _drop_queued(self) -> None:
        lost = 0
        while self._queue:
            self._queue.popleft()
            lost += 1
        with self._counts:
            self.dropped += lost

    # -- lifetime -------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what is queued now was sent or dropped (at most ``timeout`` seconds); True if so."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._inflight) and time.monotonic() < deadline:
            self._stop.wait(self.interval / 4)  # the background thread is sending
        return not (self._queue or self._inflight)

    def close(self) -> None:
        """Send what is queued (briefly), stop the thread, remove this process's heartbeat."""
        self.flush(timeout=1.0)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Unreachable: the heartbeat ages out of the status view instead.
        with contextlib.suppress(*self._errors):
            self._client.hdel(self.stream + ":processes", f"{HOST}:{self._pid}")
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStreamSink({self.url!r}, stream={self.stream!r})"


def _seen(beat: bytes) -> float:
    try:
        return float(json.loads(beat)["seen"])
    except (ValueError, KeyError, TypeError):
        return 0.0  # not one of ours, or torn: forget it


def _fields(event: Event) -> dict[str, str]:
    # One field, the record as a JSON array in Event's field order: a fraction
    # of the work of one field per attribute, for the sending thread and Redis.
    return {"e": json.dumps(event, separators=(",", ":"))}


def _event(fields: dict[bytes, bytes]) -> Event:
    return Event(*json.loads(fields[b"e"]))


def read_recent(client: Any, stream: str = DEFAULT_STREAM, count: int = 200, until: str = "+") -> list[Event]:
    """The last ``count`` events of ``stream`` up to the entry ``until``, oldest first (one ``XREVRANGE``)."""
    entries = client.xrevrange(stream, max=until, count=count)
    return [_event(fields) for _, fields in reversed(entries)]


def latest(client: Any, stream: str = DEFAULT_STREAM) -> str:
    """The ID of the last entry of ``stream`` ("0-0" if none): where to read or follow from."""
    entries = client.xrevrange(stream, count=1)
    return entries[0][0].decode() if entries else "0-0"


def read_processes(client: Any, stream: str = DEFAULT_STREAM) -> dict[str, dict[str, Any]]:
    """The heartbeats of the processes writing to ``stream``, by ``host:pid`` (one ``HGETALL``)."""
    beats = client.hgetall(stream + ":processes")
    return {name.decode(): json.loads(value) for name, value in beats.items()}


def read_view(
    client: Any, stream: str = DEFAULT_STREAM, count: int = 200
) -> tuple[list[Event], dict[str, dict[str, Any]], str]:
    """The last ``count`` events, the heartbeats, and the ID the events end at (where
    :func:`follow` resumes, so that nothing is missed or shown twice)."""
    last = latest(client, stream)
    events = read_recent(client, stream, count, until=last) if last != "0-0" else []
    return events, read_processes(client, stream), last


def follow(
    client: Any, stream: str = DEFAULT_STREAM, after: str = "$", block: float = 1.0
) -> Iterator[Event]:
    """The events of ``stream`` after the entry ``after`` (default: from now on) as they come, forever."""
    last = after
    while True:
        for _, entries in client.xread({stream: last}, block=int(block * 1000)) or []:
            for entry_id, fields in entries:
                last = entry_id
                yield _event(fields)
