"""The live status view: what every process is doing, read from the Redis stream of their events.

``backends status redis://host:6379/0`` prints the recent events in time
order, one column of indentation per process, so each worker's story reads
top to bottom, with how long ago each happened; the processes come first,
from their heartbeats (silent ones marked, long-dead ones left out).
:func:`render` and :func:`summary` are the view; :func:`run_status` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from typing import Any, Final, TextIO

from .events import Event

__all__ = [
    "GONE_AFTER",
    "SILENT_AFTER",
    "add_status_command",
    "age",
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
    return f"{clock} {mark} {' ' * COLUMN * column}[{column + 1}] {event.describe()}, {age(now - event.time)}"


def _columns(events: Iterable[Event], processes: dict[str, dict[str, Any]]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for name in [_process(event) for event in events] + sorted(processes):
        columns.setdefault(name, len(columns))
    return columns


def summary(events: list[Event], processes: dict[str, dict[str, Any]], now: float) -> dict[str, Any]:
    """The view as data (what ``--json`` prints): processes with their state, and the events."""
    columns = _columns(events, processes)
    shown = []
    for name, column in columns.items():
        beat = processes.get(name)
        quiet = None if beat is None else now - float(beat["seen"])
        if quiet is not None and quiet > GONE_AFTER:
            continue
        state = "unknown" if quiet is None else "silent" if quiet > SILENT_AFTER else "live"
        shown.append({"process": name, "column": column + 1, "state": state, "heartbeat": beat})
    return {
        "processes": shown,
        "events": [
            {
                **event._asdict(),
                "process": _process(event),
                "column": columns[_process(event)] + 1,
                "text": event.describe(),
                "trouble": event.outcome in TROUBLE,
                "slow": _slow(event),
            }
            for event in events
        ],
    }


def render(events: list[Event], processes: dict[str, dict[str, Any]], now: float) -> list[str]:
    """The view as lines: the processes, then the events, oldest first."""
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


def run_status(
    url: str,
    *,
    stream: str,
    count: int,
    follow: bool,
    as_json: bool,
    out: TextIO,
    password: str | None = None,
) -> int:
    """Print the view of ``stream`` on the Redis server at ``url``; with ``follow``, then every new event."""
    from .redis.client import import_redis, make_client
    from .redis.stream import follow as follow_stream
    from .redis.stream import read_view

    client = make_client(url, password=password, username=None, max_connections=1, timeout=10.0, retries=1)
    redis = import_redis()
    try:
        events, processes, last = read_view(client, stream, count)  # following resumes at ``last``
        now = time.time()
        if as_json:
            print(json.dumps(summary(events, processes, now)), file=out, flush=True)
        else:
            print("\n".join(render(events, processes, now)), file=out, flush=True)
        if follow:
            columns = _columns(events, processes)
            for event in follow_stream(client, stream, after=last):
                column = columns.setdefault(_process(event), len(columns))
                line = json.dumps(event._asdict()) if as_json else render_event(event, column, time.time())
                print(line, file=out, flush=True)
    except redis.RedisError as exc:
        raise _unreadable(redis, exc, stream) from None  # its text may name the server's setup
    finally:
        client.close()
    return 0


def _unreadable(redis: Any, exc: Exception, stream: str) -> Exception:
    from .errors import PermissionDeniedError, StoreUnavailableError

    errors = redis.exceptions
    if isinstance(exc, (errors.AuthenticationError, errors.AuthorizationError, errors.NoPermissionError)):
        return PermissionDeniedError(
            f"Redis refused access ({type(exc).__name__}): set REDISCLI_AUTH to its password",
            operation="status",
            key=stream,
        )
    return StoreUnavailableError(
        f"Redis could not be read ({type(exc).__name__})", operation="status", key=stream
    )


def add_status_command(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``backends status``, and what runs it."""
    parser.add_argument("url", help="the Redis server: redis://host:6379/0 (a password: REDISCLI_AUTH)")
    parser.add_argument("--stream", default="backends:events", help="the stream (default backends:events)")
    parser.add_argument("-n", "--count", type=int, default=200, help="recent events to show (default 200)")
    parser.add_argument("-f", "--follow", action="store_true", help="then print new events as they come")
    parser.add_argument(
        "--serve", metavar="HOST:PORT", help="serve the view as a web page instead (/status, /status.json)"
    )
    parser.set_defaults(run=_run_command)


def _run_command(args: argparse.Namespace) -> int:
    if args.serve:
        from .statusweb import make_app, serve

        serve(make_app(args.url, stream=args.stream, count=args.count), args.serve)
        return 0
    return run_status(
        args.url, stream=args.stream, count=args.count, follow=args.follow, as_json=args.json, out=sys.stdout
    )
