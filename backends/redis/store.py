"""RedisBackend: one Redis database (or a prefix of it) through one blocking connection pool.

Layout under the prefix ``P`` (README.rst, "Redis backends"): a value is the
string ``P + key``, readable with ``redis-cli GET``; the backend's own
structures have names no key can have (the DEL character, as for S3):

- ``P + "\\x7findex"``: a sorted set of every key (score 0), so listings are
  sorted as on S3 (by UTF-8 bytes), paged with ``ZRANGEBYLEX`` in flat
  client memory, and ``len`` is one ``ZCARD``;
- ``P + "\\x7fdeadlines"``: a sorted set of the deadlines (ms), so an
  expired key is absent for every call even while Redis keeps its value;
- ``P + "\\x7fetag/" + key``: the origin ETag a tier filled the entry with;
- ``P + "\\x7flock/" + sha256``: lock leases (:mod:`.locks`).

- ``P + "\x7ftake/" + token``: the answer of a call a lost reply may repeat
  (:mod:`.scripts`), kept for as long as redis-py may retry it.

Every change of a value and of the index happens in one server-side script,
so our own writes never set them apart. A key is ours when it is in the
index and its value is a string: every read is a script that checks it
(the round trips of ``GET``, ``EXISTS``, ``MGET``), so a value another
program writes under the prefix is absent for every call and left alone,
and one it deletes or retypes, or Redis evicts, is absent too and leaves
the index at the first listing, ``len``, ``purge`` or sweep of a write
that meets it (README.rst, "Redis backends").
"""

from __future__ import annotations

import codecs
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..cache import MAX_TIMEOUT, CountedLookups, Entry, check_timeout
from ..codecs.layers import CodecOption
from ..errors import (
    BackendError,
    InvalidKeyError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
)
from ..events import observed
from ..info import Stat, utc
from ..keys import key_problem
from ..locks import Lock, lock_name
from . import plans
from .client import check_redis_url, import_redis, make_client
from .locks import RedisLock
from .scripts import SHAS, run_script

__all__ = ["DEADLINES", "ETAGS", "INDEX", "LOCKS", "PAGE", "TAKES", "RedisBackend"]

V = TypeVar("V")
T = TypeVar("T")

INDEX: Final = "\x7findex"
DEADLINES: Final = "\x7fdeadlines"
ETAGS: Final = "\x7fetag/"
LOCKS: Final = "\x7flock/"
TAKES: Final = "\x7ftake/"
#: keys per MGET, per write script and per listing page
PAGE: Final = plans.PAGE
#: the SHA-1 of the script of a plain dump
PUT: Final = SHAS["put"]


