"""The calls over many keys of every backend: ``load_many``, ``dump_many``, ``delete_many``,
``clear`` and ``list``.

Each checks every key (and encodes every value) before any I/O, then makes
one call of the store's hooks (``_load_many``, ``_dump_many``,
``_delete_many``, ``_clear``, ``_list``: :class:`~backends.hooks.StoreHooks`),
its native errors translated once. :class:`~backends.base.BaseBackend`, the
whole public API, is built on :class:`BulkCalls`; they need nothing of it
but the helpers of :class:`~backends.core.BackendCore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from .core import BackendCore
from .events import HUB, observed

__all__ = ["BulkCalls"]

V = TypeVar("V")
S = TypeVar("S")


class BulkCalls(BackendCore[V, S]):
    """The calls over many keys (and the listing of a folder), on the store hooks."""

    @observed("load_many", keyed=False)
    def load_many(self, keys: Iterable[str]) -> dict[str, V]:
        """Return ``{key: value}`` for the given keys that are present.

        Absent keys are left out, so a stored ``None`` stays distinguishable.
        Every key is validated before any I/O.
        """
        wanted = self._check_all(keys, "load_many")
        with self._translating("load_many", None):
            found = self._load_many(wanted)
        return {key: self._decode(data, key, "load_many") for key, data in found.items()}

    @observed("dump_many", keyed=False)
    def dump_many(self, items: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Store every ``(key, value)``.

        Every key is validated and every value encoded before any I/O, so an
        invalid key or value writes nothing. Each value is written atomically;
        the batch as a whole is not a transaction.
        """
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded: dict[str, S] = {}
        for raw_key, value in pairs:
            key = self._check(raw_key, "dump_many")
            encoded[key] = self._encode(value, key, "dump_many")
        with self._translating("dump_many", None):
            self._dump_many(list(encoded.items()))

    @observed("delete_many", keyed=False)
    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete the given keys; return how many existed."""
        wanted = self._check_all(keys, "delete_many")
        with self._translating("delete_many", None):
            return self._delete_many(wanted)

    @observed("clear", keyed=False)
    def clear(self) -> None:
        """Remove every key this backend owns, and nothing else."""
        # MutableMapping.clear() would popitem() one key at a time, loading
        # each value on the way.
        with self._translating("clear", None):
            self._clear()

    # -- folders (last: `list` shadows the builtin in the class body) -------------

    @observed("list")
    def list(self, prefix: str = "", delimiter: str | None = "/") -> Iterator[str]:
        """Yield the keys and sub-folders directly below ``prefix``, streaming, sorted.

        A sub-folder is yielded once, with a trailing ``delimiter``
        (``"photos/2024/"``); a key never ends with ``/``, so the two cannot be
        confused. ``prefix`` is any string (``"photos/"``, ``"pho"``).
        ``delimiter=None`` (or ``""``) lists every key below ``prefix``, flat,
        as boto3's ``list_objects_v2`` without a Delimiter. Entries come in
        code point order (UTF-8 byte order, as S3 lists), on every backend.
        """
        if delimiter is None:
            delimiter = ""
        if not isinstance(prefix, str) or not isinstance(delimiter, str):
            raise TypeError("prefix is a str, delimiter a str or None")
        with self._translating("list", prefix):
            yield from self._list(prefix, delimiter)


HUB.register(BulkCalls)  # its @observed calls are observed while anyone subscribes
