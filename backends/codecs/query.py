"""The codec a URL asks for: ``?compress=zstd|gzip&compress_threshold=N&compress_level=N&encrypt=1``.

The keys of ``encrypt=1`` come from the environment (``BACKENDS_KEY``),
never from the URL; :func:`backends.urls.parse_query` refuses a parameter
named like a key before this is reached.
"""

from __future__ import annotations

import re
from typing import Any

from .compress import Gzip, Zstd
from .encrypt import KEY_VARIABLE, Encrypt
from .layers import Layer, Layers

__all__ = ["codec_of"]

_WHOLE = re.compile(r"-?[0-9]{1,15}")


def codec_of(query: dict[str, str]) -> Layer | Layers | None:
    """The layers of a URL's codec parameters, or None; ValueError naming a bad parameter.

    The value of ``encrypt`` is never repeated (a key pasted there stays
    out of the message).
    """
    layers = [layer for layer in (_compressor(query), _encryptor(query)) if layer is not None]
    if not layers:
        return None
    if len(layers) == 1:
        return layers[0]
    return Layers(tuple(layers))


def _compressor(query: dict[str, str]) -> Layer | None:
    method = query.get("compress", "none").lower()
    if method not in ("zstd", "gzip", "none", ""):
        raise ValueError(f"parameter compress={method[:40]!r} is not zstd, gzip or none")
    tuning = {name: query[name] for name in ("compress_threshold", "compress_level") if name in query}
    if method in ("none", ""):
        if tuning:
            raise ValueError(f"parameter {next(iter(tuning))} needs compress=zstd or compress=gzip")
        return None
    options: dict[str, Any] = {}
    for name, text in tuning.items():
        if not _WHOLE.fullmatch(text):
            raise ValueError(f"parameter {name}={text[:40]!r} is not a whole number")
        options[name.removeprefix("compress_")] = int(text)
    try:
        return (Zstd if method == "zstd" else Gzip)(**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter compress={method}: {exc}") from None


def _encryptor(query: dict[str, str]) -> Layer | None:
    if "encrypt" not in query:
        return None
    wanted = query["encrypt"].lower()
    if wanted not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(
            f"parameter encrypt is 1 or 0, nothing else: the keys come from {KEY_VARIABLE} "
            "in the environment, never from the URL"
        )
    return Encrypt.from_environment() if wanted in ("1", "true", "yes", "on") else None
