"""What a Redis backend refuses before any I/O (its prefix, a given client, keep_expired, the pool's
options), and how redis-py's errors become the store's: one class and cause each, on one line."""

from __future__ import annotations

import codecs
import re
from typing import Any, Final

from ..base import MISSING
from ..cache import MAX_TIMEOUT
from ..errors import (
    BackendError,
    InvalidKeyError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
    shown,
)

__all__ = ["check_client", "check_etag", "check_keep", "check_options", "check_prefix", "said", "translate"]

#: an ETag longer than this is none (``stat`` gives 40 hex digits; S3 takes up to 1,024)
MAX_ETAG: Final = 1024
#: printable ASCII, no space at either end: the rule S3's ``if_match`` keeps too
_ETAG = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def check_etag(value: object) -> None:
    """An ``if_match`` is an ETag: a str of printable ASCII (as on S3); else ValueError naming it.

    Checked before any I/O: a number, bytes or a line break was sent to the
    server and answered False (or a StoreError for a type redis-py refuses).
    """
    if not isinstance(value, str) or len(value) > MAX_ETAG or not _ETAG.fullmatch(value):
        raise ValueError(
            "if_match is an ETag (as stat(key).etag gives it): a str of printable ASCII without "
            f"a space at either end, at most {MAX_ETAG} characters, not {shown(value)}"
        )


def check_prefix(prefix: object) -> None:
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


def check_client(client: Any) -> None:
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


def check_keep(keep: object, timeout: float | None) -> float:
    """Seconds an expired value stays for :meth:`RedisBackend.peek`: the timeout, unless given."""
    if keep is MISSING:
        return timeout or 0.0
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep <= MAX_TIMEOUT:
        raise ValueError(f"keep_expired is seconds from 0 to {MAX_TIMEOUT:.0f} (100 years), not {keep!r}")
    return float(keep)


def check_options(max_connections: object, socket_timeout: object, retries: object) -> None:
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


def translate(exc: BaseException, errors: Any) -> tuple[type[BackendError], str]:
    """The store's error class and message for redis-py's ``exc`` (``errors``: ``redis.exceptions``)."""
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
            return cls, message.format(name=type(exc).__name__, said=said(exc))
    return StoreError, f"{type(exc).__name__}: {said(exc)}"


def said(exc: BaseException) -> str:
    """redis-py's own words (host and port, errno; never a password), on one printable line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)[:200]
