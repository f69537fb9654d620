"""Any store case through a view: the parity suite on ``namespace(...)`` and ``readonly()`` of it.

::

    check_parity(namespaced(case), folder)   # the full parity, foreign keys planted around it
    check_parity(read_only(case), folder)    # the reads, on a filled store; every write refused
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Final

from ..base import MISSING, BaseBackend
from ..views import View
from . import strategies as s
from .case import StoreCase

__all__ = ["FOREIGN", "NAMESPACE", "SEEDED", "foreign_keys", "namespaced", "read_only"]

#: the namespace of :func:`namespaced`
NAMESPACE: Final = "tenant-a/"
#: keys right at the namespace's boundary, planted beside it: none may be seen or touched
FOREIGN: Final = ("tenant-a", "tenant-a2/x", "tenant-b/x", "tenant-", "tenant-a.x/y", "tenant-a~/k", "z")
#: keys of the filled store of :func:`read_only` (none is the folder of another: a tree holds them all)
SEEDED: Final = ("a/b", "b", "\u00e9", "users/42", "A")


def foreign_keys(case: StoreCase, prefix: str = NAMESPACE) -> list[str]:
    """The keys planted beside ``prefix``: :data:`FOREIGN`, less the bare name on a tree
    (there a key ``tenant-a`` cannot sit next to a folder ``tenant-a/``)."""
    bare = prefix.rstrip("/")
    return [key for key in FOREIGN if case.holds(key) and not (case.tree and key == bare)]


def namespaced(case: StoreCase, prefix: str = NAMESPACE) -> StoreCase:
    """``case`` seen through ``namespace(prefix)``, with :func:`foreign_keys` planted in its base.

    After each run the planted keys must hold their values (``clear()``
    of the namespace among the steps), then they are removed and the base is closed.
    """
    planted = {key: case.family.sample(number) for number, key in enumerate(foreign_keys(case, prefix))}

    def make(folder: Path) -> BaseBackend[Any, Any]:
        base = case.make(folder)
        base.dump_many(planted)
        return base.namespace(prefix)

    def finish(view: BaseBackend[Any, Any]) -> None:
        assert isinstance(view, View)
        base = view.base
        try:
            kept = base.load_many(planted)
            assert kept.keys() == planted.keys(), (
                f"a key outside the namespace went: {planted.keys() - kept.keys()}"
            )
            for key, value in kept.items():
                assert s.same(value, case.normal(planted[key])), (
                    f"a key outside the namespace changed: {key!r}"
                )
            if case.remote:
                base.delete_many(planted)
        finally:
            base.close()

    return dataclasses.replace(
        case, name=f"{case.name}.namespace", make=make, finish=finish, examples=max(1, case.examples // 4)
    )


def read_only(case: StoreCase) -> StoreCase:
    """``case`` filled with :data:`SEEDED` keys, seen through ``readonly()``: reads as the model,
    every write ReadOnlyError; the filled keys must be intact afterwards."""
    seeded = tuple((key, case.family.sample(number)) for number, key in enumerate(SEEDED) if case.holds(key))

    def make(folder: Path) -> BaseBackend[Any, Any]:
        base = case.make(folder)
        base.dump_many(seeded)
        return base.readonly()

    def finish(view: BaseBackend[Any, Any]) -> None:
        assert isinstance(view, View)
        base = view.base
        try:
            assert len(base) == len(seeded), "a read-only view changed its store"
            for key, value in seeded:
                assert s.same(base.load(key, MISSING), case.normal(value)), (
                    f"a read-only view changed {key!r}"
                )
            if case.remote:
                base.clear()
        finally:
            base.close()

    return dataclasses.replace(
        case,
        name=f"{case.name}.readonly",
        make=make,
        finish=finish,
        refuses_writes=True,
        initial=seeded,
        examples=max(1, case.examples // 6),
    )
