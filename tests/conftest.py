"""The registry of backend cases: every contract and parity test runs on each.

A new backend joins every shared test (``backends.testing.ContractTests``,
which the parity machine is part of, and the other suites parametrized by
the ``case`` fixture) by adding one ``case_of(...)`` to ``CASES``. ``build``
makes a fresh, isolated backend in an empty folder it is given (a backend
that needs no folder ignores it); it is called once per hypothesis example,
because function fixtures do not reset between examples.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import servers
from clock import FrozenClock
from hypothesis import HealthCheck, Phase, settings
from monitor import RedisCommands
from servers import S3Target, s3_client

import backends
from backends.events import HUB, MemorySink, subscribe
from backends.testing import JSON, OBJECTS, RAW, TEXT, Family, StoreCase
from backends.testing.parity import Folders

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
    """A registered case: a ``StoreCase`` once its server (if any) is running."""

    name: str
    build: Build
    family: Family
    #: the server fixture this case needs ("moto", "moto_server", "seaweedfs")
    server: str | None = None
    #: the StoreCase flags: identity, on_disk, shared, examples, segment_limit
    flags: dict[str, Any] = field(default_factory=dict)

    def resolve(self, target: S3Target | None = None) -> StoreCase:
        return StoreCase(
            self.name,
            lambda folder: self.build(folder, target),
            self.family,
            remote=self.server is not None,
            **self.flags,
        )

    def __str__(self) -> str:
        return self.name


def case_of(name: str, build: Build, family: Family, server: str | None = None, **flags: Any) -> BackendCase:
    return BackendCase(name, build, family, server, flags)


def _local(cls: Any) -> Build:
    return lambda folder, _: cls(folder)


def _plain(cls: Any) -> Build:
    return lambda folder, _: cls(folder, layout="plain")


def _sqlite(cls: Any, timeout: float | None = None, **options: Any) -> Build:
    if timeout is None:
        return lambda folder, _: cls(folder / "kv.db", **options)
    return lambda folder, _: cls(folder / "kv.db", timeout=timeout, clock=FrozenClock(), **options)


def _redis(cls: Any) -> Build:
    # One prefix per folder: every hypothesis example gets an empty store.
    def build(folder: Path, target: Any) -> backends.BaseBackend[Any, Any]:
        assert isinstance(target, str)
        return cls(target, prefix=f"t/{folder.parent.name}/{folder.name}")

    return build


def _s3(cls: Any, **options: Any) -> Build:
    # One prefix per folder: every hypothesis example gets an empty store.
    def build(folder: Path, target: S3Target | None) -> backends.BaseBackend[Any, Any]:
        assert target is not None
        prefix = f"t/{folder.parent.name}/{folder.name}"
        return cls(target.bucket, prefix=prefix, client=target.client, **options)

    return build


def _close_view_bases(tier: backends.BaseBackend[Any, Any]) -> None:
    # Closing a view leaves its base open (README.rst, "Views"): the case closes the bases it made.
    twin = getattr(tier, "twin", None)  # the async suite's Blocking(tier.aio())
    tier = tier if twin is None else twin.backend
    assert isinstance(tier, backends.TieredBackend)
    for part in (tier.cache, tier.origin):
        assert isinstance(part, backends.View)
        part.base.close()


S3_FAMILIES = {
    "json": (backends.S3JsonBackend, JSON),
    "text": (backends.S3TextBackend, TEXT),
    "raw": (backends.S3RawBackend, RAW),
}
#: BACKENDS_LONG=1: the long run (README.rst, "Tests"); the default keeps a bounded share
LONG = os.environ.get("BACKENDS_LONG") == "1"
#: parity examples on each S3 server (its round trips dominate the suite's time)
SERVERS = (
    {"moto": 20, "moto_server": 8, "seaweedfs": 10} if LONG else {"moto": 6, "moto_server": 4, "seaweedfs": 5}
)

CASES = (
    [
        case_of("volatile", lambda *_: backends.VolatileBackend(), OBJECTS, identity=True),
        case_of("fs-json", _local(backends.FileSystemJsonBackend), JSON, on_disk=True, shared=True),
        case_of("fs-text", _local(backends.FileSystemTextBackend), TEXT, on_disk=True, shared=True),
        case_of("fs-raw", _local(backends.FileSystemRawBackend), RAW, on_disk=True, shared=True),
        case_of(
            "cache-json",
            lambda folder, _: backends.JsonCache(folder, clock=FrozenClock()),
            JSON,
            on_disk=True,
            shared=True,
        ),
        case_of(
            "cache-text",
            lambda folder, _: backends.TextCache(folder, timeout=None, clock=FrozenClock()),
            TEXT,
            on_disk=True,
            shared=True,
        ),
        case_of(  # bounded far past its values: the tally and stamps on every call, the contract unchanged
            "cache-raw",
            lambda folder, _: backends.RawCache(folder, clock=FrozenClock(), maxbytes=2**40, maxsize=2**40),
            RAW,
            on_disk=True,
            shared=True,
        ),
        case_of("memcache-json", lambda *_: backends.MemoryCache(clock=FrozenClock()), JSON),
        case_of("memcache-raw", lambda *_: backends.MemoryRawCache(timeout=None, clock=FrozenClock()), RAW),
        case_of(
            "tier-memory-fs",
            lambda folder, _: backends.TieredBackend(
                backends.MemoryCache(clock=FrozenClock()), backends.FileSystemJsonBackend(folder)
            ),
            JSON,
            on_disk=True,
        ),
        case_of(
            "tier-fs",
            lambda folder, _: backends.TieredBackend(
                backends.JsonCache(folder / "cache", clock=FrozenClock()),
                backends.FileSystemJsonBackend(folder / "origin"),
            ),
            JSON,
            on_disk=True,
            shared=True,
        ),
        case_of(
            # A tier whose cache and origin are both namespaces (views of a tier: tests/test_views.py).
            "tier-of-views",
            lambda folder, _: backends.TieredBackend(
                backends.MemoryCache(clock=FrozenClock()).namespace("cache/"),
                backends.FileSystemJsonBackend(folder).namespace("tenant-a/"),
            ),
            JSON,
            on_disk=True,
            finish=_close_view_bases,
        ),
        case_of(
            "tier-3-levels-moto",
            lambda folder, target: backends.TieredBackend(
                backends.MemoryCache(clock=FrozenClock()),
                backends.TieredBackend(
                    backends.JsonCache(folder / "cache", clock=FrozenClock()),
                    _s3(backends.S3JsonBackend)(folder, target),
                ),
            ),
            JSON,
            "moto",
            examples=SERVERS["moto"],
            pickles=False,
        ),
        case_of(
            "tier-s3-moto",
            lambda folder, target: backends.TieredBackend(
                backends.JsonCache(folder / "cache", clock=FrozenClock()),
                _s3(backends.S3JsonBackend)(folder, target),
            ),
            JSON,
            "moto",
            shared=True,
            examples=SERVERS["moto"],
            pickles=False,
        ),
    ]
    + [
        # An ordinary folder tree: its limits are declared (StoreCase.tree), not skipped.
        case_of(f"fs-plain-{name}", _plain(cls), family, on_disk=True, shared=True, tree=True)
        for name, (cls, family) in {
            "json": (backends.FileSystemJsonBackend, JSON),
            "raw": (backends.FileSystemRawBackend, RAW),
        }.items()
    ]
    + [
        # One file per example; a timeout (a cache) on one family: expiry is the same code for all.
        case_of("sqlite-json", _sqlite(backends.SqliteJsonBackend), JSON, on_disk=True, shared=True),
        # bounded far past any test's values: the contract through the bound's bookkeeping (#26)
        case_of(
            "sqlite-raw", _sqlite(backends.SqliteRawBackend, maxbytes=2**40), RAW, on_disk=True, shared=True
        ),
        case_of(
            "sqlite-text-expiring",
            _sqlite(backends.SqliteTextBackend, timeout=300),
            TEXT,
            on_disk=True,
            shared=True,
        ),
    ]
    + [
        case_of(f"redis-{name}", _redis(cls), family, "redis", shared=True, examples=30)
        for name, (cls, family) in {
            "json": (backends.RedisJsonBackend, JSON),
            "text": (backends.RedisTextBackend, TEXT),
            "raw": (backends.RedisRawBackend, RAW),
        }.items()
    ]
    + [
        case_of(
            "redis-json-expiring",
            lambda folder, url: backends.RedisJsonBackend(
                url, prefix=f"t/{folder.parent.name}/{folder.name}", timeout=300, clock=FrozenClock()
            ),
            JSON,
            "redis",
            shared=True,
            examples=30,
        ),
        case_of(
            "tier-redis-fs",
            lambda folder, url: backends.TieredBackend(
                backends.RedisJsonBackend(
                    url, prefix=f"t/{folder.parent.name}/{folder.name}", timeout=300, clock=FrozenClock()
                ),
                backends.FileSystemJsonBackend(folder / "origin"),
            ),
            JSON,
            "redis",
            on_disk=True,
            shared=True,
            examples=30,
        ),
    ]
    + [
        case_of(
            f"s3-{label}{name}-{server}",
            _s3(S3_FAMILIES[name][0], engine=engine),
            S3_FAMILIES[name][1],
            server,
            shared=True,
            examples=SERVERS[server],
            pickles=False,
            segment_limit=255 if server == "seaweedfs" else None,
        )
        for server, name, engine, label in [
            *((server, name, "boto3", "") for server in SERVERS for name in S3_FAMILIES),
            # The obstore engine on the real wire path, JSON on moto's server and raw (gzip,
            # metadata) on SeaweedFS: the adapter is the same code for every family.
            ("moto_server", "json", "obstore", "obstore-"),
            ("seaweedfs", "raw", "obstore", "obstore-"),
        ]
    ]
)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Folders]:
    yield Folders(tmp_path)


@pytest.fixture(params=CASES, ids=str)
def case(request: pytest.FixtureRequest) -> StoreCase:
    chosen: BackendCase = request.param
    return chosen.resolve(None if chosen.server is None else request.getfixturevalue(chosen.server))


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


# -- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session, on a free loopback port.

    Debian's package, which ``.ci/run`` installs. A missing one is an error
    naming the package, never a skip, as for every other server.
    """
    with servers.redis_server() as url:
        yield url


