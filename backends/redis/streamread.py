"""Reading the event stream back: the events and heartbeats :class:`~backends.redis.stream.RedisStreamSink`
writes, for the status view.

Redis holds whatever any client wrote there. An entry or a heartbeat that is
not one the sink writes (another field, not JSON, a field of the wrong type,
NaN, a time no clock can show) is never raised: it is skipped and named in
:attr:`View.unreadable`, and the rest is read. Bytes that are no UTF-8 are
kept as ``surrogateescape`` keeps them; text is escaped where it is printed
(:func:`backends.cli.terminal.printable`), never here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from ..events import Event

__all__ = [
    "DEFAULT_STREAM",
    "MAX_COUNT",
    "MAX_TIME",
    "URL_OPTIONS",
    "Unreadable",
    "View",
    "check_count",
    "check_stream",
    "check_url",
    "follow",
    "heartbeat_seen",
    "latest",
    "read_processes",
    "read_recent",
    "read_view",
]

DEFAULT_STREAM: Final = "backends:events"
#: the URL options of redis-py the event stream takes (the sink and the view set timeouts and pools)
URL_OPTIONS: Final = frozenset(
    {"db", "protocol", "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile"}
    | {"ssl_keyfile", "ssl_check_hostname", "ssl_min_version", "ssl_validate_ocsp"}
)

#: the latest time an event may carry (9999-12-31): what ``time.localtime`` can show
MAX_TIME: Final = 253_402_300_799.0
#: the most events one read may ask for (``count``; ``backends status -n``)
MAX_COUNT: Final = 100_000
_MAX_INT: Final = 2**63 - 1
#: Event's fields, in order: (name, kind, may be None)
_SHAPE: Final = (
    ("time", "time", False),
    ("host", "text", False),
    ("pid", "count", False),
    ("backend", "text", False),
    ("operation", "text", False),
    ("key", "text", True),
    ("outcome", "text", False),
    ("duration", "number", True),
    ("bytes", "count", True),
    ("attempts", "count", True),
    ("detail", "text", False),
)
_KINDS: Final = {
    "time": "a time since the epoch",
    "text": "a string",
    "count": "a whole number >= 0",
    "number": "a finite number",
}


class Unreadable(NamedTuple):
    """An entry of the stream, or a heartbeat, that is not one :class:`RedisStreamSink` writes: skipped."""

    #: ``entry`` (of the stream) or ``heartbeat`` (a field of ``<stream>:processes``)
    kind: str
    #: the entry's ID, or the heartbeat's field (another program's text: escape it to print it)
    name: str
    #: why, in a few words (``no field e``, ``not JSON``, ``its pid is not a whole number >= 0``)
    reason: str


class View(NamedTuple):
    """What :func:`read_view` read: the events and heartbeats it could read, and what it skipped."""

    events: list[Event]
    processes: dict[str, dict[str, Any]]
    #: the ID the events end at: where :func:`follow` resumes, so nothing is missed or shown twice
    last: str
    unreadable: list[Unreadable]


class _Bad(ValueError):
    """Not something this module wrote; the text says why."""


def check_url(url: object) -> str:
    """Return ``url`` if it names a Redis server the sink and the status view can use; else ValueError.

    Beyond :func:`~backends.redis.client.check_redis_url` (no password in it):
    printable ASCII, a port from 1 to 65535, a database number as its path,
    and only the options of :data:`URL_OPTIONS`. The message never holds the URL.
    """
    from .client import check_redis_url

    if not isinstance(url, str):
        raise ValueError("a Redis URL is a str: redis://host:port/db, rediss://..., unix:///path")
    check_redis_url(url)
    if not url.isascii() or re.search(r"[\x00-\x20\x7f]", url):
        raise ValueError("a Redis URL is printable ASCII, without spaces (punycode for a host name)")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (parts.scheme != "unix" and parts.port is None and parts.netloc.endswith(":")):
        raise ValueError("the Redis URL's port is a number from 1 to 65535")
    if parts.scheme != "unix" and not re.fullmatch(r"/?|/\d{1,6}/?", parts.path):
        raise ValueError("the Redis URL's path is its database number: redis://host:6379/0")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if "password" in name.lower() or "secret" in name.lower():
            raise ValueError("a secret does not go in a Redis URL: set REDISCLI_AUTH")
        if name not in URL_OPTIONS:
            raise ValueError(f"the Redis URL's option {name!r} is not one the event stream takes")
    from redis.connection import parse_url

    parse_url(url)  # type: ignore[no-untyped-call]  # each option's value: "Invalid value for 'db' in connection URL."
    return url


def check_stream(stream: object) -> str:
    """Return ``stream`` if it can name a stream (a non-empty str that is UTF-8); else ValueError."""
    if not isinstance(stream, str) or not stream:
        raise ValueError("stream is the name of a Redis stream: a non-empty str")
    try:
        stream.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("stream is not UTF-8 text (it holds a lone surrogate)") from None
    return stream


def check_count(count: object) -> int:
    """Return ``count`` if it is a number of events to read (1 to :data:`MAX_COUNT`); else ValueError."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count is a whole number from 1 to {MAX_COUNT}, not {count!r}")
    return count


def _text(value: bytes | str) -> str:
    # Bytes that are no UTF-8 are kept (as surrogateescape does) and escaped when printed.
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