class RedisBackend(CountedLookups, BaseBackend[V, bytes]):
    """A Redis database, or one ``prefix`` of it; Valkey works the same.

    Built from a URL (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path/redis.sock``) or an existing redis-py ``client``.
    Constructing sends nothing. A password never goes in the URL: pass
    ``password=`` (and ``username=`` for an ACL user), or set
    ``REDISCLI_AUTH``; it never appears in a repr, message or log line.
    ``max_connections`` sizes the blocking pool (callers wait
    ``socket_timeout`` seconds for a connection), ``socket_timeout`` bounds
    every socket operation, and connection errors and timeouts are retried
    ``retries`` times, never an answer of the server.

    ``timeout``: seconds a value lives after it is written (None: forever;
    per ``dump``, ``timeout=``). Deadlines run on the server's clock, and
    Redis reclaims the memory of an expired value itself, ``keep_expired``
    seconds after its deadline (default: as long as ``timeout``; 0 without
    one). Until then an expired value is absent for every call but
    :meth:`peek`, so a tier can revalidate it by ETag or serve it stale: a
    Redis backend with a timeout is an :class:`~backends.cache.ExpiringCache`
    that every machine shares. ``clock`` replaces the server's clock
    (seconds since the epoch), for tests.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        timeout: float | None = None,
        keep_expired: float | Missing = MISSING,
        client: Any = None,
        password: str | None = None,
        username: str | None = None,
        max_connections: int = 16,
        socket_timeout: float = 10.0,
        retries: int = 3,
        clock: Callable[[], float] | None = None,
        codec: CodecOption[V] = None,
    ) -> None:
        self._check_codec(codec)
        redis = import_redis()
        _check_prefix(prefix)
        self.timeout = check_timeout(timeout)
        self.keep_expired = _check_keep(keep_expired, self.timeout)
        if client is None:
            check_redis_url(url)
            _check_options(max_connections, socket_timeout, retries)
            client = make_client(
                url,
                password=password,
                username=username,
                max_connections=max_connections,
                timeout=socket_timeout,
                retries=retries,
                source=weakref.ref(self),
            )
            self._owns_client = True
        else:
            _check_client(client)
            self._owns_client = False
        _check_prefix(prefix)
        self.server_url = url if self._owns_client else None
        self.prefix = prefix if not prefix or prefix.endswith(":") else prefix + ":"
        self._settings = {
            "prefix": prefix,
            "timeout": timeout,
            "keep_expired": keep_expired,
            "password": password,
            "username": username,
            "max_connections": max_connections,
            "socket_timeout": socket_timeout,
            "retries": retries,
            "clock": clock,
            **self._codec_option(),
        }
        self._injected_clock = clock
        self._keep = int(self.keep_expired * 1000)
        self.client = client
        self._structures = [self.prefix + INDEX, self.prefix + DEADLINES]
        self._index = self._structures[0]
        # A token key keeps a call's answer for as long as redis-py may repeat
        # the call: every try waits at most socket_timeout (and the backoff, 1 s).
        take_ms = int((retries + 1) * (socket_timeout + 1) * 1000) if self._owns_client else 60_000
        self._at = plans.Names(
            self.prefix, self._structures, self.prefix + ETAGS, self.prefix + TAKES, take_ms
        )
        self._native_errors = (redis.RedisError,)
        self._errors = redis.exceptions
        self._noscript = redis.exceptions.NoScriptError
        self._closed = False
        # A backend with a timeout is a cache: its loads count hits and misses, as JsonCache's.
        self._counted = self.timeout is not None
        self._start_counting()

    def clock(self) -> float:
        """The clock of the deadlines: the server's (one TIME request), or the injected one."""
        if self._injected_clock is not None:
            return float(self._injected_clock())
        with self._translating("clock", None):
            seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1e6

    def _now(self) -> str:
        """The time argument of every script: the injected clock in ms, or "" for the server's."""
        clock = self._injected_clock
        return "" if clock is None else str(round(clock() * 1000))

    def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return run_script(self.client, self._noscript, name, keys, [self._now(), *args])

    def _send(self, request: plans.Request) -> Any:
        """Answer one request of a plan (:mod:`.plans`) with the blocking client."""
        if isinstance(request, plans.Script):
            return self._run(request.name, request.keys, request.args)
        return getattr(self.client, request.name)(*request.args)

    def _drive(self, plan: plans.Plan[T]) -> T:
        return plans.drive(plan, self._send)

    def _names(self, keys: list[str]) -> list[str]:
        """The KEYS of a read script of whole entries: the structures, then each key's value and ETag key."""
        names = list(self._structures)
        for key in keys:
            names += [self.prefix + key, self.prefix + ETAGS + key]
        return names

    def _ttl(self, timeout: float | Missing | None) -> int:
        seconds = self.timeout if timeout is MISSING else check_timeout(timeout)
        return -1 if seconds is None else int(seconds * 1000)

    # -- reading ------------------------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        data = self._drive(plans.load(self._at, key))
        if self._counted:
            self._looked_up(key, data is not MISSING)
        return data

    def _contains(self, key: str) -> bool:
        return self._drive(plans.contains(self._at, key))

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        found = self._drive(plans.load_many(self._at, keys))
        if self._counted:
            self._looked_up_all(keys, found)
        return found

    # -- writing ------------------------------------------------------------------------------

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        if not if_absent:
            return self._put(key, data)
        return self._write("nx", [(key, data)], self._ttl(MISSING))

    def _put(self, key: str, data: bytes, ttl: int | None = None) -> bool:
        """A plain dump of one key: the request of :func:`.plans.put_request`, sent as it is (the
        hot path: driving a plan cost a dump a fifth of its client CPU; tests compare the two)."""
        if ttl is None:
            ttl = self._ttl(MISSING)
        now = "" if self._injected_clock is None else self._now()
        try:  # run_script, inline
            self.client.execute_command(
                "EVALSHA", PUT, 2, self._index, self.prefix + key, now, ttl, self._keep, data
            )
        except self._noscript:
            run_script(
                self.client,
                self._noscript,
                "put",
                [self._index, self.prefix + key],
                [now, ttl, self._keep, data],
            )
        return True

    def _write(
        self, mode: str, pairs: list[tuple[str, bytes]], ttl: int, etag: str = "", origin_etag: str = ""
    ) -> bool:
        return self._drive(
            plans.write(self._at, mode, pairs, ttl, keep=self._keep, etag=etag, origin=origin_etag)
        )

    @observed("dump")
    def dump(
        self,
        key: str,
        value: V,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        timeout: float | Missing | None = MISSING,
    ) -> bool:
        """Store ``value`` under ``key``, expiring after ``timeout`` seconds (default: the backend's).

        ``if_absent=True`` writes only a new (or expired) key; ``if_match``
        only if the value's ETag (``stat(key).etag``) is that. Returns False
        when a condition fails; one round trip either way. ``timeout=0`` is
        already expired (the key reads as absent); ``None`` never expires.
        """
        if if_absent and if_match is not None:
            raise ValueError("if_absent and if_match exclude each other")
        if if_match is None and not if_absent:
            if timeout is MISSING:
                return self._write_value(key, value, "dump", self._put)
            plain = self._ttl(timeout)
            return self._write_value(key, value, "dump", lambda key, data: self._put(key, data, plain))
        ttl = self._ttl(timeout)
        mode, etag = ("match", if_match) if if_match is not None else ("nx", "")
        return self._write_value(
            key, value, "dump", lambda key, data: self._write(mode, [(key, data)], ttl, etag)
        )

    def _dump_many(self, items: list[tuple[str, bytes]]) -> None:
        self._write("set", items, self._ttl(MISSING))

    def _delete(self, key: str) -> bool:
        return self._delete_many([key]) > 0

    def _delete_many(self, keys: list[str]) -> int:
        return self._drive(plans.delete_many(self._at, keys))

    def _pop(self, key: str) -> bytes | Missing:
        return self._drive(plans.pop(self._at, key))

    # -- listing ------------------------------------------------------------------------------

    def _page(self, low: str | bytes, high: str | bytes) -> tuple[bytes, list[str]]:
        """One page of the index from ``low`` to ``high``, and the live keys in it.

        The first is where the next page starts, or ``b""`` when this page was the last.
        """
        args = [self.prefix, self.prefix + ETAGS, low, high, PAGE]
        last, seen, *live = self._run("page", self._structures, args)
        return (last if int(seen) == PAGE else b""), [raw.decode("utf-8") for raw in live]

    def _iter_keys(self) -> Iterator[str]:
        low: str | bytes = "-"
        while True:
            last, keys = self._page(low, "+")
            yield from keys
            if not last:
                return
            low = b"(" + last

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # Sorted by UTF-8 bytes, as S3 lists: a range of the index.
        try:
            encoded = prefix.encode("utf-8")
        except UnicodeEncodeError:
            return  # a lone surrogate: no key (valid UTF-8) starts with it
        low: bytes = b"[" + encoded if prefix else b"-"
        high = b"(" + _after(encoded) if prefix else b"+"
        if not delimiter:
            while True:
                last, keys = self._page(low, high)
                yield from keys
                if not last:
                    return
                low = b"(" + last
        # With a delimiter the server yields each folder once and jumps past
        # everything below it: a folder costs no page sent to the client.
        try:
            delimiter.encode("utf-8")
        except UnicodeEncodeError:
            delimiter = "\x00"  # no key holds this one (a control character): no folder is cut
        args = [high, len(encoded) + 1, delimiter, PAGE]
        where = [self.prefix, self.prefix + ETAGS]
        while True:
            low, *entries = self._run("folders", self._structures, [*where, low, *args])
            yield from (raw.decode("utf-8") for raw in entries)
            if not low:
                return

    def strays(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """What the index holds that is no key (another program added it): ``(name, reason)``.

        Such a name is never listed, counted, read or removed by any call;
        the name is shown escaped (``\\xff``), on one line. ``backends ls``
        and ``backends cp`` report these (``cp`` then exits 1).
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix is a str, not {type(prefix).__name__}")
        try:
            start = prefix.encode("utf-8")
        except UnicodeEncodeError:
            start = prefix.encode("utf-8", "surrogatepass")  # a stray can start so
        low: bytes = b"[" + start if start else b"-"
        with self._translating("strays", None):
            while batch := self.client.zrangebylex(self._structures[0], low, "+", start=0, num=PAGE):
                for raw in batch:
                    if not raw.startswith(start):
                        return
                    if (problem := _not_a_key(raw)) is not None:
                        yield _escaped(raw), problem
                if len(batch) < PAGE:
                    return
                low = b"(" + batch[-1]

    def _len(self) -> int:
        return self._drive(plans.length(self._at))

    def _clear(self) -> None:
        # Page by page past a cursor: the strays (no keys, another program's) stay behind.
        low: bytes = b"-"
        while batch := self.client.zrangebylex(self._structures[0], low, "+", start=0, num=PAGE):
            self._delete_many([raw.decode("utf-8") for raw in batch if _not_a_key(raw) is None])
            if len(batch) < PAGE:
                return
            low = b"(" + batch[-1]

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return RedisLock(
            key,
            timeout,
            ttl,
            client=lambda: self.client,  # after close(), the stand-in that refuses every call
            name=self.prefix + LOCKS + lock_name(key),
            noscript=self._noscript,
            **self._lock_context(),
        )

    # -- expiry, stat ---------------------------------------------------------------------------

    @observed("purge", keyed=False, detail="{} removed")
    def purge(self) -> int:
        """Remove every expired key from the index (Redis has reclaimed their values); how many.

        It also drops the entries whose value is gone (evicted, or deleted
        or retyped by another client), as a listing or ``len`` that meets
        them does; those are not counted: they were absent already.
        """
        removed, args = 0, [self.prefix, self.prefix + ETAGS, PAGE, self._at.take_ms]
        with self._translating("purge", None):
            while batch := int(
                self._run("purge", [*self._structures, self._at.takes + self._at.token()], args)
            ):
                removed += batch
            # And the entries whose value another client deleted or retyped, or Redis evicted.
            self._drive(plans.length(self._at))
        return removed

    def expires(self, key: str) -> datetime | None:
        """When ``key`` expires (a UTC datetime, by the deadlines' clock); None: never; KeyError: absent."""
        key = self._check(key, "expires")
        with self._translating("expires", key):
            due = self._run("read", [*self._structures, self.prefix + key], [key, "expires"])
        if due is None:
            raise KeyError(key)
        return None if int(due) < 0 else utc(int(due) / 1000)

    def stat(self, key: str) -> Stat | None:
        """Size and ETag (the SHA-1 of the stored bytes, what ``if_match`` takes); one round trip."""
        key = self._check(key, "stat")
        with self._translating("stat", key):
            found = self._run("read", [*self._structures, self.prefix + key], [key, "stat"])
        if found is None:
            return None
        size, etag = found
        return Stat(key=key, size=int(size), etag=etag.decode("ascii"), content_type=self.codec.content_type)

    # -- entries, for a tier (the ExpiringCache capability) -----------------------------------

    def peek(self, key: str) -> Entry[V] | None:
        """The entry of ``key``, expired (but kept) or not, with its origin ETag; one round trip.

        An expired entry whose data no longer decodes is no entry (a tier
        loads it afresh); a fresh one raises CorruptValueError like ``load``.
        """
        key = self._check(key, "peek")
        with self._translating("peek", key):
            found = self._run("read", self._names([key]), [key, "peek"])
        if found is None:
            return None
        data, due, fresh, tag = found
        deadline = None if int(due) < 0 else int(due) / 1000
        return self._entry(data, key, deadline, bool(fresh), tag.decode("utf-8") or None)

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``."""
        ttl, tag = self._ttl(MISSING), etag or ""

        def write(key: str, data: bytes) -> bool:
            return self._write("set", [(key, data)], ttl, "", tag)

        self._write_value(key, value, "fill", write)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value filled with ``etag``."""
        key = self._check(key, "renew")
        with self._translating("renew", key):
            return bool(self._run("renew", self._names([key]), [key, etag, self._ttl(MISSING), self._keep]))

    # -- errors, identity, lifetime -------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if self._closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        errors = self._errors
        # Most specific first; one cause each (ATTACKS.md, 6): a read timeout is not "could not connect".
        table: list[tuple[tuple[type[BaseException], ...], type[BackendError], str]] = [
            (
                (errors.AuthenticationError, errors.AuthorizationError, errors.NoPermissionError),
                PermissionDeniedError,
                "Redis refused access ({name})",
            ),
            (
                (errors.BusyLoadingError,),
                StoreUnavailableError,
                "Redis is loading its data set ({name}): ask again later",
            ),
            ((errors.TimeoutError,), StoreUnavailableError, "Redis answered too late ({name}: {said})"),
            ((errors.ConnectionError,), StoreUnavailableError, "Redis could not be reached ({name}: {said})"),
            # A replica, or a primary stepping down in a failover: ask again later.
            (
                (errors.ReadOnlyError, errors.MasterDownError),
                StoreUnavailableError,
                "Redis cannot take this now: {said}",
            ),
            ((errors.ResponseError,), StoreError, "Redis answered: {said}"),
        ]
        for kinds, cls, message in table:
            if isinstance(exc, kinds):
                return cls, message.format(name=type(exc).__name__, said=_said(exc))
        return StoreError, f"{type(exc).__name__}: {_said(exc)}"

    def _describe(self) -> str:
        parts = [repr(self.server_url) if self.server_url else "client=..."]
        if self.prefix:
            parts.append(f"prefix={self.prefix!r}")
        if self.timeout is not None:
            parts.append(f"timeout={self.timeout:g}")
        if self.keep_expired != (self.timeout or 0.0):
            parts.append(f"keep_expired={self.keep_expired:g}")
        return ", ".join(parts)

    def _identity(self) -> tuple[object, ...]:
        where = self.server_url or id(self.client)
        return (where, self.prefix, self.codec.identity())

    def __reduce__(self) -> tuple[Any, ...]:
        # A connection pool cannot cross processes: a copy builds its own.
        if not self._owns_client:
            raise TypeError(f"{self!r} was given a client: build one per process, or pass a URL")
        return (_rebuild, (type(self), self.server_url, self._settings))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the pool's connections (if the backend made it); every later call raises StoreError.

        Closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        client, self.client = self.client, _Closed(self._errors.ConnectionError)
        if self._owns_client:
            client.close()
            client.connection_pool.disconnect()


def _after(prefix: bytes) -> bytes:
    """The first bytes past every UTF-8 string that starts with ``prefix`` (its last byte moved up).

    The last byte of UTF-8 is never 0xFF, so it always can be.
    """
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _not_a_key(raw: bytes) -> str | None:
    """Why an index member is no key (the rule the scripts' ``valid`` applies), or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return key_problem(text)


def _escaped(raw: bytes) -> str:
    """Bytes as one printable line: invalid UTF-8 and control characters as escapes."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _said(exc: BaseException) -> str:
    """redis-py's own words (host and port, errno; never a password), on one printable line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)[:200]


def _check_prefix(prefix: object) -> None:
    """A prefix is a str of valid UTF-8 text without control characters; else InvalidKeyError."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"prefix is a str, not {type(prefix).__name__}", operation="init")
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(
            "prefix is not valid UTF-8 text (a lone surrogate)", operation="init", key=ascii(prefix)
        ) from None
    if any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
        raise InvalidKeyError("prefix has a control character", operation="init", key=ascii(prefix))


def _check_client(client: Any) -> None:
    """A given redis-py client sends text as UTF-8 and answers bytes; else ValueError, before any I/O.

    The scripts cut keys by their UTF-8 bytes and every answer is read as
    bytes: another encoding, or ``decode_responses=True``, would give calls
    different answers about one key.
    """
    get_encoder = getattr(client, "get_encoder", None)
    if get_encoder is None:
        return  # not a redis-py client: taken as it is
    encoder = get_encoder()
    if getattr(encoder, "decode_responses", False):
        raise ValueError(
            "the client= of a Redis backend answers bytes: build it without decode_responses=True"
        )
    encoding = getattr(encoder, "encoding", "utf-8")
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = ""
    if name != "utf-8":
        raise ValueError(f"the client= of a Redis backend encodes text as UTF-8, not {_shown(encoding)}")


def _shown(text: object) -> str:
    return ascii(str(text))[1:-1][:40]


def _check_keep(keep: object, timeout: float | None) -> float:
    """Seconds an expired value stays for :meth:`RedisBackend.peek`: the timeout, unless given."""
    if keep is MISSING:
        return timeout or 0.0
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep <= MAX_TIMEOUT:
        raise ValueError(f"keep_expired is seconds from 0 to {MAX_TIMEOUT:.0f} (100 years), not {keep!r}")
    return float(keep)


def _check_options(max_connections: object, socket_timeout: object, retries: object) -> None:
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ValueError(f"max_connections is an int >= 1, not {max_connections!r}")
    if (
        isinstance(socket_timeout, bool)
        or not isinstance(socket_timeout, (int, float))
        or not 0 < socket_timeout <= 3600
    ):
        raise ValueError(f"socket_timeout is seconds > 0, at most 3600, not {socket_timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise ValueError(f"retries is an int from 0 to 100, not {retries!r}")


class _Closed:
    """Stands in for the client of a closed backend: every use raises (translated to StoreError)."""

    def __init__(self, error: type[Exception]) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise self._error("closed")


def _rebuild(cls: type[RedisBackend[Any]], url: str, settings: dict[str, Any]) -> RedisBackend[Any]:
    return cls(url, **settings)