@pytest.fixture
def redis(redis_url: str) -> str:
    """The session's Redis server for one test; every case uses its own prefix."""
    return redis_url


@pytest.fixture
def commands(redis: str) -> Iterator[RedisCommands]:
    """The commands clients send the Redis server, counted between ``reset()`` and ``count()``."""
    counter = RedisCommands(redis)
    yield counter
    counter.client.close()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retry backoff is real seconds; tests retry at once."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)


@pytest.fixture
def backend(case: StoreCase, tmp_path: Path) -> Iterator[backends.BaseBackend[Any, Any]]:
    with case.opened(tmp_path / "store") as store:
        yield store


@pytest.fixture
def sample(case: StoreCase) -> Callable[[int], Any]:
    """A valid value of the case's family, distinct for each seed."""
    return case.family.sample


@pytest.fixture
def sink() -> Iterator[MemorySink]:
    """Every event told while the test runs; no subscription may outlive it."""
    memory = MemorySink()
    with subscribe(memory):
        yield memory
    assert not HUB.on  # every subscription of the test is closed


# -- codec cases (#27): every store through a codec; a new case is one entry ------------------

import dataclasses as _dataclasses  # noqa: E402 - the codec registry's own imports
import itertools as _itertools  # noqa: E402

import msgspec as _msgspec  # noqa: E402
import pydantic as _pydantic  # noqa: E402
from hypothesis import strategies as _st  # noqa: E402

