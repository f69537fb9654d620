"""The live status view: what every process is doing, read from the Redis stream of their events.

``backends status redis://host:6379/0`` prints the recent events in time
order, one column of indentation per process, so each worker's story reads
top to bottom, with how long ago each happened; the processes come first,
from their heartbeats (silent ones marked, long-dead ones left out).
:func:`render` and :func:`summary` are the view; :func:`run_status` runs it;
:mod:`backends.cli.statusargs` is the command's arguments (and starts the web page).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, TextIO

from ..errors import BackendError, PermissionDeniedError, StoreError, StoreUnavailableError
from ..events import Event
from ..redis.streamread import DEFAULT_STREAM, Unreadable, check_count, check_stream
from ..redis.streamread import check_url as check_status_url
from .terminal import printable, write_line

__all__ = [
    "GONE_AFTER",
    "SILENT_AFTER",
    "age",
    "check_status_url",
    "check_timeout",
    "reading_error",
    "render",
    "render_event",
    "run_status",
    "summary",
]

#: seconds without a heartbeat after which a process is shown as silent
SILENT_AFTER: Final = 15.0
#: seconds without a heartbeat after which a process is left out
GONE_AFTER: Final = 600.0
#: spaces of indentation per process column
COLUMN: Final = 4
#: outcomes that stand out (marked "!")
TROUBLE: Final = frozenset({"failed", "lost", "timed out", "retried"})
#: unreadable entries named in the view (the rest are counted)
NAMED: Final = 5


def age(seconds: float) -> str:
    """``just now``, ``12 seconds ago``, ``2 minutes ago``, ``3 hours ago``, ``2 days ago``."""
    seconds = max(0.0, seconds)
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"


def _process(event: Event) -> str:
    return f"{event.host}:{event.pid}"


def _slow(event: Event) -> bool:
    """A lock wait worth seeing: more than 0.1 s."""
    return event.operation == "lock" and event.outcome == "acquired" and (event.duration or 0) > 0.1


def render_event(event: Event, column: int, now: float) -> str:
    """One line: the time, the indentation of the process's column, what happened, how long ago."""
    clock = time.strftime("%H:%M:%S", time.localtime(event.time)) + f".{int(event.time * 1000) % 1000:03d}"
    mark = "!" if event.outcome in TROUBLE or _slow(event) else " "
    line = f"{clock} {mark} {' ' * COLUMN * column}[{column + 1}] {event.describe()}, {age(now - event.time)}"
    return printable(line)  # another program's key, host or detail never reaches the terminal raw


