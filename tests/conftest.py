"""The registry of backend cases: every contract and parity test runs on each.

A new backend joins every shared test by adding one ``BackendCase`` to
``CASES``. ``make`` builds a fresh, isolated backend in an empty folder it is
given (a backend that needs no folder ignores it); it is called once per
hypothesis example, because function fixtures do not reset between examples.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import servers
import strategies as s
from clock import FrozenClock
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from servers import S3Target, s3_client

import backends

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
    # No "explain" phase: it re-runs a failure under sys.settrace, through
    # all of botocore, and turns a one-second report into many minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=False)
settings.load_profile("default")


Build = Callable[[Path, "S3Target | None"], backends.BaseBackend[Any, Any]]


@dataclass(frozen=True)
class BackendCase:
    name: str
    build: Build
    values: st.SearchStrategy[Any]
    invalid_values: st.SearchStrategy[Any]
    normal: Callable[[Any], Any] = field(default=lambda value: value)
    #: loaded values are the stored objects themselves (memory backends)
    identity: bool = False
    #: the backend keeps its data in the folder given to make()
    on_disk: bool = False
    #: two backends made on the same folder see the same data
    shared: bool = False
    #: the server fixture this case needs ("moto", "moto_server", "seaweedfs")
    server: str | None = None
    target: S3Target | None = None
    #: hypothesis examples for the parity machine (remote servers are slower)
    examples: int = 60
    #: the value family: "object", "json", "text" or "raw"
    family: str = "object"
    #: the longest segment the server stores (SeaweedFS: 255 bytes), if it has a limit
    segment_limit: int | None = None

    def make(self, folder: Path) -> backends.BaseBackend[Any, Any]:
        return self.build(folder, self.target)

    def represents(self, key: str) -> bool:
        """Whether the server stores this valid key under its own name.

        SeaweedFS departs from S3 twice: it refuses a segment over 255 bytes
        and turns a backslash into a slash (README.rst, "S3-compatible stores").
        """
        if self.segment_limit is None:
            return True
        segments_fit = all(len(part.encode()) <= self.segment_limit for part in key.split("/"))
        return segments_fit and "\\" not in key

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

    def __str__(self) -> str:
        return self.name


def _local(cls: Any) -> Build:
    return lambda folder, _: cls(folder)


def _s3(cls: Any) -> Build:
    # One prefix per folder: every hypothesis example gets an empty store.
    def build(folder: Path, target: S3Target | None) -> backends.BaseBackend[Any, Any]:
        assert target is not None
        return cls(target.bucket, prefix=f"t/{folder.parent.name}/{folder.name}", client=target.client)

    return build


FAMILIES = {
    "json": (backends.S3JsonBackend, s.json_values, s.invalid_json, s.json_normal),
    "text": (backends.S3TextBackend, s.text_values, s.invalid_text, lambda value: value),
    "raw": (backends.S3RawBackend, s.raw_values, s.invalid_raw, s.raw_normal),
}
SERVERS = {"moto": 20, "moto_server": 8, "seaweedfs": 10}

CASES = [
    BackendCase(
        "volatile", lambda *_: backends.VolatileBackend(), s.object_values, st.nothing(), identity=True
    ),
    BackendCase(
        "fs-json",
        _local(backends.FileSystemJsonBackend),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        on_disk=True,
        shared=True,
        family="json",
    ),
    BackendCase(
        "fs-text",
        _local(backends.FileSystemTextBackend),
        s.text_values,
        s.invalid_text,
        on_disk=True,
        shared=True,
        family="text",
    ),
    BackendCase(
        "fs-raw",
        _local(backends.FileSystemRawBackend),
        s.raw_values,
        s.invalid_raw,
        s.raw_normal,
        on_disk=True,
        shared=True,
        family="raw",
    ),
    BackendCase(
        "cache-json",
        lambda folder, _: backends.JsonCache(folder, clock=FrozenClock()),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        on_disk=True,
        shared=True,
        family="json",
    ),
    BackendCase(
        "cache-text",
        lambda folder, _: backends.TextCache(folder, timeout=None, clock=FrozenClock()),
        s.text_values,
        s.invalid_text,
        on_disk=True,
        shared=True,
        family="text",
    ),
    BackendCase(
        "memcache-json",
        lambda *_: backends.MemoryCache(clock=FrozenClock()),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        family="json",
    ),
    BackendCase(
        "memcache-raw",
        lambda *_: backends.MemoryRawCache(timeout=None, clock=FrozenClock()),
        s.raw_values,
        s.invalid_raw,
        s.raw_normal,
        family="raw",
    ),
    BackendCase(
        "tier-memory-fs",
        lambda folder, _: backends.TieredBackend(
            backends.MemoryCache(clock=FrozenClock()), backends.FileSystemJsonBackend(folder)
        ),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        on_disk=True,
        family="json",
    ),
    BackendCase(
        "tier-fs",
        lambda folder, _: backends.TieredBackend(
            backends.JsonCache(folder / "cache", clock=FrozenClock()),
            backends.FileSystemJsonBackend(folder / "origin"),
        ),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        on_disk=True,
        shared=True,
        family="json",
    ),
    BackendCase(
        "tier-3-levels-moto",
        lambda folder, target: backends.TieredBackend(
            backends.MemoryCache(clock=FrozenClock()),
            backends.TieredBackend(
                backends.JsonCache(folder / "cache", clock=FrozenClock()),
                _s3(backends.S3JsonBackend)(folder, target),
            ),
        ),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        server="moto",
        examples=20,
        family="json",
    ),
    BackendCase(
        "tier-s3-moto",
        lambda folder, target: backends.TieredBackend(
            backends.JsonCache(folder / "cache", clock=FrozenClock()),
            _s3(backends.S3JsonBackend)(folder, target),
        ),
        s.json_values,
        s.invalid_json,
        s.json_normal,
        shared=True,
        server="moto",
        examples=20,
        family="json",
    ),
] + [
    BackendCase(
        f"s3-{family}-{server}",
        _s3(cls),
        values,
        invalid,
        normal,
        shared=True,
        server=server,
        examples=examples,
        family=family,
        segment_limit=255 if server == "seaweedfs" else None,
    )
    for server, examples in SERVERS.items()
    for family, (cls, values, invalid, normal) in FAMILIES.items()
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
    chosen: BackendCase = request.param
    if chosen.server is None:
        return chosen
    return replace(chosen, target=request.getfixturevalue(chosen.server))


# -- S3 servers --------------------------------------------------------------------------


def _target(name: str, endpoint: str | None) -> S3Target:
    """A client for the server and its test bucket (made if missing)."""
    target = S3Target(name, endpoint, f"backends-{name.replace('_', '-')}", s3_client(endpoint))
    try:
        target.client.create_bucket(Bucket=target.bucket)
    except target.client.exceptions.ClientError as exc:
        # The session's server already has it from an earlier test.
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return target


@pytest.fixture
def moto() -> Iterator[S3Target]:
    """moto in-process (mock_aws) for one test: fast, full S3 semantics."""
    from moto import mock_aws

    with mock_aws():
        yield _target("moto", None)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with servers.moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def moto_server(moto_endpoint: str) -> S3Target:
    """moto as an HTTP server on loopback: the real wire path (signing, retries, streaming)."""
    return _target("moto_server", moto_endpoint)


@pytest.fixture(scope="session")
def seaweedfs_endpoint() -> Iterator[str]:
    with servers.seaweedfs() as endpoint:
        yield endpoint


@pytest.fixture
def seaweedfs(seaweedfs_endpoint: str) -> S3Target:
    """SeaweedFS, a real S3 server, as the independent implementation."""
    return _target("seaweedfs", seaweedfs_endpoint)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retry backoff is real seconds; tests retry at once."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


@pytest.fixture
def backend(case: BackendCase, tmp_path: Path) -> Iterator[backends.BaseBackend[Any, Any]]:
    store = case.make(tmp_path / "store")
    yield store
    if case.server is not None:
        store.clear()  # a shared server bucket must not grow from test to test
    store.close()


@pytest.fixture
def sample(case: BackendCase) -> Callable[[int], Any]:
    """A valid value of the case's family, distinct for each seed."""

    def make(seed: int) -> Any:
        if case.family == "raw":
            return f"value {seed}".encode()
        if case.family == "text":
            return f"value {seed}\r\n"
        return {"seed": seed, "list": [1, 2.5, None, "é"]}

    return make