from backends.codecs import Encrypt, Gzip, JsonCodec, Typed, Zstd  # noqa: E402
from backends.codecs.families import Codec  # noqa: E402

#: the keys of every encrypted case: the first encrypts, both decrypt
CODEC_KEYS = [Encrypt.generate_key(), Encrypt.generate_key()]


class Point(_pydantic.BaseModel):
    """The pydantic model of the typed cases."""

    x: int
    label: str
    tags: list[str] = []


class Spot(_msgspec.Struct):
    """The msgspec struct of the typed cases."""

    x: int
    label: str


@_dataclasses.dataclass
class Pin:
    """The dataclass of the typed cases."""

    x: int
    label: str


def _typed(model: Any) -> Family:
    fields = {"x": _st.integers(-(2**63), 2**63 - 1), "label": _st.text(max_size=20)}
    # no int, and nothing pydantic's lax mode takes for one ("5", 0.0)
    bad_x = _st.one_of(_st.text(alphabet="abc", max_size=5), _st.none(), _st.just(float("nan")))
    unvalidated = (
        _st.builds(lambda x: Point.model_construct(x=x, label="l"), bad_x)
        if model is Point
        else _st.builds(lambda x: model(x=x, label="l"), bad_x)
    )
    return Family(
        f"typed-{model.__name__}",
        _st.builds(model, **fields),
        # not the model, or an instance that would not load back (an unvalidated field)
        _st.one_of(
            _st.integers(), _st.dictionaries(_st.text(max_size=3), _st.integers(), max_size=2), unvalidated
        ),
        sampler=lambda seed: model(x=seed, label=f"value {seed}\r\n é"),
    )


