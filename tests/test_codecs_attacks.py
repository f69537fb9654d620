"""Attacks on the codecs (#27): secrets on every error path of the encrypted codec, hostile options,
stored data no layer can read on every store, versions and deadlines through codecs, a rotation
cut short, and the async twin from two event loops (ATTACKS.md classes 3, 4, 5, 9, 10)."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import enum
import logging
import operator
import pickle
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest
from clock import FrozenClock

import backends
from backends import (
    CorruptValueError,
    Encrypt,
    FileSystemBackend,
    FileSystemJsonBackend,
    FileSystemRawBackend,
    Gzip,
    JsonCodec,
    RawCodec,
    SerializationError,
    StoreError,
    Typed,
    Zstd,
)
from backends.base import UNCHANGED, Versioned
from backends.codecs import reencrypt
from backends.codecs.layers import Layered, Layers
from backends.events import Event, LoggingSink, MemorySink, subscribe

# -- class 10: no form of a key anywhere an error, a repr, an event or a log line shows ---------


def _forms(key: str) -> list[str]:
    """Every way a key could show: base64 (URL-safe, standard, unpadded, a run of it), hex, bytes."""
    raw = base64.urlsafe_b64decode(key)
    standard = base64.b64encode(raw).decode()
    return [
        key,
        key.rstrip("="),
        key[4:20],
        standard,
        standard[4:20],
        raw.hex(),
        raw.hex()[8:24],
        raw.hex().upper()[8:24],
        repr(raw)[2:20],
        repr(raw[4:])[2:16],
        raw.decode("latin-1")[4:14],
    ]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it, by ``__cause__`` and ``__context__``, shown or suppressed."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(e for e in (item.__cause__, item.__context__) if e is not None)


def _said(exc: BaseException) -> str:
    """What an error holds anywhere: message, repr, args and attributes of each exception of its chain."""
    parts = ["".join(traceback.format_exception(exc))]
    for item in _chain(exc):
        parts += [str(item), repr(item), repr(item.args), repr(vars(item))]
        parts += [repr(getattr(item, name, "")) for name in ("object", "doc", "msg", "backend")]
    return "\n".join(parts)


def _near(key: str) -> list[object]:
    """Bad key material that holds most of ``key``: what a typo or a paste leaves."""
    return [
        key[:-2] + "\u00e9=",  # one non-ASCII character (a paste from a word processor)
        "\u00a0" + key,  # a no-break space in front
        key + "\u200b",  # a zero-width space after
        key[:-3],  # cut
        key + "AA",  # longer
        key.replace("=", ""),  # unpadded
        key.replace("-", "+").replace("_", "/")
        if ("-" in key or "_" in key)
        else key + "x",  # standard base64
        key + "\n" + key,  # two keys on two lines
        key.encode(),  # the text as bytes: 44 bytes
        base64.urlsafe_b64decode(key)[:31],  # the bytes, one short
        [key, 5],
        [key, key[:-2] + "\u00e9="],
    ]


def _refused(errors: list[BaseException], action: Callable[[], object], *, must: bool = True) -> None:
    try:
        action()
    except Exception as exc:
        errors.append(exc)
    else:
        assert not must, "no error"


def test_no_key_shows_on_any_error_path_of_the_encrypted_codec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    planted, other, third = Encrypt.generate_key(), Encrypt.generate_key(), Encrypt.generate_key()
    errors: list[BaseException] = []
    memory = MemorySink()
    caplog.set_level(logging.DEBUG, logger="backends")
    with subscribe(memory), subscribe(LoggingSink()):
        store = FileSystemJsonBackend(tmp_path / "s", codec=Zstd(16) | Encrypt([planted, other]))
        store["k"] = {"v": 1}
        _refused(
            errors, lambda: FileSystemJsonBackend(tmp_path / "s", codec=Encrypt(third))["k"]
        )  # wrong key
        sealed = Path(store.path("k")).read_bytes()
        for spoiled in (sealed[:-1], sealed[:20], sealed[:-3] + b"\0\0\0", b"BKE1", sealed + b"x"):
            Path(store.path("k")).write_bytes(spoiled)
            _refused(errors, lambda: store["k"])
            _refused(errors, lambda: store.load_many(["k"]))
            _refused(errors, lambda: store.load_if_changed("k"))
        for bad in _near(planted):
            _refused(errors, lambda bad=bad: Encrypt(bad))  # type: ignore[arg-type]
            text = bad if isinstance(bad, str) else repr(bad)
            monkeypatch.setenv("BACKENDS_KEY", text)
            # the environment's keys are stripped: a no-break space in front is no error there
            _refused(errors, Encrypt.from_environment, must=False)
            _refused(errors, lambda: backends.open(f"file://{tmp_path}/u?encrypt=1"), must=False)
            _refused(
                errors, lambda: backends.open(f"file://{tmp_path}/u?compress=zstd&encrypt=yes"), must=False
            )
        for url in (
            f"?key={planted}",
            f"?encrypt={planted}",
            f"?Encryption_Key={planted}",
            f"?encrypt=1#{planted}",
        ):
            _refused(errors, lambda url=url: backends.open(f"file://{tmp_path}/u{url}"))
        # a rotation that stops on a value no key of the new list decrypts
        rotating = FileSystemJsonBackend(tmp_path / "r", codec=Encrypt([planted]))
        rotating.update({"a": 1, "b": 2})
        FileSystemJsonBackend(tmp_path / "r", codec=Encrypt(third))["c"] = 3
        _refused(errors, lambda: reencrypt(rotating))
        _refused(errors, lambda: pickle.dumps(store))
        _refused(errors, lambda: pickle.dumps(store.codec))
        _refused(errors, lambda: copy.deepcopy(store.codec))
        _refused(errors, lambda: pickle.dumps(Encrypt(planted)))
        twin = store.aio()
        _refused(errors, lambda: asyncio.run(twin.load("k")))
    shown = [repr(store), str(store), repr(store.codec), str(store.codec), repr(twin), repr(rotating)]
    said = "\n".join([*map(_said, errors), *shown, *map(repr, memory.events), caplog.text])
    said += "\n".join(record.getMessage() + repr(record.args) for record in caplog.records)
    assert len(errors) > 60 and memory.events and caplog.records  # the scan saw what it scans
    shown_forms = [n for key in (planted, other, third) for n, form in enumerate(_forms(key)) if form in said]
    assert not shown_forms  # the indexes of the forms shown, never the text that shows them


def test_no_key_shows_in_a_failed_layered_write_or_an_event_field(tmp_path: Path) -> None:
    planted = Encrypt.generate_key()
    memory = MemorySink()
    errors: list[BaseException] = []
    with subscribe(memory):
        store = FileSystemJsonBackend(tmp_path, codec=Encrypt(planted))
        _refused(errors, lambda: store.dump("k", {1: "a"}))  # SerializationError through the layers
        _refused(errors, lambda: store.dump("k", float("nan")))
        _refused(
            errors,
            lambda: FileSystemRawBackend(tmp_path, codec=Zstd(max_size=4) | Encrypt(planted)).dump(
                "r", b"12345"
            ),
        )
    fields = [repr(tuple(event)) for event in memory.events]
    said = "\n".join([*map(_said, errors), *fields])
    assert any(event.outcome == "failed" for event in memory.events)
    assert not [n for n, form in enumerate(_forms(planted)) if form in said]


# -- class 5: hostile options, refused before any I/O, naming the argument ----------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Zstd() | 5,  # type: ignore[operator]
        lambda: Zstd() | Gzip() | "x",  # type: ignore[operator]
        lambda: Gzip() | None,  # type: ignore[operator]
        lambda: Zstd() | JsonCodec(),  # type: ignore[operator]
        lambda: Layers((Zstd(), 5)),  # type: ignore[arg-type]
        lambda: Layers(Zstd()),  # type: ignore[arg-type]
        lambda: Layered(JsonCodec(), (Zstd,)),  # type: ignore[arg-type]  # the class, not a layer
        lambda: Layered(5, (Zstd(),)),  # type: ignore[arg-type]
        lambda: JsonCodec() | Zstd | Gzip(),  # type: ignore[operator]
    ],
    ids=[
        "layer|int",
        "layers|str",
        "layer|None",
        "layer|codec",
        "Layers-int",
        "Layers-not-tuple",
        "Layered-class",
        "Layered-base-int",
        "codec|class",
    ],
)
def test_a_layer_stack_holding_a_non_layer_is_refused_where_it_is_made(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        make()


def test_a_store_given_a_stack_with_a_non_layer_is_refused_before_any_io(tmp_path: Path) -> None:
    root = tmp_path / "never"
    with pytest.raises(TypeError):
        FileSystemJsonBackend(root, codec=Zstd() | 5)  # type: ignore[operator]
    assert not root.exists()


@pytest.mark.parametrize(
    "query",
    [
        "compress=zstd&compress_level=%0A3",
        "compress=zstd&compress_level=+3",
        "compress=zstd&compress_level=3.0",
        "compress=zstd&compress_level=%D9%A3",  # an Arabic-Indic three
        "compress=zstd&compress_threshold=1e3",
        "compress=zstd&compress_threshold=99999999999999999999",
        "compress=zstd&compress_threshold=-1",
        "compress=gzip&compress_level=0",
        "compress=gzip&compress_level=10",
        "compress=br",
        "compress=zstd%0D%0A",
        "compress=&compress_level=3",
        "encrypt=",
        "encrypt=2",
        "encrypt=1%0A",
    ],
)
def test_hostile_codec_url_parameters_are_value_errors_naming_them(tmp_path: Path, query: str) -> None:
    with pytest.raises(ValueError) as caught:
        backends.open(f"file://{tmp_path}/never?{query}")
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert ("compress" in message) or ("encrypt" in message)
    assert not (tmp_path / "never").exists()


def test_encrypt_1_without_a_key_in_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKENDS_KEY", raising=False)
    with pytest.raises(ValueError, match="BACKENDS_KEY"):
        backends.open(f"file://{tmp_path}/never?encrypt=1")
    monkeypatch.setenv("BACKENDS_KEY", " , ,")
    with pytest.raises(ValueError, match="BACKENDS_KEY"):
        backends.open(f"file://{tmp_path}/never?encrypt=on")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "keys", [iter([]), (), {}, set(), b"\0" * 32 * 2, [b"\0" * 32, None], [bytearray(31)], 3.5, object()]
)
def test_odd_key_lists_are_refused_with_a_typed_error(keys: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        Encrypt(keys)


class Point(pydantic.BaseModel):
    x: int


class NamedPoint(Point):
    name: str


def test_a_typed_store_refuses_an_instance_of_a_subclass_it_would_load_back_as_the_base(
    tmp_path: Path,
) -> None:
    """A NamedPoint stored as Point would load back a Point without its name: a silent loss."""
    store = FileSystemBackend(tmp_path, codec=Typed(Point))
    with pytest.raises(SerializationError):
        store.dump("k", NamedPoint(x=1, name="lost"))
    assert "k" not in store
    store.dump("p", Point(x=1))
    assert store["p"] == Point(x=1)


class Color(enum.Enum):
    RED = "red"


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)
    when: datetime.datetime
    id: uuid.UUID
    color: Color
    pair: tuple[int, int]


@pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(strict=True))
class StrictDay:
    day: datetime.date


def test_a_strict_model_stores_what_json_holds_as_strings_and_arrays(tmp_path: Path) -> None:
    """A strict pydantic model takes an ISO datetime, a UUID, an enum's value and a tuple from JSON
    (its JSON mode), never from Python strings and lists: validated in Python mode, none could be stored."""
    value = Strict(
        when=datetime.datetime(2024, 1, 2, 3, 4), id=uuid.UUID(int=7), color=Color.RED, pair=(1, 2)
    )
    store = FileSystemBackend(tmp_path / "m", codec=Typed(Strict) | Zstd(0))
    store["k"] = value
    assert store["k"] == value
    days = FileSystemBackend(tmp_path / "d", codec=Typed(StrictDay))
    days["k"] = StrictDay(day=datetime.date(2024, 1, 2))
    assert days["k"] == StrictDay(day=datetime.date(2024, 1, 2))
    Path(store.path("bad")).write_bytes(b'{"when":1,"id":"x","color":"blue","pair":[1]}')
    with pytest.raises(CorruptValueError, match="when"):
        store["bad"]


class Card(pydantic.BaseModel):
    number: int
    holder: str


def test_a_typed_encrypted_stores_plain_text_is_nowhere_in_a_validation_errors_chain(tmp_path: Path) -> None:
    """The messages name fields only, and so must every exception behind them: pydantic's own
    (in ``__context__``) shows the input value, here the plain text of an encrypted store."""
    secret = "-".join(["PLAIN", "4111", "1111"])  # never literally in a source line a traceback shows
    sealed = Typed(Card) | Encrypt(KEYS)
    store = FileSystemBackend(tmp_path, codec=sealed)
    raw = FileSystemRawBackend(tmp_path, codec=Encrypt(KEYS))  # someone with the key writes bad data
    raw["k"] = f'{{"number": "{secret}", "holder": ["{secret}"]}}'.encode()
    errors: list[BaseException] = []
    _refused(errors, lambda: store["k"])
    _refused(errors, lambda: store.dump("w", Card.model_construct(number=secret, holder="x")))
    said = "\n".join(map(_said, errors))
    assert isinstance(errors[0], CorruptValueError) and isinstance(errors[1], SerializationError)
    assert "number" in said and secret not in said


def test_a_hostile_model_name_is_escaped_in_every_message_and_repr(tmp_path: Path) -> None:
    hostile = type("Evil\n\x1b[31m\x07", (msgspec.Struct,), {"__annotations__": {"x": int}})
    codec = Typed(hostile)
    store = FileSystemBackend(tmp_path, codec=codec)
    with pytest.raises(SerializationError) as caught:
        store.dump("k", 5)  # type: ignore[arg-type]
    for shown in (repr(codec), str(caught.value), repr(store)):
        assert not any(ch in shown for ch in "\n\x1b\x07"), shown


# -- data no layer can read: CorruptValueError on every store, never garbage ----------------------

GARBAGE = [
    b"\x28\xb5\x2f\xfd" + b"\xff" * 20,  # a zstd magic, then junk
    b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"junk",  # a gzip header, then junk
    b"BKE1" + b"\x00" * 40,  # an encrypted frame no key opens
]


def _plain_and_coded(kind: str, tmp_path: Path, target: Any) -> tuple[Any, Any]:
    """Two views of one store: raw without codec (a foreign writer) and JSON through Zstd | Encrypt."""
    coded = Zstd(0) | Encrypt(KEYS)
    if kind == "fs":
        return FileSystemRawBackend(tmp_path), FileSystemJsonBackend(tmp_path, codec=coded)
    if kind == "sqlite":
        path = tmp_path / "kv.db"
        return backends.SqliteRawBackend(path), backends.SqliteJsonBackend(path, codec=coded)
    if kind == "cache":
        clock = FrozenClock()
        return (
            backends.JsonCache(tmp_path, timeout=None, clock=clock, codec=RawCodec()),
            backends.JsonCache(tmp_path, timeout=None, clock=clock, codec=coded),
        )
    if kind == "redis":
        prefix = f"atk-codecs/{tmp_path.name}"
        return (
            backends.RedisRawBackend(target, prefix=prefix),
            backends.RedisJsonBackend(target, prefix=prefix, codec=coded),
        )
    prefix = f"atk/{tmp_path.name}"
    engine = {"engine": "obstore"} if kind == "obstore" else {}
    return (
        backends.S3RawBackend(target.bucket, prefix=prefix, client=target.client),
        backends.S3JsonBackend(target.bucket, prefix=prefix, client=target.client, codec=coded, **engine),
    )


KEYS = [Encrypt.generate_key(), Encrypt.generate_key()]
STORES = ["fs", "sqlite", "cache", "redis", "s3", "obstore"]


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Any:
    kind = request.node.callspec.params["kind"]
    if kind == "redis":
        return request.getfixturevalue("redis")
    if kind == "s3":
        return request.getfixturevalue("moto")
    if kind == "obstore":
        return request.getfixturevalue("moto_server")
    return None


@pytest.mark.parametrize("kind", STORES)
def test_stored_data_no_layer_reads_is_a_corrupt_value_on_every_store_and_every_read(
    kind: str, tmp_path: Path, target: Any
) -> None:
    foreign, store = _plain_and_coded(kind, tmp_path, target)
    try:
        store["good"] = {"v": 1}
        for data in GARBAGE:
            foreign["bad"] = data
            for read in (
                lambda: store["bad"],
                lambda: store.load("bad"),
                lambda: store.get("bad"),
                lambda: store.load_many(["good", "bad"]),
                lambda: store.load_if_changed("bad"),
                lambda: dict(store.items()),
                lambda: list(store.values()),
                lambda: store.pop("bad"),
            ):
                with pytest.raises(CorruptValueError):
                    read()
            assert "bad" in foreign  # a failed pop removed nothing
        assert store["good"] == {"v": 1}
    finally:
        foreign.close()
        store.close()


@pytest.mark.parametrize("kind", STORES)
def test_a_store_holding_plain_and_compressed_values_reads_both_and_versions_hold(
    kind: str, tmp_path: Path, target: Any
) -> None:
    """Values written before compression was on (plain) and after (zstd, gzip) all read; ETags follow the
    stored bytes, ``if_match`` and ``load_if_changed`` work, ``stat().size`` is the stored size."""
    _, before = _plain_and_coded(kind, tmp_path, target)
    big = {"rows": ["x" * 40] * 100}
    if kind == "fs":
        plain, zstd, gz = (FileSystemJsonBackend(tmp_path, codec=c) for c in (None, Zstd(64), Gzip(64)))
    elif kind == "sqlite":
        path = tmp_path / "kv.db"
        plain, zstd, gz = (backends.SqliteJsonBackend(path, codec=c) for c in (None, Zstd(64), Gzip(64)))
    elif kind == "cache":
        plain, zstd, gz = (
            backends.JsonCache(tmp_path, timeout=None, clock=FrozenClock(), codec=c)
            for c in (None, Zstd(64), Gzip(64))
        )
    elif kind == "redis":
        prefix = f"atk-mixed/{tmp_path.name}"
        plain, zstd, gz = (
            backends.RedisJsonBackend(target, prefix=prefix, codec=c) for c in (None, Zstd(64), Gzip(64))
        )
    else:
        prefix = f"mixed/{tmp_path.name}"
        engine = {"engine": "obstore"} if kind == "obstore" else {}
        plain, zstd, gz = (
            backends.S3JsonBackend(target.bucket, prefix=prefix, client=target.client, codec=c, **engine)
            for c in (None, Zstd(64), Gzip(64))
        )
    try:
        plain["p"] = big
        zstd["z"] = big
        gz["g"] = big
        for reader in (plain, zstd, gz):
            assert reader.load_many(["p", "z", "g"]) == {"p": big, "z": big, "g": big}
        sizes = {key: zstd.stat(key).size for key in "pzg"}  # type: ignore[union-attr]
        assert sizes["z"] < sizes["p"] and sizes["g"] < sizes["p"]
        found = zstd.load_if_changed("p")
        assert isinstance(found, Versioned) and found.value == big
        if found.etag is not None:
            assert zstd.load_if_changed("p", found.etag) is UNCHANGED
            if hasattr(zstd, "dump") and "if_match" in zstd.dump.__code__.co_varnames:
                assert zstd.dump("p", {"n": 1}, if_match=found.etag)  # type: ignore[call-arg]
                assert not zstd.dump("p", {"n": 2}, if_match=found.etag)  # type: ignore[call-arg]
                assert plain["p"] == {"n": 1}
    finally:
        for backend in (before, plain, zstd, gz):
            backend.close()


# -- reencrypt: deadlines kept, and a run cut short leaves everything readable -------------------


def _expiring(kind: str, tmp_path: Path, clock: FrozenClock, keys: list[str], redis: str | None) -> Any:
    codec = Encrypt(keys)
    if kind == "cache":
        return backends.JsonCache(tmp_path, timeout=60, clock=clock, codec=codec)
    if kind == "sqlite":
        return backends.SqliteJsonBackend(tmp_path / "kv.db", timeout=60, clock=clock, codec=codec)
    assert redis is not None
    return backends.RedisJsonBackend(
        redis, prefix=f"atk-ttl/{tmp_path.name}", timeout=60, clock=clock, codec=codec
    )


@pytest.mark.parametrize("kind", ["cache", "sqlite", "redis"])
def test_reencrypt_keeps_each_values_own_deadline(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis") if kind == "redis" else None
    old, new = Encrypt.generate_key(), Encrypt.generate_key()
    clock = FrozenClock()
    before = _expiring(kind, tmp_path, clock, [old], redis)
    before.dump("forever", 1, timeout=None)
    before.dump("soon", 2, timeout=5)
    before.dump("default", 3)
    expected = {key: before.expires(key) for key in ("forever", "soon", "default")}
    clock.advance(2)
    rotated = _expiring(kind, tmp_path, clock, [new, old], redis)
    assert reencrypt(rotated) == 3
    assert {key: rotated.expires(key) for key in expected} == expected
    only_new = _expiring(kind, tmp_path, clock, [new], redis)
    assert only_new.load_many(list(expected)) == {"forever": 1, "soon": 2, "default": 3}
    for backend in (before, rotated, only_new):
        backend.close()


class _CloseAfter:
    """An event sink that closes ``backend`` once it has written ``writes`` values: a rotation cut short."""

    def __init__(self, backend: Any, writes: int) -> None:
        self.backend, self.left = backend, writes

    def __call__(self, event: Event) -> None:
        if event.operation == "dump" and event.outcome == "finished":
            self.left -= 1
            if self.left == 0:
                self.backend.close()


@pytest.mark.parametrize("kind", ["fs", "sqlite", "redis", "s3"])
def test_a_rotation_closed_mid_store_leaves_every_value_readable_with_the_new_list(
    kind: str, tmp_path: Path, target: Any
) -> None:
    old, new = Encrypt.generate_key(), Encrypt.generate_key()

    def build(keys: list[str]) -> Any:
        codec = Zstd(0) | Encrypt(keys)
        if kind == "fs":
            return FileSystemJsonBackend(tmp_path, codec=codec)
        if kind == "sqlite":
            return backends.SqliteJsonBackend(tmp_path / "kv.db", codec=codec)
        if kind == "redis":
            return backends.RedisJsonBackend(target, prefix=f"atk-rot/{tmp_path.name}", codec=codec)
        return backends.S3JsonBackend(
            target.bucket, prefix=f"rot/{tmp_path.name}", client=target.client, codec=codec
        )

    values = {f"k{i:02d}": {"i": i, "pad": "y" * i} for i in range(12)}
    first = build([old])
    first.update(values)
    first.close()
    rotating = build([new, old])
    with subscribe(_CloseAfter(rotating, 5)), pytest.raises(StoreError):
        reencrypt(rotating)
    after = build([new, old])
    assert after.load_many(list(values)) == values  # the new list reads both halves
    old_only, new_only = build([old]), build([new])
    moved = [key for key in values if _reads(new_only, key)]
    assert 5 <= len(moved) < len(values)  # cut short: some moved, some not
    assert all(_reads(old_only, key) for key in values if key not in moved)
    assert reencrypt(after) == len(values)  # run again: it completes
    assert new_only.load_many(list(values)) == values
    for backend in (after, old_only, new_only):
        backend.close()


def _reads(backend: Any, key: str) -> bool:
    try:
        backend[key]
    except CorruptValueError:
        return False
    return True


# -- class 9: the async twin through a codec from two event loops, in two threads ---------------


def in_two_loops_at_once(work: Callable[[str], Awaitable[None]]) -> None:
    """Run ``work("a")`` and ``work("b")`` each in its own event loop, in two threads started together."""
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def thread(tag: str) -> None:
        try:
            start.wait()
            asyncio.run(work(tag))
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    threads = [threading.Thread(target=thread, args=(tag,)) for tag in "ab"]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert not failures, failures


def test_the_async_twin_through_zstd_and_encrypt_serves_two_loops_in_two_threads(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path, codec=Zstd(0) | Encrypt(KEYS))
    twin = store.aio(max_workers=4)

    async def work(tag: str) -> None:
        values = {f"{tag}{i}": {"tag": tag, "rows": [tag * 50] * (i + 1)} for i in range(40)}
        await asyncio.gather(*(twin.dump(key, value) for key, value in values.items()))
        loaded = await asyncio.gather(*(twin.load(key) for key in values))
        assert dict(zip(values, loaded, strict=True)) == values
        assert await twin.load_many(list(values)) == values

    in_two_loops_at_once(work)
    asyncio.run(work("c"))  # and a third loop after both closed
    store.close()


def test_the_command_shows_no_key_for_a_bad_backends_key_or_a_wrong_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.cli import main

    planted, other = Encrypt.generate_key(), Encrypt.generate_key()
    FileSystemJsonBackend(tmp_path, codec=Encrypt(planted))["k"] = 1
    said = []
    for bad in (planted[:-2] + "\u00e9=", planted[:-3], f"{other},{planted}x", other):
        monkeypatch.setenv("BACKENDS_KEY", bad)
        for args in (
            ["get", f"file://{tmp_path}?encrypt=1", "k"],
            ["--json", "ls", f"file://{tmp_path}?encrypt=1"],
        ):
            try:
                code = main(args)
            except SystemExit as exit_:
                code = exit_.code
            said.append(capsys.readouterr())
            assert code not in (0, None) or args[1] == "ls"  # ls of a wrong key's store decodes nothing
    text = "\n".join(f"{out.out}\n{out.err}" for out in said)
    assert "Traceback" not in text
    assert not [n for n, form in enumerate(_forms(planted)) if form in text]


# -- class 1: a rotation whose writes lose their replies ------------------------------------------


def test_reencrypt_over_redis_losing_write_replies_moves_every_value(redis: str) -> None:
    from redis_proxy import LosingProxy, script_sha

    from backends.redis.scripts import SCRIPTS

    old, new = Encrypt.generate_key(), Encrypt.generate_key()
    port = int(redis.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    values = {f"k{i}": {"i": i} for i in range(10)}
    prefix = "atk-codecs/lost-rotation"
    with LosingProxy(port) as proxy:
        backends.RedisJsonBackend(redis, prefix=prefix, codec=Encrypt(old)).update(values)
        writes = {script_sha(SCRIPTS["write"]), script_sha(SCRIPTS["put"])}  # a plain dump is "put"
        every_other = iter(range(10**6))
        proxy.lose(
            lambda request: (
                request[0].upper() == b"EVALSHA" and request[1] in writes and next(every_other) % 2 == 0
            ),
            times=5,
        )
        rotating = backends.RedisJsonBackend(proxy.url, prefix=prefix, codec=Encrypt([new, old]), retries=5)
        assert reencrypt(rotating) == len(values)  # a lost reply to a won write still counts as won
        assert proxy.lost == 5
        only_new = backends.RedisJsonBackend(redis, prefix=prefix, codec=Encrypt(new))
        assert only_new.load_many(list(values)) == values
        only_new.clear()
        for backend in (rotating, only_new):
            backend.close()


def test_the_redis_twin_pop_of_a_value_no_key_opens_leaves_it_in_place(redis: str) -> None:
    prefix = "atk-codecs/aio-pop"
    other = backends.RedisJsonBackend(redis, prefix=prefix, codec=Encrypt(Encrypt.generate_key()))
    other["k"] = {"v": 1}
    store = backends.RedisJsonBackend(redis, prefix=prefix, codec=Encrypt(KEYS))

    async def pop() -> None:
        twin = store.aio()
        with pytest.raises(CorruptValueError):
            await twin.pop("k")
        await twin.aclose()

    asyncio.run(pop())
    assert other["k"] == {"v": 1}  # the value a dropped key sealed is still there for that key
    other.clear()
    other.close()


def test_the_redis_twin_through_zstd_and_encrypt_serves_two_loops_in_two_threads(redis: str) -> None:
    store = backends.RedisJsonBackend(redis, prefix="atk-codecs/twin-loops", codec=Zstd(0) | Encrypt(KEYS))
    twin = store.aio()

    async def work(tag: str) -> None:
        values = {f"{tag}{i}": {"tag": tag, "rows": [tag * 50] * (i + 1)} for i in range(30)}
        await asyncio.gather(*(twin.dump(key, value) for key, value in values.items()))
        loaded = await asyncio.gather(*(twin.load(key) for key in values))
        assert dict(zip(values, loaded, strict=True)) == values
        assert await twin.pop(f"{tag}0") == values[f"{tag}0"]

    in_two_loops_at_once(work)
    assert len(store) == 58
    store.clear()
    asyncio.run(twin.aclose())


# -- class 8: a bomb inside a frame is bounded by the layer's max_size ----------------------------


@pytest.mark.parametrize(
    "layers",
    [
        lambda: (Zstd(max_size=1 << 20),),
        lambda: (Gzip(max_size=1 << 20),),
        lambda: (Zstd(max_size=1 << 20), Encrypt(KEYS)),
    ],
    ids=["zstd", "gzip", "zstd-encrypt"],
)
@pytest.mark.parametrize("family", ["json", "text", "typed"])
def test_a_frame_inside_a_frame_is_a_corrupt_value_not_past_max_size(
    tmp_path: Path, layers: Callable[[], tuple[Any, ...]], family: str
) -> None:
    """The family decompresses what it is given (a plain store reads compressed values) with the
    default bound (1 GiB): a 47-byte zstd frame of a zstd frame of 64 MiB slipped past max_size=1 MiB."""
    import functools

    import zstandard

    given = layers()
    stack = functools.reduce(operator.or_, given)
    body = b'"x"' if family == "text" else b'{"number": 1, "holder": "a"}'
    inner = zstandard.ZstdCompressor(level=19).compress(b" " * (64 << 20) + body)
    if family == "json":
        store: Any = FileSystemJsonBackend(tmp_path, codec=stack)
    elif family == "text":
        store = backends.FileSystemTextBackend(tmp_path, codec=stack)
    else:
        store = FileSystemBackend(tmp_path, codec=functools.reduce(operator.or_, given, Typed(Card)))
    planted = zstandard.ZstdCompressor().compress(inner)  # the outer frame: what the store's compressor reads
    for layer in given[1:]:
        planted = layer.wrap(planted)
    assert len(planted) < 200
    Path(tmp_path / "k").write_bytes(planted)
    with pytest.raises(CorruptValueError, match="compressed twice"):
        store["k"]
