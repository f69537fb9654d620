"""RedisBackend: one Redis database (or a prefix of it) through one blocking connection pool.

Layout under the prefix ``P`` (README.rst, "Redis backends"): a value is the
string ``P + key``, readable with ``redis-cli GET``; the backend's own
structures have names no key can have (the DEL character, as for S3):

- ``P + "\\x7findex"``: a sorted set of every key (score 0), so listings are
  sorted as on S3 (by UTF-8 bytes), paged with ``ZRANGEBYLEX`` in flat
  client memory, and ``len`` is one ``ZCARD``;
- ``P + "\\x7flock/" + sha256``: lock leases (:mod:`.locks`).

Every change of a value and of the index happens in one server-side script,
so the two never disagree; keys written by other tools under the prefix are
not in the index, so they are never listed, counted or cleared. Reads are
plain commands: ``load`` is one ``GET``, ``in`` one ``EXISTS``,
``load_many`` one ``MGET`` per 1000 keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, TypeVar

from ..base import MISSING, BaseBackend, Missing
from ..errors import BackendError, PermissionDeniedError, StoreError, StoreUnavailableError
from ..info import Stat
from ..keys import MAX_KEY_BYTES
from ..locks import Lock, lock_name
from .client import check_redis_url, import_redis, make_pool
from .locks import RedisLock

__all__ = ["INDEX", "LOCKS", "PAGE", "RedisBackend"]

V = TypeVar("V")

INDEX: Final = "\x7findex"
LOCKS: Final = "\x7flock/"
#: keys per MGET, per write script and per listing page
PAGE: Final = 1000

# KEYS: index, then one value key per pair; ARGV: mode, then key, data per pair.
# mode "set": every pair; "nx": only if absent (one pair); "match": only if the
# value's SHA-1 is ARGV[4] (one pair). Returns how many were written.
_WRITE = """
local mode = ARGV[1]
if mode == 'nx' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if mode == 'match' then
  local old = redis.call('GET', KEYS[2])
  if not old or redis.sha1hex(old) ~= ARGV[4] then return 0 end
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1])
  redis.call('ZADD', KEYS[1], 0, ARGV[2 * i - 2])
