"""The third-party store under the project's contract suite: backends.testing, nothing else."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from sqlite_store import SqliteJsonBackend, SqliteTextBackend

import backends
from backends.testing import JSON, TEXT, ContractTests, StoreCase


class TestSqliteJson(ContractTests):
    case = StoreCase(
        "sqlite-json", lambda folder: SqliteJsonBackend(folder / "kv.db"), JSON, on_disk=True, shared=True
    )


class TestSqliteText(ContractTests):
    case = StoreCase(
        "sqlite-text", lambda folder: SqliteTextBackend(folder / "kv.db"), TEXT, on_disk=True, shared=True
    )


def test_it_opens_from_its_own_url_scheme_and_joins_a_tier(tmp_path: Path) -> None:
    store = backends.open(f"sqlite://{tmp_path}/kv.db")
    assert isinstance(store, SqliteJsonBackend)
    tier = backends.open(f"cache://{tmp_path}/cache::sqlite://{tmp_path}/kv.db")
    tier["users/42"] = {"name": "Ada"}
    assert store["users/42"] == {"name": "Ada"} and tier.cache["users/42"] == {"name": "Ada"}
    assert pickle.loads(pickle.dumps(store))["users/42"] == {"name": "Ada"}


def test_a_closed_store_raises_a_store_error(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    store["k"] = 1
    store.close()
    with pytest.raises(backends.StoreError, match="closed"):
        store.load("k")
