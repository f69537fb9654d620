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

At most once: a batch is never sent again (the client does not retry), so
an answer lost after Redis stored it counts the batch as dropped, and no
event is ever in the stream twice. Reading it back (what the status view
shows, and what it skips) is :mod:`backends.redis.streamread`, re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from ..events import HOST, Event
from .client import import_redis, make_client
from .streamread import (
    DEFAULT_STREAM,
    MAX_COUNT,
    MAX_TIME,
    Unreadable,
    View,
    check_count,
    check_stream,
    check_url,
    follow,
    heartbeat_seen,
    latest,
    read_processes,
    read_recent,
    read_view,
)

__all__ = [
    "DEFAULT_STREAM",
    "FORGET_AFTER",
    "MAX_COUNT",
    "MAX_TIME",
    "RedisStreamSink",
    "Unreadable",
    "View",
    "check_count",
    "check_stream",
    "check_url",
    "follow",
    "latest",
    "read_processes",
    "read_recent",
    "read_view",
]

log = logging.getLogger("backends.events")

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
        check_url(url)
        check_stream(stream)
        for name, secret in (("password", password), ("username", username)):
            if secret is not None and not isinstance(secret, str):
                raise ValueError(f"{name} is a str or None")  # never echoed
        for name, value in (("maxlen", maxlen), ("queue_size", queue_size)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
                raise ValueError(f"{name} is an int from 1 to 10**9, not {value!r}")
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
        #: sends and heartbeats that failed (a failed send dropped its batch)
        self.failures = 0
        #: the last failure, in a few words (its class, and Redis's error code): "" if none
        self.error = ""
        #: whether :meth:`close` was called: nothing is sent any more, events are dropped and counted
        self.closed = False
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
        if self.closed:  # still subscribed after close: nothing is sent, and that is counted
            with self._counts:
                self.dropped += 1
            return
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
        # New in a forked child: the parent's thread may have held the lock at the fork.
        self._counts = threading.Lock()
        self._inflight = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backends-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_beat = 0.0
        pause = beat_pause = self.interval
        while not self._stop.wait(pause):
            now = time.monotonic()
            if now >= next_beat:
                # Apart from the events: a heartbeat hash another program retyped stops only the beats.
                if self._attempt(self._beat):
                    beat_pause, next_beat = self.interval, now + self.heartbeat
                else:
                    beat_pause = min(beat_pause * 2, self.heartbeat, 5.0)
                    next_beat = now + beat_pause
            if self._attempt(self._send):
                pause = self.interval
            else:
                # Unreachable: what waits is dropped (and counted); try again later, less often.
                self._drop_queued()
                pause = min(max(pause * 2, self.interval), 5.0)

    def _attempt(self, step: Callable[[], None]) -> bool:
        """Run one send or heartbeat; a failure is counted and kept in :attr:`error`, never raised."""
        try:
            step()
        except Exception as exc:  # the thread must live on: the next try may work
            expected = isinstance(exc, self._errors)
            code = _code(exc) if type(exc).__name__ == "ResponseError" else ""
            with self._counts:
                self.failures += 1
                self.error = f"{type(exc).__name__} {code}".strip()
            if not expected:
                log.warning("RedisStreamSink: sending failed (%s); counted in sink.failures", self.error)
            return False
        return True

    def _send(self) -> None:
        while self._queue:
            self._inflight = True  # popped, not yet sent: flush() waits for it too
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
            pipe = self._client.pipeline(transaction=False)
            written = 0
            for event in batch:
                try:
                    fields = _fields(event)
                except (TypeError, ValueError):  # a NaN, or a field JSON has no form for
                    continue
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                written += 1
            try:
                # Never repeated (the client's retries are 0): an answer lost after Redis applied
                # the batch counts it as dropped, and no event is ever in the stream twice.
                pipe.execute()
            except BaseException:
                with self._counts:
                    self.dropped += len(batch)
                    self._inflight = False
                raise
            with self._counts:
                self.sent += written
                self.dropped += len(batch) - written
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
                if heartbeat_seen(value) < now - FORGET_AFTER
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
        """Send what is queued (briefly), stop the thread, remove this process's heartbeat.

        Once is enough; again does nothing. Events given after it are dropped and counted.
        """
        if self.closed:
            return
        self.closed = True
        if self._pid == os.getpid():  # a forked child that sent nothing has no thread of its own
            self.flush(timeout=1.0)
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            # Unreachable: the heartbeat ages out of the status view instead.
            with contextlib.suppress(*self._errors):
                self._client.hdel(self.stream + ":processes", f"{HOST}:{self._pid}")
        self._drop_queued()
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisStreamSink({self.url!r}, stream={self.stream!r})"


def _code(exc: Exception) -> str:
    """Redis's error code (WRONGTYPE, OOM...): never the rest, which quotes the pipeline's commands."""
    text = str(exc)
    found = re.search(r"caused error: (\S+)", text)
    word = found.group(1) if found else text.split(" ", 1)[0]
    return word if word.isalpha() and word.isupper() else "ERR"


def _fields(event: Event) -> dict[str, str]:
    # One field, the record as a JSON array in Event's field order: a fraction
    # of the work of one field per attribute, for the sending thread and Redis.
    # No NaN (no JSON a browser reads); a lone surrogate goes as its \u escape.
    return {"e": json.dumps(event, separators=(",", ":"), allow_nan=False)}
