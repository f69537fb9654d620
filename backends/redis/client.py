"""Building the connection pool of a Redis backend: URLs, passwords, timeouts, retries."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Collection
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from ..events import tell_retry
from .checks import check_client, check_options
from .packer import Packer

__all__ = [
    "REDIS_EXTRA",
    "Closed",
    "backend_client",
    "check_redis_url",
    "close_client",
    "import_redis",
    "make_async_client",
    "make_client",
]

REDIS_EXTRA = "Redis backends need redis-py: pip install 'backends[redis]'"
#: where a password goes instead of a URL
NO_PASSWORD = (
    "a password does not go in a Redis URL: pass password= to the backend, or set "
    "REDISCLI_AUTH in the environment"
)
#: a URL query parameter whose name has one of these holds a secret (password,
#: ssl_password, a token): refused, as a password is
SECRET_WORDS = ("pass", "secret", "token", "credential", "auth", "key_data")


def import_redis() -> Any:
    """Import redis-py, or raise ImportError naming the extra to install."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(REDIS_EXTRA) from exc
    return redis


def check_redis_url(url: str, extra: Collection[str] | None = ()) -> str:
    """Return ``url`` if it is a Redis server URL redis-py takes, with no secret; else ValueError.

    Checked before any I/O, never echoing a value: the scheme, no control
    character or space, the port (1-65535), the database (a number in the
    path), every query parameter a name redis-py knows (or one of ``extra``;
    None: the caller checks the names, as ``backends.open`` does with its
    own options) with a valid value, and no password
    or other secret anywhere (README.rst, "Redis backends").
    """
    if not isinstance(url, str):
        raise ValueError("a Redis URL is a str: redis://host:port/db, rediss://..., unix:///path")
    if not url.isascii() or any(ord(c) <= 0x20 or c == "\x7f" for c in url):
        raise ValueError(
            "a Redis URL is printable ASCII, without spaces (punycode for a host name, %XX for the rest)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    if parts.password is not None:
        raise ValueError(NO_PASSWORD)
    _check_parameters([name for name, _ in parse_qsl(parts.query, keep_blank_values=True)], extra)
    if parts.scheme != "unix":
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0 or (port is None and parts.netloc.endswith(":")):
            raise ValueError("the Redis URL's port is a number from 1 to 65535")
        if parts.path not in ("", "/") and not parts.path[1:].isdigit():
            raise ValueError("the Redis URL's path is its database number: redis://host:6379/0")
    _check_values(url)
    return url


def _check_parameters(names: list[str], extra: Collection[str] | None) -> None:
    """No secret among the query parameters, and each one redis-py (or ``extra``) takes."""
    for name in names:
        if any(word in name.lower() for word in SECRET_WORDS):
            # redis-py passes every query parameter to the connection: a TLS
            # key's ssl_password would sit in the URL, shown by repr and events.
            if name.lower() == "password":
                raise ValueError(NO_PASSWORD)
            raise ValueError(
                f"a secret does not go in a Redis URL ({_shown(name)}=...): build the "
                "redis-py client with it yourself and pass client= to the backend"
            )
    if extra is None:
        return
    for name in names:
        if name not in extra and name not in TEXT_PARAMETERS and name not in _parsed():
            raise ValueError(
                f"the Redis URL's option {_shown(name)!r} is not one redis-py takes "
                "(the backend's own options, prefix= and the rest, are its arguments)"
            )


#: redis-py's URL parameters that it passes on as text (it parses the others itself)
TEXT_PARAMETERS: Final = frozenset(
    {
        "client_name",
        "lib_name",
        "lib_version",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_ca_data",
        "ssl_ciphers",
    }
)
#: (low, high) of the parameters redis-py parses as numbers, where it does not check them
_RANGES: Final = {
    "db": (0, 1 << 31),
    "socket_timeout": (1e-3, 3600),
    "socket_connect_timeout": (1e-3, 3600),
    "timeout": (1e-3, 3600),
    "health_check_interval": (0, 86_400),
    "max_connections": (1, 1 << 20),
    "socket_read_size": (1, 1 << 30),
    "protocol": (2, 3),
}


def _parsed() -> Collection[str]:
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    return URL_QUERY_ARGUMENT_PARSERS.keys()


def _shown(name: str) -> str:
    return ascii(name)[1:-1][:40]


def _check_values(url: str) -> None:
    from redis.connection import parse_url

    try:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]  # "Invalid value for 'db' in connection URL.": the name, no value
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a Redis URL redis-py refuses: {exc}") from None
    for name, (low, high) in _RANGES.items():
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not low <= value <= high):
            raise ValueError(f"{name} in a Redis URL is from {low} to {high}")


