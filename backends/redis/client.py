"""Building the connection pool of a Redis backend: URLs, passwords, timeouts, retries."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..events import tell_retry

__all__ = ["REDIS_EXTRA", "check_redis_url", "import_redis", "make_async_client", "make_client"]

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


def check_redis_url(url: str) -> str:
    """Return ``url`` if it is a Redis server URL without a password; else ValueError (never echoing it)."""
    if not isinstance(url, str):
        raise ValueError("a Redis URL is a str: redis://host:port/db, rediss://..., unix:///path")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    if parts.password is not None:
        raise ValueError(NO_PASSWORD)
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if any(word in name.lower() for word in SECRET_WORDS):
            # redis-py passes every query parameter to the connection: a TLS
            # key's ssl_password would sit in the URL, shown by repr and events.
            if name.lower() == "password":
                raise ValueError(NO_PASSWORD)
            raise ValueError(
                f"a secret does not go in a Redis URL ({ascii(name)[1:-1][:40]}=...): build the "
                "redis-py client with it yourself and pass client= to the backend"
            )
    return url


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
    pool = redis.BlockingConnectionPool.from_url(url, retry=retry, **settings)
    return redis.Redis(connection_pool=pool)


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

            return super().call_with_retry(do, failed, *args, **kwargs)

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