class Mixed(Codec[Any, bytes]):
    """A store holding every kind at once: each write picks plain JSON, zstd or gzip in turn
    (as values written before and after compression was turned on, or changed); reads use the
    plain JSON codec, which reads them all."""

    name = "json"
    content_type = "application/json"
    can_be_empty = False

    def __init__(self) -> None:
        self._writers = _itertools.cycle([JsonCodec(), JsonCodec() | Zstd(0), JsonCodec() | Gzip(0)])
        self._reader = JsonCodec()

    def encode(self, value: Any) -> bytes:
        return next(self._writers).encode(value)

    def decode(self, data: bytes) -> Any:
        return self._reader.decode(data)


def _sealed() -> Encrypt:
    return Encrypt(CODEC_KEYS)


def _local_with(cls: Any, codec: Callable[[], Any], **options: Any) -> Build:
    return lambda folder, _: cls(folder, codec=codec(), **options)


def _redis_with(cls: Any, codec: Callable[[], Any]) -> Build:
    return lambda folder, url: cls(url, prefix=f"t/{folder.parent.name}/{folder.name}", codec=codec())


def _s3_with(cls: Any, codec: Callable[[], Any], **options: Any) -> Build:
    def build(folder: Path, target: S3Target | None) -> backends.BaseBackend[Any, Any]:
        assert target is not None
        prefix = f"t/{folder.parent.name}/{folder.name}"
        return cls(target.bucket, prefix=prefix, client=target.client, codec=codec(), **options)

    return build


