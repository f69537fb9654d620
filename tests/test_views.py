"""Views (backends.views): every store through ``namespace()`` and ``readonly()``, and the attacks on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LONG

from backends.testing import StoreCase, check_parity
from backends.testing.views import namespaced, read_only

#: parity (examples, steps) of a view of a local store, and of a server's, in the default run
#: (the long run: the case's own share of examples, 40 steps)
LOCAL, SERVER = (3, 25), (1, 15)


@pytest.mark.parametrize("view", [namespaced, read_only], ids=["namespace", "readonly"])
def test_every_store_through_each_view_behaves_like_a_dict(
    view: object, case: StoreCase, tmp_path: Path
) -> None:
    """The parity machine on a view of each store: a namespace with foreign keys planted around it
    (checked untouched after every run), and a read-only view of a filled store (every write refused)."""
    viewed = view(case)  # type: ignore[operator]
    if LONG:
        check_parity(viewed, tmp_path)
    else:
        examples, steps = SERVER if case.remote else LOCAL
        check_parity(viewed, tmp_path, examples=examples, steps=steps)