def _columns(events: Iterable[Event], processes: dict[str, dict[str, Any]]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for name in [_process(event) for event in events] + sorted(processes):
        columns.setdefault(name, len(columns))
    return columns


def summary(
    events: list[Event],
    processes: dict[str, dict[str, Any]],
    now: float,
    unreadable: Sequence[Unreadable] = (),
) -> dict[str, Any]:
    """The view as data (what ``--json`` prints): processes with their state, the events, and what
    could not be read (each entry or heartbeat skipped: its kind, name and why).

    An event's fields are exact (a lone surrogate stays one); what is there to be shown (``text``,
    ``process``, an unreadable ``name``) is escaped as the terminal shows it, for the page too.
    """
    columns = _columns(events, processes)
    shown = []
    for name, column in columns.items():
        beat = processes.get(name)
        quiet = None if beat is None else now - float(beat["seen"])
        if quiet is not None and quiet > GONE_AFTER:
            continue
        state = "unknown" if quiet is None else "silent" if quiet > SILENT_AFTER else "live"
        shown.append({"process": printable(name), "column": column + 1, "state": state, "heartbeat": beat})
    return {
        "processes": shown,
        "events": [
            {
                **event._asdict(),
                "process": printable(_process(event)),
                "column": columns[_process(event)] + 1,
                "text": printable(event.describe()),
                "trouble": event.outcome in TROUBLE,
                "slow": _slow(event),
            }
            for event in events
        ],
        "unreadable": [{**skipped._asdict(), "name": printable(skipped.name)} for skipped in unreadable],
    }


def render(
    events: list[Event],
    processes: dict[str, dict[str, Any]],
    now: float,
    unreadable: Sequence[Unreadable] = (),
) -> list[str]:
    """The view as lines: the processes, then the events, oldest first, then what could not be
    read. Every control character of every line is escaped (:func:`~backends.cli.terminal.printable`)."""
    lines = [printable(line) for line in _lines(events, processes, now)]
    return lines + _unreadable_lines(unreadable)


def _lines(events: list[Event], processes: dict[str, dict[str, Any]], now: float) -> list[str]:
    view = summary(events, processes, now)
    lines = ["processes:"]
    for process in view["processes"]:
        beat = process["heartbeat"]
        if beat is None:
            note = "no heartbeat"
        else:
            note = (
                f"heartbeat {age(now - float(beat['seen']))}, {beat['sent']} sent, {beat['dropped']} dropped"
            )
        lines.append(f"  [{process['column']}] {process['process']}  {process['state']}, {note}")
    if not events:
        lines.append("no events yet")
        return lines
    columns = _columns(events, processes)
    lines.append("events, oldest first:")
    lines.extend(render_event(event, columns[_process(event)], now) for event in events)
    return lines


def _unreadable_lines(unreadable: Sequence[Unreadable]) -> list[str]:
    """One line per kind: how many were skipped, and the first few by name, with why."""
    lines = []
    for kind, one, many in (
        ("entry", "entry of the stream", "entries of the stream"),
        ("heartbeat", "heartbeat", "heartbeats"),
    ):
        skipped = [item for item in unreadable if item.kind == kind]
        if not skipped:
            continue
        what = f"1 {one}" if len(skipped) == 1 else f"{len(skipped)} {many}"
        named = ", ".join(f"{item.name} ({item.reason})" for item in skipped[:NAMED])
        more = f" and {len(skipped) - NAMED} more" if len(skipped) > NAMED else ""
        lines.append(printable(f"{what} could not be read (not written by backends), skipped: {named}{more}"))
    return lines


def check_timeout(timeout: object, name: str = "timeout") -> float:
    """Return ``timeout`` as seconds if it is a finite number above 0 and at most 3600; else ValueError."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
        raise ValueError(f"{name} is seconds: a number above 0, at most 3600")
    if not 0 < timeout <= 3600:
        raise ValueError(f"{name} is seconds: a number above 0, at most 3600, not {timeout!r}")
    return float(timeout)


def run_status(
    url: str,
    *,
    stream: str = DEFAULT_STREAM,
    count: int = 200,
    follow: bool = False,
    as_json: bool = False,
    out: TextIO,
    err: TextIO | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> int:
    """Print the view of ``stream`` on the Redis server at ``url``; with ``follow``, then every new event.

    Returns 0, or 1 if an entry or a heartbeat could not be read (each is
    skipped, named in the view, and counted on ``err``). Raises
    ValueError for a bad argument (before any I/O), and a
    :class:`~backends.errors.StoreError` when Redis cannot be read (each
    request is bounded by ``timeout`` seconds, and tried twice).
    """
    from ..redis.client import import_redis, make_client

    check_status_url(url)
    check_stream(stream)
    check_count(count)
    timeout = check_timeout(timeout)
    redis = import_redis()
    client = make_client(url, password=password, username=None, max_connections=1, timeout=timeout, retries=1)
    failure: BackendError | None = None
    try:
        try:
            skipped = _show(client, stream, count, follow=follow, as_json=as_json, out=out, timeout=timeout)
        except redis.RedisError as exc:
            failure = reading_error(exc, client, stream, timeout)
    finally:
        client.close()
    if failure is not None:
        raise failure  # out of the except: no Redis error in its __context__ (its text may name the setup)
    if skipped:
        write_line(err or sys.stderr, f"backends status: {_counted(skipped)} could not be read (skipped)")
        return 1
    return 0


def _counted(unreadable: Sequence[Unreadable]) -> str:
    entries = sum(item.kind == "entry" for item in unreadable)
    beats = len(unreadable) - entries
    parts = [f"{entries} {'entry' if entries == 1 else 'entries'}"] if entries else []
    parts += [f"{beats} heartbeat{'' if beats == 1 else 's'}"] if beats else []
    return " and ".join(parts)


def _show(
    client: Any, stream: str, count: int, *, follow: bool, as_json: bool, out: TextIO, timeout: float
) -> list[Unreadable]:
    from ..redis.streamread import follow as follow_stream
    from ..redis.streamread import read_view

    view = read_view(client, stream, count)  # following resumes at ``view.last``
    now = time.time()
    if as_json:  # ASCII: a lone surrogate is its \u escape, and the JSON stays UTF-8
        write_line(out, json.dumps(summary(view.events, view.processes, now, view.unreadable)))
    else:
        for line in render(view.events, view.processes, now, view.unreadable):
            write_line(out, line)
    if not follow:
        return view.unreadable
    columns = _columns(view.events, view.processes)

    def skipped(item: Unreadable) -> None:
        if as_json:
            write_line(out, json.dumps({"unreadable": item._asdict()}))
        else:
            write_line(out, f"{item.kind} {item.name} could not be read ({item.reason}), skipped")

    block = min(1.0, timeout / 2)  # a blocking read must end before the socket's timeout does
    for event in follow_stream(client, stream, after=view.last, block=block, unreadable=skipped):
        column = columns.setdefault(_process(event), len(columns))
        line = json.dumps(event._asdict()) if as_json else render_event(event, column, time.time())
        write_line(out, line)
    return view.unreadable  # pragma: no cover - following ends by an error or an interrupt


def reading_error(exc: Exception, client: Any, stream: str, timeout: float) -> BackendError:
    """The typed error for a Redis error met reading ``stream``: the same for the command and the page.

    A key another program retyped is named with what it holds (one ``TYPE``
    per key, only then). The message never holds Redis's own text.
    """
    from ..redis.client import import_redis

    errors = import_redis().exceptions
    if isinstance(exc, (errors.AuthenticationError, errors.AuthorizationError, errors.NoPermissionError)):
        return PermissionDeniedError(
            f"Redis refused access ({type(exc).__name__}): set REDISCLI_AUTH to its password",
            operation="status",
            key=stream,
        )
    if isinstance(exc, errors.TimeoutError):
        return StoreUnavailableError(
            f"Redis did not answer within {timeout:g} s (TimeoutError)", operation="status", key=stream
        )
    if isinstance(exc, errors.ResponseError) and str(exc).startswith("WRONGTYPE"):
        return _wrong_type(client, stream)
    if isinstance(exc, errors.ResponseError):
        code = str(exc).split(" ", 1)[0]
        code = code if code.isalpha() and code.isupper() else "ERR"
        return StoreError(f"Redis refused the read ({code})", operation="status", key=stream)
    return StoreUnavailableError(
        f"Redis could not be read ({type(exc).__name__})", operation="status", key=stream
    )


def _wrong_type(client: Any, stream: str) -> BackendError:
    for key, expected in ((stream, b"stream"), (stream + ":processes", b"hash")):
        try:
            kind = client.type(key)
        except Exception:  # only to name what the key holds; the error is told anyway
            break
        if kind not in (expected, expected.decode(), b"none", "none"):
            what = kind.decode("ascii", "replace") if isinstance(kind, bytes) else str(kind)
            return StoreError(
                f"the key holds a {what}, not a {expected.decode()} (WRONGTYPE): another program wrote "
                "it; the view reads what RedisStreamSink writes",
                operation="status",
                key=key,
            )
    return StoreError("a key of the view holds another type (WRONGTYPE)", operation="status", key=stream)
