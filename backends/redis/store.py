"""RedisBackend: one Redis database (or a prefix of it) through one blocking connection pool.

Under the prefix ``P`` a value is the string ``P + key``; the backend's own
structures have names no key can have (``P + "\\x7findex"``, the deadlines,
ETag, lock and take keys: docs/howto/redis.rst, "Layout"). Every change is one
script (:mod:`.scripts`); a key is ours when it is in the index and its value
a string (docs/howto/redis-foreign.rst).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..cache import CountedLookups, Entry, check_entry_etag, check_timeout
from ..codecs.layers import CodecOption
from ..errors import BackendError, StoreError, check_flag
from ..events import observed
from ..info import Stat, utc
from ..locks import Lock, lock_name
from . import index, plans
from .checks import check_etag, check_keep, check_prefix, translate
from .client import Closed, backend_client, close_client, import_redis
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
        check_prefix(prefix)
        self.timeout = check_timeout(timeout)
        self.keep_expired = check_keep(keep_expired, self.timeout)
        client, self._owns_client, take_ms = backend_client(
            url,
            client,
            password=password,
            username=username,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            retries=retries,
            source=weakref.ref(self),
        )
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
        """A plain dump of one key: :func:`.plans.put_request`'s request, sent without a plan (the hot
        path: driving one cost a dump a fifth of its client CPU; a test compares it with the twin's)."""
        if ttl is None:
            ttl = self._ttl(MISSING)
        names = [self._index, self.prefix + key]
        args = ["" if self._injected_clock is None else self._now(), ttl, self._keep, data]
        try:  # run_script, inline
            self.client.execute_command("EVALSHA", SHAS["put"], 2, *names, *args)
        except self._noscript:
            run_script(self.client, self._noscript, "put", names, args)
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
        if check_flag(if_absent, "if_absent") and if_match is not None:
            raise TypeError("if_absent and if_match are exclusive")  # as on S3
        if if_match is not None:
            check_etag(if_match)
        elif not if_absent:
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

    def _iter_keys(self) -> Iterator[str]:
        return index.listed(self._run, self._at, "", "")

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        return index.listed(self._run, self._at, prefix, delimiter)

    def _members(self, low: bytes) -> list[bytes]:
        """A page of the index's members from ``low``, whatever they are (strays too)."""
        return self.client.zrangebylex(self._index, low, "+", start=0, num=PAGE)  # type: ignore[no-any-return]

    def strays(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """What the index holds that is no key (another program added it): ``(name, reason)``.

        Such a name is never listed, counted, read or removed by any call;
        the name is shown escaped (``\\xff``), on one line. ``backends ls``
        and ``backends cp`` report these (``cp`` then exits 1).
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix is a str, not {type(prefix).__name__}")
        with self._translating("strays", None):
            yield from index.strays(self._members, prefix)

    def _len(self) -> int:
        return self._drive(plans.length(self._at))

    def _clear(self) -> None:
        # Page by page past a cursor: the strays (no keys, another program's) stay behind.
        for keys in index.keys_in_pages(self._members):
            self._delete_many(keys)

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
        with self._translating("purge", None):
            return self._drive(plans.purge(self._at))

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
            found = self._run("read", self._at.entries(key), [key, "peek"])
        if found is None:
            return None
        data, due, fresh, tag = found
        deadline = None if int(due) < 0 else int(due) / 1000
        return self._entry(data, key, deadline, bool(fresh), tag.decode("utf-8") or None)

    def fill(self, key: str, value: V, *, etag: str | None = None) -> None:
        """Store a value loaded from an origin, with the default timeout and the origin's ``etag``."""
        ttl, tag = self._ttl(MISSING), check_entry_etag(etag, "fill", optional=True) or ""

        def write(key: str, data: bytes) -> bool:
            return self._write("set", [(key, data)], ttl, "", tag)

        self._write_value(key, value, "fill", write)

    def renew(self, key: str, etag: str) -> bool:
        """Restart the timeout of ``key`` if its entry still holds the value filled with ``etag``."""
        key, etag = self._check(key, "renew"), check_entry_etag(etag, "renew")
        with self._translating("renew", key):
            return bool(
                self._run("renew", self._at.entries(key), [key, etag, self._ttl(MISSING), self._keep])
            )

    # -- errors, identity, lifetime -------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        if self._closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        return translate(exc, self._errors)

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
        client, self.client = self.client, Closed(self._errors.ConnectionError)
        if self._owns_client:
            close_client(client)


def _rebuild(cls: type[RedisBackend[Any]], url: str, settings: dict[str, Any]) -> RedisBackend[Any]:
    return cls(url, **settings)