end
return #KEYS - 1
"""
# KEYS: index, value keys; ARGV: the keys. Returns how many existed.
_DELETE = """
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[1], ARGV[i - 1])
end
return n
"""
# KEYS: index, value key; ARGV: key. The value, taken atomically, or nil.
_POP = """
local data = redis.call('GETDEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return data
"""
# KEYS: value key. {size, sha1} or nil.
_STAT = """
local data = redis.call('GET', KEYS[1])
if not data then return nil end
return {string.len(data), redis.sha1hex(data)}
"""


class RedisBackend(BaseBackend[V, bytes]):
    """A Redis database, or one ``prefix`` of it; Valkey works the same.

    Built from a URL (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path/redis.sock``) or an existing redis-py ``client``.
    Constructing sends nothing. A password never goes in the URL: pass
    ``password=`` (and ``username=`` for an ACL user), or set
    ``REDISCLI_AUTH``; it never appears in a repr, message or log line.
    ``max_connections`` sizes the blocking pool (callers wait ``timeout``
    seconds for a connection), ``timeout`` bounds every socket operation,
    and connection errors and timeouts are retried ``retries`` times, never
    an answer of the server.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        client: Any = None,
        password: str | None = None,
        username: str | None = None,
        max_connections: int = 16,
        timeout: float = 10.0,
        retries: int = 3,
    ) -> None:
        self._check_codec()
        redis = import_redis()
        if client is None:
            check_redis_url(url)
            if (
                isinstance(max_connections, bool)
                or not isinstance(max_connections, int)
                or max_connections < 1
            ):
                raise ValueError(f"max_connections is an int >= 1, not {max_connections!r}")
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
                raise ValueError(f"timeout is seconds > 0, at most 3600, not {timeout!r}")
            if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
                raise ValueError(f"retries is an int from 0 to 100, not {retries!r}")
            pool = make_pool(
                url,
                password=password,
                username=username,
                max_connections=max_connections,
                timeout=timeout,
                retries=retries,
            )
            client = redis.Redis(connection_pool=pool)
            self._owns_client = True
        else:
            self._owns_client = False
        if not isinstance(prefix, str) or any(ord(c) < 0x20 or c == "\x7f" for c in prefix):
            raise ValueError("prefix is a str without control characters")
        self.server_url = url if self._owns_client else None
        self.prefix = prefix if not prefix or prefix.endswith(":") else prefix + ":"
        self._max_key_bytes = MAX_KEY_BYTES
        self._settings = {
            "prefix": prefix,
            "password": password,
            "username": username,
            "max_connections": max_connections,
            "timeout": timeout,
            "retries": retries,
        }
        self.client = client
        self._index = self.prefix + INDEX
        self._native_errors = (redis.RedisError,)
        self._errors = redis.exceptions
        self._write_script = client.register_script(_WRITE)
        self._delete_script = client.register_script(_DELETE)
        self._pop_script = client.register_script(_POP)
        self._stat_script = client.register_script(_STAT)
        self._closed = False

    def _name(self, key: str) -> str:
        return self.prefix + key

    # -- the store hooks ----------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        data: bytes | None = self.client.get(self.prefix + key)
        return MISSING if data is None else data

    def _contains(self, key: str) -> bool:
        return bool(self.client.exists(self.prefix + key))

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._write("nx" if if_absent else "set", [(key, data)])

    def _write(self, mode: str, pairs: list[tuple[str, bytes]], etag: str = "") -> bool:
        args: list[Any] = [mode]
        for key, data in pairs:
            args += [key, data]
        if etag:
            args.append(etag)
        keys = [self._index, *(self.prefix + key for key, _ in pairs)]
        return int(self._write_script(client=self.client, keys=keys, args=args)) > 0

    def dump(self, key: str, value: V, *, if_absent: bool = False, if_match: str | None = None) -> bool:
        """Store ``value`` under ``key``; with ``if_match``, only if its ETag (``stat(key).etag``) is that.

        As for every backend, ``if_absent=True`` writes only a new key.
        Returns False when a condition fails; one round trip either way.
        """
        if if_match is None:
            return super().dump(key, value, if_absent=if_absent)
        if if_absent:
            raise ValueError("if_absent and if_match exclude each other")
        return self._write_value(
            key, value, "dump", lambda key, data: self._write("match", [(key, data)], if_match)
        )

    def _delete(self, key: str) -> bool:
        return self._delete_many([key]) > 0

    def _delete_many(self, keys: list[str]) -> int:
        existed = 0
        for start in range(0, len(keys), PAGE):
            batch = keys[start : start + PAGE]
            names = [self._index, *(self.prefix + key for key in batch)]
            existed += int(self._delete_script(client=self.client, keys=names, args=batch))
        return existed

    def _pop(self, key: str) -> bytes | Missing:
        data = self._pop_script(client=self.client, keys=[self._index, self.prefix + key], args=[key])
        return MISSING if data is None else bytes(data)

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        prefix = self.prefix
        for start in range(0, len(keys), PAGE):
            batch = keys[start : start + PAGE]
            values = self.client.mget([prefix + key for key in batch])
            found.update((key, data) for key, data in zip(batch, values, strict=True) if data is not None)
        return found

    def _dump_many(self, items: list[tuple[str, bytes]]) -> None:
        for start in range(0, len(items), PAGE):
            self._write("set", items[start : start + PAGE])

    def _iter_keys(self) -> Iterator[str]:
        return self._range("-", "+")

    def _range(self, low: str, high: str) -> Iterator[str]:
        """The indexed keys from ``low`` to ``high`` (ZRANGEBYLEX bounds), a page at a time."""
        while True:
            page = self.client.zrangebylex(self._index, low, high, start=0, num=PAGE)
            for raw in page:
                yield raw.decode("utf-8")
            if len(page) < PAGE:
                return
            low = b"(" + page[-1]

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # Sorted by UTF-8 bytes, as S3 lists. A folder is yielded once, and
        # the listing jumps past everything below it in one page request.
        low, high = ("[" + prefix, "(" + prefix[:-1] + chr(ord(prefix[-1]) + 1)) if prefix else ("-", "+")
        while True:
            page = self.client.zrangebylex(self._index, low, high, start=0, num=PAGE)
            jumped = False
            for raw in page:
                key = raw.decode("utf-8")
                cut = key.find(delimiter, len(prefix)) if delimiter else -1
                if cut < 0:
                    yield key
                    continue
                folder = key[: cut + len(delimiter)]
                yield folder
                # The first key past every key of the folder: its last
                # character moved one up (delimiter "/" -> "0").
                low = "[" + folder[:-1] + chr(ord(folder[-1]) + 1)
                jumped = True
                break
            if not jumped:
                if len(page) < PAGE:
                    return
                low = "(" + page[-1].decode("utf-8")

    def _len(self) -> int:
        return int(self.client.zcard(self._index))

    def _clear(self) -> None:
        while batch := self.client.zrangebylex(self._index, "-", "+", start=0, num=PAGE):
            self._delete_many([raw.decode("utf-8") for raw in batch])

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return RedisLock(
            key, timeout, ttl, self.client, self.prefix + LOCKS + lock_name(key), **self._lock_context()
        )

    # -- what else a value has --------------------------------------------------------

    def stat(self, key: str) -> Stat | None:
        """Size and ETag (the SHA-1 of the stored bytes, what ``if_match`` takes); one round trip."""
        key = self._check(key, "stat")
        with self._translating("stat", key):
            found = self._stat_script(client=self.client, keys=[self.prefix + key])
        if found is None:
            return None
        return Stat(
            key=key, size=int(found[0]), etag=found[1].decode("ascii"), content_type=self.codec.content_type
        )

    # -- errors, identity, lifetime -------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        errors = self._errors
        if self._closed:
            return StoreError, "the backend is closed (close() was called); make a new one"
        if isinstance(exc, (errors.AuthenticationError, errors.AuthorizationError, errors.NoPermissionError)):
            return PermissionDeniedError, f"Redis refused access ({type(exc).__name__})"
        if isinstance(exc, (errors.ConnectionError, errors.TimeoutError, errors.BusyLoadingError)):
            return (
                StoreUnavailableError,
                f"Redis could not be reached or answered too late ({type(exc).__name__})",
            )
        if isinstance(exc, errors.ResponseError):
            return StoreError, f"Redis answered: {exc}"
        return StoreError, f"{type(exc).__name__}: {exc}"

    def _describe(self) -> str:
        parts = [repr(self.server_url) if self.server_url else "client=..."]
        if self.prefix:
            parts.append(f"prefix={self.prefix!r}")
        return ", ".join(parts)

    def _identity(self) -> tuple[object, ...]:
        where = self.server_url or id(self.client)
        return (where, self.prefix, type(self.codec))

    def __reduce__(self) -> tuple[Any, ...]:
        # A connection pool cannot cross processes: a copy builds its own.
        if not self._owns_client:
            raise TypeError(f"{self!r} was given a client: build one per process, or pass a URL")
        return (_rebuild, (type(self), self.server_url, self._settings))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the pool's connections (if the backend made it); every later call raises StoreError."""
        self._closed = True
        client, self.client = self.client, _Closed(self._errors.ConnectionError)
        if self._owns_client:
            client.close()
            client.connection_pool.disconnect()


class _Closed:
    """Stands in for the client of a closed backend: every use raises (translated to StoreError)."""

    def __init__(self, error: type[Exception]) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise self._error("closed")


def _rebuild(cls: type[RedisBackend[Any]], url: str, settings: dict[str, Any]) -> RedisBackend[Any]:
    return cls(url, **settings)
