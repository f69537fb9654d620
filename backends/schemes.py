"""URL schemes: the registry a store adds its scheme to, and the parsing every opener shares.

Schemes are registered by their stores (:func:`register_scheme`): the
parser knows none of them. A new store adds its scheme with one call and an
opener built on :func:`parse_query` and :func:`local_path`.
:func:`backends.open` (:mod:`backends.urls`) builds a backend from a URL with
the opener of its scheme, adding a tier or a view around it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import BaseBackend
from .errors import shown

__all__ = [
    "Opener",
    "OptionError",
    "as_bool",
    "as_seconds_or_none",
    "convert",
    "local_path",
    "opener_of",
    "parse_query",
    "register_scheme",
    "scheme_of",
    "schemes",
    "unregister_scheme",
]

FORMATS: Final = ("json", "text", "raw")
SECRETS: Final = frozenset(
    {
        "access_key",
        "secret_key",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "password",
        "token",
    }
)
#: the codec's parameters (README.rst, "URLs"); the key itself only ever comes from the environment
CODEC_PARAMETERS: Final = ("compress", "compress_level", "compress_threshold", "encrypt")
#: parameter names that would carry an encryption key: refused by name, the value never repeated
KEY_PARAMETERS: Final = frozenset(
    {
        "key",
        "keys",
        "encryption_key",
        "encryption_keys",
        "encrypt_key",
        "backends_key",
        "aes_key",
        "fernet_key",
        "cipher_key",
        "secret",
    }
)
NO_CREDENTIALS: Final = (
    "credentials do not go in a URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "in the environment, name a profile (?profile=name or AWS_PROFILE), or pass "
    "access_key=/secret_key= to backends.open()"
)


class OptionError(ValueError):
    """A query value a converter refused, in the converter's own words (which never repeat a secret)."""


#: builds a backend from a URL and the caller's keyword options (which it may consume)
Opener = Callable[[str, dict[str, Any]], BaseBackend[Any, Any]]

_OPENERS: dict[str, Opener] = {}


def register_scheme(scheme: str, opener: Opener) -> None:
    """Make ``backends.open("<scheme>://...")`` call ``opener(url, options)``.

    ``scheme`` is lower case letters, digits, ``+``, ``-`` or ``.``
    (``""``: a plain path). Registering a scheme again replaces its opener.
    The opener raises ValueError naming what is wrong with a URL.
    """
    if not isinstance(scheme, str) or (scheme and not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme)):
        raise ValueError(f"a URL scheme is lower case letters, digits, '+', '-' or '.', not {scheme!r}")
    _OPENERS[scheme] = opener


def unregister_scheme(scheme: str) -> None:
    """Forget a registered scheme; KeyError if it is not registered."""
    del _OPENERS[scheme]


def schemes() -> list[str]:
    """The registered URL schemes, sorted (a plain path is ``""``)."""
    return sorted(_OPENERS)


def as_seconds_or_none(text: str) -> float | None:
    """A query value as seconds; ``none`` or ``never`` as None."""
    return None if text.lower() in ("none", "never") else float(text)


def as_bool(text: str) -> bool:
    """A query value as a bool: 1/true/yes/on or 0/false/no/off."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {shown(text)}")


def opener_of(scheme: str) -> Opener | None:
    """The opener registered for ``scheme``, or None."""
    return _OPENERS.get(scheme)


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url``; ``""`` for a plain path."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep and "/" not in head else ""


def parse_query(
    url: str, allowed: dict[str, Callable[[str], Any]], options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Return the format and the backend's keyword arguments from ``url``'s query and ``options``.

    ``allowed`` maps each parameter the backend takes to a converter from
    text (``int``, :func:`as_bool`...). Refuses credentials, fragments,
    unknown parameters and formats with a ValueError that names them.
    """
    from .codecs.query import codec_of

    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(NO_CREDENTIALS)
    if parts.fragment:
        raise ValueError("a backend URL has no #fragment")
    found: dict[str, Any] = {}
    coding: dict[str, str] = {}
    fmt = "json"
    given: set[str] = set()
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        _refuse_secret(name)
        if name in given:  # which one was meant? (redis-py takes the first, a dict the last)
            raise ValueError(f"parameter {shown(name)} is given twice")
        given.add(name)
        if name == "format":
            fmt = value.lower()
        elif name in CODEC_PARAMETERS:
            coding[name] = value
        elif name not in allowed:
            raise ValueError(
                f"unknown parameter {shown(name)} for a {scheme_of(url) or 'file'} URL; known: format, "
                + ", ".join(sorted(allowed))
            )
        else:
            found[name] = convert(name, value, allowed)
    fmt = str(options.pop("format", fmt))
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not one of json, text, raw")
    if coding and (codec := codec_of(coding)) is not None:
        found["codec"] = codec  # an explicit codec= option still wins: options override the query
    return fmt, {**found, **options}


def _refuse_secret(name: str) -> None:
    """Refuse a parameter whose name says it holds a secret, never repeating its value."""
    if name.lower() in SECRETS:
        raise ValueError(NO_CREDENTIALS)
    if name.lower() in KEY_PARAMETERS:
        from .codecs import KEY_VARIABLE

        raise ValueError(
            f"an encryption key does not go in a URL (parameter {name[:40]!r}): set {KEY_VARIABLE} "
            "in the environment and add ?encrypt=1, or pass codec=Encrypt(keys) to backends.open()"
        )


def convert(name: str, value: str, allowed: dict[str, Callable[[str], Any]]) -> Any:
    """``value`` of parameter ``name`` by its converter in ``allowed``; ValueError naming both."""
    try:
        return allowed[name](value)
    except OptionError:
        raise
    except ValueError:
        kind = getattr(allowed[name], "__name__", "value").removeprefix("as_").replace("_or_none", " or none")
        raise ValueError(f"parameter {name}={shown(value)} is not a valid {kind}") from None


def local_path(url: str) -> str:
    """The absolute folder path of a ``scheme:///path`` URL or a plain path (``~`` expanded)."""
    if scheme_of(url) == "":
        path = url.split("?", 1)[0]
    else:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file URL names a local path (file:///abs/path), not host {parts.netloc!r}")
        path = unquote(parts.path)
    if not path:
        raise ValueError("the URL names no folder")
    return os.path.abspath(os.path.expanduser(path))