#: parity examples of a codec case: bounded, so the default run stays fast
CODEC_EXAMPLES = {"local": 30 if LONG else 8, "redis": 15 if LONG else 5, "s3": 8 if LONG else 2}
CODEC_CASES = [
    case_of(
        "volatile-json-zstd",
        lambda *_: backends.VolatileBackend(codec=JsonCodec() | Zstd(16)),
        JSON,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "fs-json-zstd",
        _local_with(backends.FileSystemJsonBackend, lambda: Zstd(16)),
        JSON,
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "fs-raw-gzip",
        _local_with(backends.FileSystemRawBackend, lambda: Gzip(16)),
        RAW,
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "fs-text-encrypted",
        _local_with(backends.FileSystemTextBackend, _sealed),
        TEXT,
        on_disk=True,
        shared=True,
        pickles=False,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "fs-typed-pydantic",
        lambda folder, _: backends.FileSystemBackend(folder, codec=Typed(Point)),
        _typed(Point),
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "fs-mixed-plain-zstd-gzip",
        lambda folder, _: backends.FileSystemBackend(folder, codec=Mixed()),
        JSON,
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "cache-json-zstd-encrypted",
        lambda folder, _: backends.JsonCache(folder, clock=FrozenClock(), codec=Zstd(16) | _sealed()),
        JSON,
        on_disk=True,
        shared=True,
        pickles=False,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "cache-text-gzip",
        lambda folder, _: backends.TextCache(folder, timeout=None, clock=FrozenClock(), codec=Gzip(16)),
        TEXT,
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "memcache-json-gzip",
        lambda *_: backends.MemoryCache(clock=FrozenClock(), codec=Gzip(16)),
        JSON,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "memcache-raw-encrypted",
        lambda *_: backends.MemoryRawCache(timeout=None, clock=FrozenClock(), codec=_sealed()),
        RAW,
        pickles=False,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "sqlite-raw-zstd",
        _local_with(lambda folder, **kw: backends.SqliteRawBackend(folder / "kv.db", **kw), lambda: Zstd(16)),
        RAW,
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "sqlite-typed-msgspec",
        lambda folder, _: backends.SqliteBackend(folder / "kv.db", codec=Typed(Spot)),
        _typed(Spot),
        on_disk=True,
        shared=True,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "tier-memory-zstd-fs-encrypted",
        lambda folder, _: backends.TieredBackend(
            backends.MemoryCache(clock=FrozenClock(), codec=Zstd(16)),
            backends.FileSystemJsonBackend(folder, codec=_sealed()),
        ),
        JSON,
        on_disk=True,
        pickles=False,
        examples=CODEC_EXAMPLES["local"],
    ),
    case_of(
        "redis-json-encrypted",
        _redis_with(backends.RedisJsonBackend, _sealed),
        JSON,
        "redis",
        shared=True,
        pickles=False,
        examples=CODEC_EXAMPLES["redis"],
    ),
    case_of(
        "redis-raw-zstd",
        _redis_with(backends.RedisRawBackend, lambda: Zstd(16)),
        RAW,
        "redis",
        shared=True,
        examples=CODEC_EXAMPLES["redis"],
    ),
    case_of(
        "redis-typed-dataclass",
        lambda folder, url: backends.RedisBackend(
            url, prefix=f"t/{folder.parent.name}/{folder.name}", codec=Typed(Pin)
        ),
        _typed(Pin),
        "redis",
        shared=True,
        examples=CODEC_EXAMPLES["redis"],
    ),
    case_of(
        "s3-json-encrypted-moto",
        _s3_with(backends.S3JsonBackend, lambda: Zstd(16) | _sealed()),
        JSON,
        "moto",
        shared=True,
        pickles=False,
        examples=CODEC_EXAMPLES["s3"],
    ),
    case_of(
        "s3-obstore-json-zstd-moto_server",
        _s3_with(backends.S3JsonBackend, lambda: Zstd(16), engine="obstore"),
        JSON,
        "moto_server",
        shared=True,
        pickles=False,
        examples=CODEC_EXAMPLES["s3"],
    ),
    case_of(
        "tier-fs-gzip-s3-typed-moto",
        lambda folder, target: backends.TieredBackend(
            backends.JsonCache(folder / "cache", clock=FrozenClock(), codec=Typed(Point) | Gzip(16)),
            _s3_with(backends.S3Backend, lambda: Typed(Point))(folder, target),
        ),
        _typed(Point),
        "moto",
        shared=True,
        pickles=False,
        examples=CODEC_EXAMPLES["s3"],
    ),
]


@pytest.fixture(params=CODEC_CASES, ids=str)
def codec_case(request: pytest.FixtureRequest) -> StoreCase:
    chosen: BackendCase = request.param
    return chosen.resolve(None if chosen.server is None else request.getfixturevalue(chosen.server))
