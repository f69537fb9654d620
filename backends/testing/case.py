"""What the contract suite needs to know about a store: how to make one, and its value family."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ..base import BaseBackend
from . import strategies as s

__all__ = ["FAMILIES", "JSON", "OBJECTS", "RAW", "TEXT", "Family", "StoreCase"]


@dataclass(frozen=True)
class Family:
    """A value family as the tests see it: values it stores, values it refuses, and what loads back."""

    name: str
    #: values the family stores exactly
    values: st.SearchStrategy[Any]
    #: values it refuses with SerializationError
    invalid_values: st.SearchStrategy[Any]
    #: the value a stored one loads back as (a JSON tuple loads as a list)
    normal: Callable[[Any], Any] = lambda value: value
    #: a valid value for each seed, for a family of its own (typed models); None: by name
    sampler: Callable[[int], Any] | None = None

    def sample(self, seed: int) -> Any:
        """A valid value, distinct for each seed (for example-based tests)."""
        if self.sampler is not None:
            return self.sampler(seed)
        if self.name == "raw":
            return f"value {seed}".encode()
        if self.name == "text":
            return f"value {seed}\r\n"
        return {"seed": seed, "list": [1, 2.5, None, "é"]}


OBJECTS = Family("object", s.object_values, st.nothing())
JSON = Family("json", s.json_values, s.invalid_json, s.json_normal)
TEXT = Family("text", s.text_values, s.invalid_text)
RAW = Family("raw", s.raw_values, s.invalid_raw, s.raw_normal)
#: the families by codec name
FAMILIES = {family.name: family for family in (OBJECTS, JSON, TEXT, RAW)}


@dataclass(frozen=True)
class StoreCase:
    """One store under test: ``make(folder)`` builds a fresh, empty backend.

    ``make`` is called once per hypothesis example with a new empty folder;
    a backend that needs no folder ignores it, a remote one uses it to pick
    a fresh prefix. The flags say what the store promises beyond the
    contract, so that the suite asserts it.
    """

    name: str
    make: Callable[[Path], BaseBackend[Any, Any]]
    family: Family = OBJECTS
    #: loads give back the stored object itself (memory stores)
    identity: bool = False
    #: the data lives in the folder given to ``make`` (a pickled copy sees it)
    on_disk: bool = False
    #: two backends made on the same folder see the same data (and are equal)
    shared: bool = False
    #: a server: cleared after each test; a pickled copy sees the same data
    remote: bool = False
    #: the backend pickles (S3 backends refuse: they hold a client, one per process)
    pickles: bool = True
    #: hypothesis examples of the parity machine
    examples: int = 60
    #: a known quirk: the longest key segment the server stores (SeaweedFS: 255 bytes)
    segment_limit: int | None = None
    #: an ordinary folder tree (the plain layout): a key and a folder of the same
    #: name cannot coexist (KeyConflictError), and a segment of over 255 bytes
    #: or starting with "~" cannot be a file name (InvalidKeyError)
    tree: bool = False
    #: every write raises ReadOnlyError (a read-only view): the suite checks the reads
    refuses_writes: bool = False
    #: the ``(key, value)`` pairs a fresh backend already holds (a read-only view of a filled store)
    initial: tuple[tuple[str, Any], ...] = ()
    #: called with the backend after each run, before it is closed: checks what a view must
    #: leave alone, and closes what the view does not (its base)
    finish: Callable[[BaseBackend[Any, Any]], None] | None = None

    @property
    def values(self) -> st.SearchStrategy[Any]:
        return self.family.values

    @property
    def invalid_values(self) -> st.SearchStrategy[Any]:
        return self.family.invalid_values

    def normal(self, value: Any) -> Any:
        return self.family.normal(value)

    def represents(self, key: str) -> bool:
        """Whether the server stores this valid key under its own name.

        With a ``segment_limit`` (SeaweedFS), a longer segment is refused
        and a backslash turned into a slash (README.rst, "S3-compatible stores").
        """
        if self.segment_limit is None:
            return True
        segments_fit = all(len(part.encode()) <= self.segment_limit for part in key.split("/"))
        return segments_fit and "\\" not in key

    def holds(self, key: str) -> bool:
        """Whether this store can hold the valid ``key`` (a tree: every segment is a file name)."""
        return not self.tree or all(
            not part.startswith("~") and len(part.encode()) <= 255 for part in key.split("/")
        )

    def conflicts(self, key: str, present: Iterable[str]) -> bool:
        """Whether writing ``key`` next to ``present`` keys is a KeyConflictError (a tree: "a" and "a/b")."""
        return self.tree and any(
            other != key and (other.startswith(key + "/") or key.startswith(other + "/")) for other in present
        )

    def creates(self, key: str, present: Iterable[str]) -> bool:
        """Whether ``dump(key, v, if_absent=True)`` can create ``key`` next to ``present``.

        SeaweedFS answers 412 to a conditional PUT of a name that is also a
        folder ("a" while "a/b" exists, or once existed: it keeps the empty
        folder), though a GET says the key is absent.
        """
        return self.segment_limit is None or not any(k.startswith(key + "/") for k in present)

    def writes_together(self, keys: Iterable[str]) -> bool:
        """Whether these keys can be written concurrently (``dump_many``).

        SeaweedFS loses one of "a" and "a/b" about once in fifty times when
        both are created at the same moment, though both PUTs succeed.
        """
        chosen = set(keys)
        return self.segment_limit is None or not any(
            other.startswith(key + "/") for key in chosen for other in chosen
        )

    @contextmanager
    def opened(self, folder: Path) -> Iterator[BaseBackend[Any, Any]]:
        """A fresh backend in ``folder``; afterwards a remote one is cleared, and every one closed."""
        store = self.make(folder)
        try:
            yield store
        finally:
            if self.remote and not self.refuses_writes:
                store.clear()  # a shared server bucket must not grow from test to test
            if self.finish is not None:
                self.finish(store)
            store.close()

    def __str__(self) -> str:
        return self.name