def make_client(
    url: str,
    *,
    password: str | None,
    username: str | None,
    max_connections: int,
    timeout: float,
    retries: int,
    source: Callable[[], Any] = lambda: None,
) -> Any:
    """A redis-py client of ``url`` on its own blocking connection pool; nothing is sent yet.

    The URL is checked first (no password in it). Connection errors and
    timeouts are retried ``retries`` times with exponential backoff; a
    server's answer (even an error) never is. Each retry is a ``retried``
    event of ``source()`` (a weak reference to the backend).
    """
    check_redis_url(url)
    redis = import_redis()
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    retry = _telling_retry(Retry)(ExponentialBackoff(cap=1.0, base=0.01), retries)
    retry.source = source
    settings = _pool_settings(password, username, max_connections, timeout)
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:  # hiredis packs in C: redis-py's own choice then
        from redis._parsers.encoders import Encoder

        settings["command_packer"] = Packer(Encoder("utf-8", "strict", False).encode)  # type: ignore[no-untyped-call]
    pool = redis.BlockingConnectionPool.from_url(url, retry=retry, **settings)
    return redis.Redis(connection_pool=pool)


def backend_client(
    url: str,
    client: Any,
    *,
    password: str | None,
    username: str | None,
    max_connections: int,
    socket_timeout: float,
    retries: int,
    source: Callable[[], Any],
) -> tuple[Any, bool, int]:
    """A backend's client: the given one (checked: UTF-8, bytes), or one made from ``url``
    (everything checked first, nothing sent); whether the backend made it; and how long (ms) a
    token key keeps a call's answer: as long as redis-py may repeat the call (every try waits at
    most ``socket_timeout``, and the backoff 1 s), 60 s for a given client."""
    if client is not None:
        check_client(client)
        return client, False, 60_000
    check_redis_url(url)
    check_options(max_connections, socket_timeout, retries)
    made = make_client(
        url,
        password=password,
        username=username,
        max_connections=max_connections,
        timeout=socket_timeout,
        retries=retries,
        source=source,
    )
    return made, True, int((retries + 1) * (socket_timeout + 1) * 1000)


def close_client(client: Any) -> None:
    """Close a client a backend made: its idle connections at once. One that a call in another
    thread is using is left to that call (its answer arrives, its next request is refused) and
    closes when the pool is let go: closing it under the call gave a raw AttributeError from
    redis-py's reader, not the store's StoreError. A call waiting for a connection gets one
    once the call before it gives it back, and is refused by the pool's packer before it sends
    (with hiredis, redis-py's own packer: such a call is sent). (redis-py 5's pools close every
    connection.)"""
    pool = client.connection_pool
    packer = pool.connection_kwargs.get("command_packer")
    if isinstance(packer, Packer):  # a call still waiting for a connection sends nothing
        packer.close(import_redis().RedisError)
    client.close()
    if "inuse_connections" in inspect.signature(pool.disconnect).parameters:
        pool.disconnect(inuse_connections=False)
    else:  # pragma: no cover - redis-py 5
        pool.disconnect()


def _pool_settings(
    password: str | None, username: str | None, max_connections: int, timeout: float
) -> dict[str, Any]:
    """What the blocking and the asyncio pools are made with, alike."""
    redis = import_redis()
    return {
        "password": password if password is not None else os.environ.get("REDISCLI_AUTH") or None,
        "username": username,
        "max_connections": max_connections,
        "timeout": timeout,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # The asyncio errors are these same classes.
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        "health_check_interval": 30,
    }


def _telling_retry(base: type) -> type:
    """redis-py's Retry, telling each retry as an event of its ``source``."""
    call = base.call_with_retry  # type: ignore[attr-defined]

    class TellingRetry(base):  # type: ignore[misc]
        source: Callable[[], Any] = staticmethod(lambda: None)

        def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
            failures = 0

            def failed(error: Exception, *rest: Any) -> Any:
                nonlocal failures
                failures += 1
                if failures <= self._retries:
                    tell_retry(self.source(), failures + 1, type(error).__name__)
                return fail(error, *rest)

            # redis-py's own, called directly (no super()): every command passes here. Its
            # further arguments (is_retryable, with_failure_count: redis-py 6 and later) as given.
            return call(self, do, failed, *args, **kwargs)

    return TellingRetry


def make_async_client(
    url: str,
    *,
    password: str | None,
    username: str | None,
    max_connections: int,
    timeout: float,
    retries: int,
) -> Any:
    """A ``redis.asyncio`` client of ``url`` on its own blocking pool, set as :func:`make_client`'s.

    One per event loop: an asyncio connection belongs to the loop it was made in.
    """
    check_redis_url(url)
    settings = _pool_settings(password, username, max_connections, timeout)
    from redis import asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    retry = Retry(ExponentialBackoff(cap=1.0, base=0.01), retries)
    pool = aredis.BlockingConnectionPool.from_url(url, retry=retry, **settings)
    return aredis.Redis(connection_pool=pool)


class Closed:
    """Stands in for the client of a closed backend: every use raises (translated to StoreError)."""

    def __init__(self, error: type[Exception]) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise self._error("closed")
