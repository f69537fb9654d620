"""The key rule: exactly the valid keys are accepted, every other key is
rejected with InvalidKeyError before the store is touched."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendCase
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from backends.keys import all_valid
from backends.testing import strategies as s

HOOKS = ["_load", "_dump", "_delete", "_contains", "_iter_keys", "_load_many", "_dump_many", "_delete_many"]


@given(st.one_of(s.valid_keys, s.invalid_keys, st.text(max_size=8), s.long_keys))
def test_is_valid_key_matches_the_reference_rule(key: Any) -> None:
    assert backends.is_valid_key(key) == s.reference_valid(key)


@settings(max_examples=500)
@given(st.lists(st.one_of(s.valid_keys, s.invalid_keys, st.text(max_size=8), s.long_keys), max_size=6))
def test_the_bulk_check_matches_the_rule_for_every_key(keys: list[Any]) -> None:
    """Bulk calls check all their keys in one pass: it must agree with the rule key by key."""
    assert all_valid(keys) == all(s.reference_valid(key) for key in keys)
    assert all_valid(keys, 16) == all(s.reference_valid(key) and len(key.encode()) <= 16 for key in keys)


def spied(case: BackendCase, folder: Path) -> tuple[backends.BaseBackend[Any, Any], list[str]]:
    """A backend whose store hooks record every call."""
    backend = case.make(folder)
    calls: list[str] = []
    for hook in HOOKS:
        original = getattr(backend, hook)

        def spy(*args: Any, _name: str = hook, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(*args)

        setattr(backend, hook, spy)
    return backend, calls


def calls_with(backend: backends.BaseBackend[Any, Any], key: Any, value: Any) -> list[Any]:
    def setitem() -> None:
        backend[key] = value

    def delitem() -> None:
        del backend[key]

    return [
        lambda: backend.load(key),
        lambda: backend.dump(key, value),
        lambda: backend.dump(key, value, if_absent=True),
        lambda: backend.delete(key),
        lambda: key in backend,
        lambda: backend[key],
        setitem,
        delitem,
        lambda: backend.get(key),
        lambda: backend.pop(key, None),
        lambda: backend.setdefault(key, value),
        lambda: backend.load_many(["ok", key]),
        lambda: backend.dump_many([("ok", value), (key, value)]),
        lambda: backend.delete_many(["ok", key]),
        lambda: backend.update({"ok": value, key: value}),
    ]


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir())


@pytest.mark.parametrize("key", s.INVALID_KEYS, ids=repr)
def test_every_invalid_key_is_rejected_before_any_io(
    case: BackendCase, tmp_path: Path, key: Any, sample: Any
) -> None:
    folder = tmp_path / "store"
    backend, calls = spied(case, folder)
    before = files_in(folder) if case.on_disk else []
    for call in calls_with(backend, key, sample(1)):
        with pytest.raises(backends.InvalidKeyError):
            call()
    assert calls == []
    if case.on_disk:
        assert files_in(folder) == before == []


@settings(max_examples=200)
@given(key=s.invalid_keys)
def test_generated_invalid_keys_are_rejected_before_any_io(
    key: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("keys")
    backend = backends.FileSystemRawBackend(folder)
    for call in calls_with(backend, key, b"v"):
        with pytest.raises(backends.InvalidKeyError):
            call()
    assert os.listdir(folder) == []
