"""``backends.open(url)``: a backend from a URL.

::

    memory://                                   VolatileBackend
    file:///var/data  or  /var/data, data/x     FileSystem{Json,Text,Raw}Backend
    s3://bucket/prefix                          S3{Json,Text,Raw}Backend
    cache:///var/cache/app?timeout=300          JsonCache / TextCache
    cache:///var/cache/app::s3://bucket/app     TieredBackend(cache, origin)

``?format=json|text|raw`` picks the value family (default json); the other
query parameters are the backend's options (``region``, ``endpoint_url``,
``timeout``, ...), converted to the option's type. In a tier, each part keeps
its own query. Credentials never go in a URL.

Schemes are registered by their stores (:func:`register_scheme`): the
parser knows none of them. A new store adds its scheme with one call and an
opener built on :func:`parse_query` and :func:`local_path`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit

from .base import BaseBackend

__all__ = [
    "Opener",
    "OptionError",
    "as_bool",
    "as_seconds_or_none",
    "local_path",
    "open_url",
    "parse_query",
    "register_scheme",
    "schemes",
    "unregister_scheme",
]

FORMATS: Final = ("json", "text", "raw")
CHAIN: Final = "::"
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


#: a character no URL holds: URL parsers drop tab, CR and LF silently (``eu-we\nst`` would be ``eu-west``)
_CONTROL: Final = re.compile(r"[\x00-\x20\x7f]")


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
    raise ValueError(f"not a boolean: {text!r}")


TIER_OPTIONS: Final[dict[str, Callable[[str], Any]]] = {"lease": float, "stale_while_revalidate": float}
#: the parameters every URL takes, for a view of its backend (:mod:`backends.views`)
VIEW_OPTIONS: Final = ("namespace", "readonly")


def open_url(url: str, **options: Any) -> BaseBackend[Any, Any]:
    """Build a backend from ``url``; ``options`` add to (or override) the query parameters.

    Raises ValueError naming what is wrong with a bad URL, and refuses one
    that carries credentials (without repeating them).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("a backend URL is a non-empty str, like s3://bucket/prefix or file:///path")
    if CHAIN in url:
        cache_url, origin_url = url.split(CHAIN, 1)
        if not cache_url.startswith("cache:"):
            raise ValueError(f"only a cache:// URL goes in front of '::' (got {_scheme(cache_url)!r})")
        from .tiered import TieredBackend

        tier_options = {name: options.pop(name) for name in list(options) if name in TIER_OPTIONS}
        cache_part, tier_query = _split_tier_options(cache_url)
        tier_options = {**tier_query, **tier_options}
        return TieredBackend(open_url(cache_part), open_url(origin_url, **options), **tier_options)
    _refuse_half_scheme(url)
    scheme = _scheme(url)
    if scheme:
        _check_url_text(url)
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}://" for name in schemes() if name)
        raise ValueError(f"unknown URL scheme {scheme!r}: use one of {known}")
    url, prefix, readonly = _take_views(url, options)
    backend = opener(url, options)
    if prefix is None and not readonly:
        return backend
    from .views import View, check_prefix

    if prefix is not None:
        try:
            prefix = check_prefix(prefix, backend, "namespace")
        except ValueError:
            backend.close()
            raise
    return View(backend, prefix or "", readonly)


