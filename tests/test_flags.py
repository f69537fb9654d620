"""``if_absent`` is a flag on every store, its twin and its views: anything but True or False is a
TypeError naming it, before any I/O, and nothing changes (``"no"`` was taken as true)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends import BaseBackend, VolatileBackend


@pytest.mark.parametrize("bad", ["no", "", 1, 0, None, 1.0])
def test_an_if_absent_that_is_no_flag_is_a_type_error_and_writes_nothing(
    backend: BaseBackend[Any, Any], sample: Any, bad: Any
) -> None:
    backend.dump("k", sample(1))
    with pytest.raises(TypeError, match="if_absent is True or False"):
        backend.dump("k", sample(2), if_absent=bad)
    with pytest.raises(TypeError, match="if_absent is True or False"):
        backend.dump("new", sample(2), if_absent=bad)
    twin = backend.aio()
    with pytest.raises(TypeError, match="if_absent is True or False"):
        asyncio.run(twin.dump("new", sample(2), if_absent=bad))
    view = backend.namespace("ns/")
    with pytest.raises(TypeError, match="if_absent is True or False"):
        view.dump("new", sample(2), if_absent=bad)
    assert backend.load("k") == sample(1)
    assert "new" not in backend and "ns/new" not in backend
    assert backend.dump("k", sample(3), if_absent=False) is True
    assert backend.dump("k", sample(4), if_absent=True) is False
    assert backend.load("k") == sample(3)


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("a repr that fails")


def test_an_argument_whose_repr_raises_is_named_by_its_type() -> None:
    store = VolatileBackend()
    with pytest.raises(TypeError, match=r"if_absent is True or False, not a _NoRepr \(its repr failed\)"):
        store.dump("k", 1, if_absent=_NoRepr())
    assert "k" not in store
