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

Schemes are registered by their stores (:func:`~backends.schemes.register_scheme`,
:mod:`backends.schemes`, re-exported here): this module knows none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

from .base import BaseBackend
from .schemes import (
    Opener,
    OptionError,
    as_bool,
    as_seconds_or_none,
    convert,
    local_path,
    opener_of,
    parse_query,
    register_scheme,
    scheme_of,
    schemes,
    unregister_scheme,
)

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

CHAIN: Final = "::"

#: a character no URL holds: URL parsers drop tab, CR and LF silently (``eu-we\nst`` would be ``eu-west``)
_CONTROL: Final = re.compile(r"[\x00-\x20\x7f]")


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
            raise ValueError(f"only a cache:// URL goes in front of '::' (got {scheme_of(cache_url)!r})")
        from .tier import TieredBackend

        tier_options = {name: options.pop(name) for name in list(options) if name in TIER_OPTIONS}
        cache_part, tier_query = _split_tier_options(cache_url)
        tier_options = {**tier_query, **tier_options}
        return TieredBackend(open_url(cache_part), open_url(origin_url, **options), **tier_options)
    _refuse_halfscheme_of(url)
    scheme = scheme_of(url)
    if scheme:
        _check_url_text(url)
    opener = opener_of(scheme)
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
    readonly = convert("readonly", found["readonly"], {"readonly": as_bool}) if "readonly" in found else False
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


def _refuse_halfscheme_of(url: str) -> None:
    """Refuse ``s3:bucket``, ``s3:/bucket``, ``memory:``: a scheme without ``//`` is no folder name."""
    head, sep, rest = url.partition(":")
    if sep and opener_of(head.lower()) is not None and head and not rest.startswith("//"):
        scheme = head.lower()
        slashes = "///" if scheme in ("file", "cache") else "//"
        suggestion = "memory://" if scheme == "memory" else f"{scheme}:{slashes}{rest.lstrip('/')}"
        raise ValueError(
            f"{url!r} is not a URL: the scheme needs '//' ({suggestion!r}); "
            f"for a folder of that name, write ./{url}"
        )


def _split_tier_options(url: str) -> tuple[str, dict[str, Any]]:
    """Take the tier's own parameters (lease, stale_while_revalidate) out of the cache URL."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    tier: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in TIER_OPTIONS:
            tier[name] = convert(name, value, TIER_OPTIONS)
        else:
            kept.append((name, value))
    base = url.split("?", 1)[0]  # not geturl(): it drops the "//" of an unknown scheme
    return (f"{base}?{urlencode(kept)}" if kept else base), tier
