"""The contract suite, for any store: a pytest class and the parity state machine.

Needs the ``testing`` extra (``pip install 'backends[testing]'``: pytest and
hypothesis). A store written against the extension API (README.rst,
"Writing a backend") is tested by subclassing :class:`ContractTests`::

    from backends.testing import JSON, ContractTests, StoreCase

    class TestSqliteStore(ContractTests):
        case = StoreCase("sqlite", lambda folder: SqliteJsonBackend(folder / "db.sqlite"),
                         family=JSON, on_disk=True, shared=True)

The project's own suite runs exactly this on every built-in backend.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
except ImportError as missing:  # pragma: no cover - exercised without the extra
    raise ImportError(f"backends.testing needs {missing.name}: pip install 'backends[testing]'") from missing

from .case import FAMILIES, JSON, OBJECTS, RAW, TEXT, Family, StoreCase
from .contract import ContractTests, Sample
from .parity import check_parity, parity_machine

__all__ = [
    "FAMILIES",
    "JSON",
    "OBJECTS",
    "RAW",
    "TEXT",
    "ContractTests",
    "Family",
    "Sample",
    "StoreCase",
    "check_parity",
    "parity_machine",
]
