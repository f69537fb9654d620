"""The registry of backend cases: every contract and parity test runs on each.

A new backend joins every shared test by adding one ``BackendCase`` to
``CASES``. ``make`` builds a fresh, isolated backend in an empty folder it is
given (a backend that needs no folder ignores it); it is called once per
hypothesis example, because function fixtures do not reset between examples.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import strategies as s
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import backends

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=False)
settings.load_profile("default")


@dataclass(frozen=True)
class BackendCase:
    name: str
    make: Callable[[Path], backends.BaseBackend[Any, Any]]
    values: st.SearchStrategy[Any]
    invalid_values: st.SearchStrategy[Any]
    normal: Callable[[Any], Any] = field(default=lambda value: value)
    #: loaded values are the stored objects themselves (memory backends)
    identity: bool = False
    #: the backend keeps its data in the folder given to make()
    on_disk: bool = False

    def __str__(self) -> str:
        return self.name


CASES = [
    BackendCase(
        "volatile", lambda _: backends.VolatileBackend(), s.object_values, st.nothing(), identity=True
    ),
    BackendCase(
        "fs-json", backends.FileSystemJsonBackend, s.json_values, s.invalid_json, s.json_normal, on_disk=True
    ),
    BackendCase("fs-text", backends.FileSystemTextBackend, s.text_values, s.invalid_text, on_disk=True),
    BackendCase(
        "fs-raw", backends.FileSystemRawBackend, s.raw_values, s.invalid_raw, s.raw_normal, on_disk=True
    ),
]


class Folders:
    """Hands out fresh empty folders and removes them all at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def new(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.base))

    def drop(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Folders]:
    yield Folders(tmp_path)


@pytest.fixture(params=CASES, ids=str)
def case(request: pytest.FixtureRequest) -> BackendCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def backend(case: BackendCase, tmp_path: Path) -> Iterator[backends.BaseBackend[Any, Any]]:
    store = case.make(tmp_path / "store")
    yield store
    store.close()


@pytest.fixture
def sample(case: BackendCase) -> Callable[[int], Any]:
    """A valid value of the case's family, distinct for each seed."""

    def make(seed: int) -> Any:
        if case.name.endswith("raw"):
            return f"value {seed}".encode()
        if case.name.endswith("text"):
            return f"value {seed}\r\n"
        return {"seed": seed, "list": [1, 2.5, None, "é"]}

    return make
