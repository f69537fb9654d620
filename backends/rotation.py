"""Key rotation over a store: every value written again under its codec's first key.

A call over a store, not a codec's: it reads and writes any backend
through the public API (:class:`~backends.base.BaseBackend`), so it sits
with the tier and the views, above :mod:`backends.codecs.encrypt` whose
keys it rotates (the codecs import no store). Also importable as
``backends.codecs.reencrypt``, the path it had before: the package
``backends`` sets it there.
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import BaseBackend, Versioned

__all__ = ["reencrypt"]


def reencrypt(backend: BaseBackend[Any, Any]) -> int:
    """Write every value of ``backend`` again, so that all are encrypted with its codec's first key.

    Returns how many values were written. Each keeps its own expiry on a
    store with timeouts (a value kept forever stays so). Where ``dump``
    takes ``if_match`` (S3, Redis) each write is conditional on the ETag
    read: a value another writer replaced meanwhile
    is left as that writer stored it (already under the first key). Other
    stores write unconditionally: run it while nobody else writes, or
    accept that a concurrent write may be replaced by the value it read.
    A value that no key decrypts raises CorruptValueError and stops the run
    (nothing is lost: the values done so far are under the new key).
    """
    parameters = inspect.signature(backend.dump).parameters
    conditional = "if_match" in parameters
    expiring = "timeout" in parameters and callable(getattr(backend, "expires", None))
    written = 0
    for key in list(backend):
        loaded = backend.load_if_changed(key)
        if not isinstance(loaded, Versioned):
            continue  # deleted since it was listed
        options: dict[str, Any] = {}
        if expiring:
            # The value keeps its own deadline: the store's default timeout would
            # expire a value kept forever, or keep one that was about to go.
            left = _time_left(backend, key)
            if left is not None and left <= 0:
                continue  # expired (or deleted) since it was read
            options["timeout"] = left
        if conditional and loaded.etag is not None:
            options["if_match"] = loaded.etag
        written += bool(backend.dump(key, loaded.value, **options))
    return written


def _time_left(backend: Any, key: str) -> float | None:
    """Seconds until ``key`` of an expiring ``backend`` expires: None for never, 0 if gone."""
    try:
        deadline = backend.expires(key)
    except KeyError:
        return 0.0
    return None if deadline is None else deadline.timestamp() - float(backend.clock())