def _take_views(url: str, options: dict[str, Any]) -> tuple[str, str | None, bool]:
    """Take ``namespace`` and ``readonly`` out of the URL's query (and ``options``), checked.

    The rest of the query is left byte for byte. ValueError (TypeError for a
    keyword of the wrong type) naming the parameter, before any I/O.
    """
    from .views import check_prefix

    head, sep, query = url.partition("?")
    query, hash_, fragment = query.partition("#")
    kept: list[str] = []
    found: dict[str, str] = {}
    for part in query.split("&") if sep else []:
        name = unquote_plus(part.partition("=")[0])
        if name not in VIEW_OPTIONS:
            kept.append(part)
            continue
        if name in found:
            raise ValueError(f"parameter {name} is given twice")
        try:
            found[name] = unquote_plus(part.partition("=")[2], errors="strict")
        except UnicodeDecodeError:
            raise ValueError(f"parameter {name} is not UTF-8 text once percent-decoded") from None
    prefix: str | None = found.get("namespace")
    readonly = (
        _convert("readonly", found["readonly"], {"readonly": as_bool}) if "readonly" in found else False
    )
    if "namespace" in options:
        prefix = options.pop("namespace")
    if "readonly" in options:
        readonly = options.pop("readonly")
        if not isinstance(readonly, bool):
            raise TypeError(f"readonly is True or False, not {type(readonly).__name__}")
    if prefix is not None:
        check_prefix(prefix, None, "namespace")  # the store's own limits once it is made
    if not found:
        return url, prefix, readonly
    rest = "&".join(kept)
    return head + (f"?{rest}" if rest else "") + hash_ + fragment, prefix, readonly


def _check_url_text(url: str) -> None:
    """Refuse a control character or a space in a URL, and a port that is no port; never repeating the URL."""
    if _CONTROL.search(url):
        raise ValueError(
            "a backend URL holds no space or control character (tab, CR, LF...): "
            "percent-encode it (%20, %0A) in a path or a value"
        )
    try:
        urlsplit(url).port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError("the URL's port is a whole number from 0 to 65535") from None


def _refuse_half_scheme(url: str) -> None:
    """Refuse ``s3:bucket``, ``s3:/bucket``, ``memory:``: a scheme without ``//`` is no folder name."""
    head, sep, rest = url.partition(":")
    if sep and head.lower() in _OPENERS and head and not rest.startswith("//"):
        scheme = head.lower()
        slashes = "///" if scheme in ("file", "cache") else "//"
        suggestion = "memory://" if scheme == "memory" else f"{scheme}:{slashes}{rest.lstrip('/')}"
        raise ValueError(
            f"{url!r} is not a URL: the scheme needs '//' ({suggestion!r}); "
            f"for a folder of that name, write ./{url}"
        )


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and "/" not in head else ""


def _split_tier_options(url: str) -> tuple[str, dict[str, Any]]:
    """Take the tier's own parameters (lease, stale_while_revalidate) out of the cache URL."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    tier: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in TIER_OPTIONS:
            tier[name] = _convert(name, value, TIER_OPTIONS)
        else:
            kept.append((name, value))
    base = url.split("?", 1)[0]  # not geturl(): it drops the "//" of an unknown scheme
    return (f"{base}?{urlencode(kept)}" if kept else base), tier


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
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        _refuse_secret(name)
        if name == "format":
            fmt = value.lower()
        elif name in CODEC_PARAMETERS:
            coding[name] = value
        elif name not in allowed:
            raise ValueError(
                f"unknown parameter {name!r} for a {_scheme(url) or 'file'} URL; known: format, "
                + ", ".join(sorted(allowed))
            )
        else:
            found[name] = _convert(name, value, allowed)
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


def _convert(name: str, value: str, allowed: dict[str, Callable[[str], Any]]) -> Any:
    try:
        return allowed[name](value)
    except OptionError:
        raise
    except ValueError:
        kind = getattr(allowed[name], "__name__", "value").removeprefix("as_").replace("_or_none", " or none")
        raise ValueError(f"parameter {name}={value!r} is not a valid {kind}") from None


def local_path(url: str) -> str:
    """The absolute folder path of a ``scheme:///path`` URL or a plain path (``~`` expanded)."""
    if _scheme(url) == "":
        path = url.split("?", 1)[0]
    else:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file URL names a local path (file:///abs/path), not host {parts.netloc!r}")
        path = unquote(parts.path)
    if not path:
        raise ValueError("the URL names no folder")
    return os.path.abspath(os.path.expanduser(path))