def _no_constant(name: str) -> Any:
    raise _Bad(f"it holds {name}")  # NaN and Infinity: no JSON a browser reads


def _json(value: bytes | str) -> Any:
    try:
        return json.loads(_text(value), parse_constant=_no_constant)
    except _Bad:
        raise
    except (ValueError, RecursionError):  # not JSON, a number of 4,300 digits, nesting without end
        raise _Bad("not JSON") from None


def _fits(value: object, kind: str) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "count":
        return isinstance(value, int) and 0 <= value <= _MAX_INT
    if not math.isfinite(value):
        return False
    return kind == "number" or 0 <= value <= MAX_TIME


def _event(fields: dict[Any, Any]) -> Event:
    raw = fields.get(b"e", fields.get("e"))
    if raw is None:
        raise _Bad("no field e")
    data = _json(raw)
    if not isinstance(data, list) or not 7 <= len(data) <= len(_SHAPE):
        raise _Bad(f"e is not an array of 7 to {len(_SHAPE)} fields")
    for value, (name, kind, optional) in zip(data, _SHAPE, strict=False):  # the last have defaults
        if not (value is None and optional) and not _fits(value, kind):
            raise _Bad(f"its {name} is not {_KINDS[kind]}")
    return Event(*data)


def _heartbeat(value: bytes | str) -> dict[str, Any]:
    data = _json(value)
    if not isinstance(data, dict):
        raise _Bad("not a JSON object")
    beat = {}
    for name, kind, optional in (
        ("host", "text", False),
        ("pid", "count", False),
        ("started", "time", True),
        ("seen", "time", False),
        ("sent", "count", False),
        ("dropped", "count", False),
    ):
        if name not in data and optional:
            continue
        if name not in data:
            raise _Bad(f"no {name}")
        if not _fits(data[name], kind):
            raise _Bad(f"its {name} is not {_KINDS[kind]}")
        beat[name] = data[name]  # only what the view shows: another program's extras stay out
    return beat


def _entries(entries: list[Any]) -> tuple[list[Event], list[Unreadable]]:
    events, unreadable = [], []
    for entry_id, fields in entries:
        try:
            events.append(_event(fields))
        except _Bad as exc:
            unreadable.append(Unreadable("entry", _text(entry_id), str(exc)))
    return events, unreadable


def _recent(client: Any, stream: str, count: int, until: str) -> tuple[list[Event], list[Unreadable]]:
    check_count(count)
    return _entries(list(reversed(client.xrevrange(stream, max=until, count=count))))


def read_recent(client: Any, stream: str = DEFAULT_STREAM, count: int = 200, until: str = "+") -> list[Event]:
    """The last ``count`` entries of ``stream`` up to the entry ``until``, oldest first, as events
    (one ``XREVRANGE``). An entry this module did not write is skipped (:func:`read_view` names it)."""
    return _recent(client, stream, count, until)[0]


def latest(client: Any, stream: str = DEFAULT_STREAM) -> str:
    """The ID of the last entry of ``stream`` ("0-0" if none): where to read or follow from."""
    entries = client.xrevrange(stream, count=1)
    return _text(entries[0][0]) if entries else "0-0"


def _processes(client: Any, stream: str) -> tuple[dict[str, dict[str, Any]], list[Unreadable]]:
    processes, unreadable = {}, []
    for name, value in client.hgetall(stream + ":processes").items():
        try:
            processes[_text(name)] = _heartbeat(value)
        except _Bad as exc:
            unreadable.append(Unreadable("heartbeat", _text(name), str(exc)))
    return processes, unreadable


def read_processes(client: Any, stream: str = DEFAULT_STREAM) -> dict[str, dict[str, Any]]:
    """The heartbeats of the processes writing to ``stream``, by ``host:pid`` (one ``HGETALL``).

    A heartbeat this module did not write is skipped (:func:`read_view` names it)."""
    return _processes(client, stream)[0]


def read_view(client: Any, stream: str = DEFAULT_STREAM, count: int = 200) -> View:
    """The last ``count`` entries as events, the heartbeats, the ID the events end at, and what
    could not be read (three requests). Redis's errors are raised as they are."""
    check_count(count)
    last = latest(client, stream)
    events, unreadable = _recent(client, stream, count, last) if last != "0-0" else ([], [])
    processes, strays = _processes(client, stream)
    return View(events, processes, last, unreadable + strays)


def follow(
    client: Any,
    stream: str = DEFAULT_STREAM,
    after: str = "$",
    block: float = 1.0,
    unreadable: Callable[[Unreadable], object] | None = None,
) -> Iterator[Event]:
    """The events of ``stream`` after the entry ``after`` (default: from now on) as they come, forever.

    An entry this module did not write is skipped, and given to ``unreadable`` if set.
    """
    last = after
    while True:
        for _, entries in client.xread({stream: last}, block=int(block * 1000)) or []:
            for entry_id, fields in entries:
                last = entry_id
                try:
                    event = _event(fields)
                except _Bad as exc:
                    if unreadable is not None:
                        unreadable(Unreadable("entry", _text(entry_id), str(exc)))
                    continue
                yield event


def heartbeat_seen(beat: bytes | str) -> float:
    """When the heartbeat ``beat`` was written; 0.0 if it is not one the sink writes."""
    try:
        return float(_heartbeat(beat)["seen"])
    except _Bad:
        return 0.0  # not one of ours, or torn
