"""Codecs (#27): every store through compression, encryption and typed models (the contract
suite and the parity machine on each codec case), and what each codec promises."""

from __future__ import annotations

import base64
import gzip
import io
import math
import os
import pickle
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest
import zstandard
from clock import FrozenClock
from conftest import CODEC_KEYS, Point, Spot
from servers import S3Target

import backends
from backends import (
    CorruptValueError,
    Encrypt,
    FileSystemBackend,
    FileSystemJsonBackend,
    FileSystemRawBackend,
    Gzip,
    JsonCodec,
    SerializationError,
    Typed,
    Zstd,
)
from backends.base import UNCHANGED, Versioned
from backends.codecs import reencrypt
from backends.codecs.compress import GZIP_MAGIC, ZSTD_MAGIC
from backends.testing import ContractTests, StoreCase


class TestCodecContract(ContractTests):
    """Every test of the public contract suite, the parity machine included, on every codec case."""

    @pytest.fixture
    def store_case(self, codec_case: StoreCase) -> StoreCase:
        return codec_case

    # A codec changes values, never keys: the key rule is each store's, proven on every plain
    # case (tests/test_contract.py); here it would cost a server per key and prove nothing more.
    test_valid_keys_are_accepted = None
    test_invalid_keys_raise_invalid_key_error = None


# -- compression: the threshold, the frames, a store holding both kinds -------------------------

BIG = {"rows": [{"id": i, "name": "row"} for i in range(200)]}  # ~5 KiB of JSON that compresses


def _file(backend: Any, key: str) -> bytes:
    return Path(backend.path(key)).read_bytes()


def test_values_under_the_threshold_are_stored_as_they_are(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path, codec=Zstd(threshold=1024))
    store["small"] = {"a": 1}
    store["big"] = BIG
    assert _file(store, "small") == b'{"a":1}'
    assert _file(store, "big").startswith(ZSTD_MAGIC) and len(_file(store, "big")) < 1024
    assert store["small"] == {"a": 1} and store["big"] == BIG


def test_a_value_compression_would_not_shrink_is_stored_plain(tmp_path: Path) -> None:
    store = FileSystemRawBackend(tmp_path, codec=Gzip(threshold=0))
    noise = os.urandom(4096)
    store["noise"] = noise
    assert _file(store, "noise") == noise
    assert store["noise"] == noise


@pytest.mark.parametrize("magic", [ZSTD_MAGIC, GZIP_MAGIC])
def test_a_small_raw_value_that_looks_compressed_is_framed_so_it_reads_back(
    tmp_path: Path, magic: bytes
) -> None:
    store = FileSystemRawBackend(tmp_path, codec=Zstd(threshold=1 << 20))
    store["k"] = magic + b"not a frame"
    assert _file(store, "k").startswith(ZSTD_MAGIC)  # compressed, whatever the threshold
    assert store["k"] == magic + b"not a frame"


def test_a_store_holding_values_from_before_and_after_compression_reads_them_all(tmp_path: Path) -> None:
    plain = FileSystemJsonBackend(tmp_path)
    plain["old"] = BIG
    plain["old-small"] = [1]
    zstd = FileSystemJsonBackend(tmp_path, codec=Zstd(threshold=64))
    zstd["new"] = BIG
    zstd["new-small"] = [2]
    gz = FileSystemJsonBackend(tmp_path, codec=Gzip(threshold=64))
    gz["gz"] = BIG
    kinds = {key: _file(plain, key)[:2] for key in ("old", "new", "gz")}
    assert kinds == {"old": b'{"', "new": ZSTD_MAGIC[:2], "gz": GZIP_MAGIC}
    expected = {"old": BIG, "old-small": [1], "new": BIG, "new-small": [2], "gz": BIG}
    # Every setting reads every value: zstd, gzip, and compression turned off again.
    for reader in (plain, zstd, gz, FileSystemJsonBackend(tmp_path, codec=Zstd(threshold=1 << 30))):
        assert dict(reader.items()) == expected
        assert reader.load_many(expected) == expected
    raw = FileSystemRawBackend(tmp_path / "raw")
    raw["old"] = b"x" * 5000
    assert FileSystemRawBackend(tmp_path / "raw", codec=Gzip(100))["old"] == b"x" * 5000


def test_stat_size_is_the_stored_bytes_and_the_etag_follows_the_stored_value(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path, codec=Zstd(threshold=64))
    store["big"] = BIG
    found = store.stat("big")
    assert found is not None and found.size == len(_file(store, "big")) < len(JsonCodec().encode(BIG))
    assert found.content_type == "application/octet-stream"


def _zstd_bomb(size: int) -> bytes:
    return bytes(zstandard.ZstdCompressor().compress(b"\0" * size))


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (_zstd_bomb(3 << 20), "more than max_size"),
        (bytes(zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (3 << 20))), "max_size"),
        (gzip.compress(b"\0" * (3 << 20)), "more than max_size"),
        (_zstd_bomb(100)[:-3], "cut short"),
        (_zstd_bomb(100) + b"junk", "followed by other bytes"),
        (gzip.compress(b"[1]")[:-4], "cut short"),
        (gzip.compress(b"[1]") + b"junk", "followed by other bytes"),
        (ZSTD_MAGIC + b"\xff" * 20, "does not decode"),
    ],
    ids=[
        "zstd-bomb",
        "zstd-bomb-no-size",
        "gzip-bomb",
        "zstd-cut",
        "zstd-trailing",
        "gzip-cut",
        "gzip-trailing",
        "zstd-garbage",
    ],
)
def test_a_planted_frame_that_is_cut_corrupt_or_a_bomb_is_a_corrupt_value(
    tmp_path: Path, stored: bytes, reason: str
) -> None:
    store = FileSystemRawBackend(tmp_path, codec=Zstd(max_size=1 << 20))
    store["k"] = b"placeholder"
    Path(store.path("k")).write_bytes(stored)
    with pytest.raises(CorruptValueError, match=reason):
        store["k"]


def test_a_value_over_max_size_is_refused_at_the_write(tmp_path: Path) -> None:
    store = FileSystemRawBackend(tmp_path, codec=Gzip(max_size=1000))
    with pytest.raises(SerializationError, match="max_size"):
        store["k"] = b"x" * 1001
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_two_gzip_members_read_as_one_value(tmp_path: Path) -> None:
    store = FileSystemRawBackend(tmp_path, codec=Gzip())
    store["k"] = b"placeholder"
    Path(store.path("k")).write_bytes(gzip.compress(b"ab") + gzip.compress(b"cd"))  # cat a.gz b.gz
    assert store["k"] == b"abcd"


def test_the_stored_frames_are_standard_zstd_and_gzip(tmp_path: Path) -> None:
    zstd = FileSystemJsonBackend(tmp_path / "z", codec=Zstd(threshold=0))
    zstd["k"] = BIG
    assert zstandard.ZstdDecompressor().decompress(_file(zstd, "k")) == JsonCodec().encode(BIG)
    gz = FileSystemJsonBackend(tmp_path / "g", codec=Gzip(threshold=0))
    gz["k"] = BIG
    assert gzip.decompress(_file(gz, "k")) == JsonCodec().encode(BIG)


# -- encryption: authenticated, rotated, never a key in sight -----------------------------------


def _key_forms(key: str) -> list[str]:
    """Every way a key could show: its base64 text, its bytes as repr, hex and latin-1 text."""
    raw = base64.urlsafe_b64decode(key)
    return [key, key[:16], repr(raw)[2:30], raw.hex(), raw.hex()[:16], raw.decode("latin-1")[:12]]


def _everything_said(exc: BaseException) -> str:
    """What an error says anywhere: message, repr, every exception of its chain as printed."""
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


def test_values_are_sealed_and_read_back_with_any_key_of_the_list(tmp_path: Path) -> None:
    new, old = Encrypt.generate_key(), Encrypt.generate_key()
    before = FileSystemJsonBackend(tmp_path, codec=Encrypt(old))
    before["k"] = {"secret": "plain text"}
    assert _file(before, "k").startswith(b"BKE1") and b"plain text" not in _file(before, "k")
    rotated = FileSystemJsonBackend(tmp_path, codec=Encrypt([new, old]))
    assert rotated["k"] == {"secret": "plain text"}
    rotated["k2"] = [1]
    with pytest.raises(CorruptValueError, match="does not authenticate"):
        before["k2"]  # written with the new key only
    assert reencrypt(rotated) == 2
    only_new = FileSystemJsonBackend(tmp_path, codec=Encrypt(new))
    assert dict(only_new.items()) == {"k": {"secret": "plain text"}, "k2": [1]}


def test_reencrypt_is_a_call_over_a_store_kept_at_its_old_path_too() -> None:
    import backends.rotation

    assert backends.reencrypt is backends.rotation.reencrypt is reencrypt  # backends.codecs.reencrypt
    assert "reencrypt" not in backends.codecs.__all__  # the codecs import no store


def test_reencrypt_on_s3_is_conditional_and_moves_every_value_to_the_first_key(moto: S3Target) -> None:
    new, old = Encrypt.generate_key(), Encrypt.generate_key()
    options = {"prefix": "rotate", "client": moto.client}
    backends.S3JsonBackend(moto.bucket, codec=Encrypt(old), **options).dump_many(
        {f"k{i}": i for i in range(5)}
    )
    rotated = backends.S3JsonBackend(moto.bucket, codec=Encrypt([new, old]), **options)
    assert reencrypt(rotated) == 5
    assert dict(backends.S3JsonBackend(moto.bucket, codec=Encrypt(new), **options).items()) == {
        f"k{i}": i for i in range(5)
    }


def _sealed_file(tmp_path: Path) -> tuple[FileSystemRawBackend, bytes]:
    store = FileSystemRawBackend(tmp_path, codec=Encrypt(CODEC_KEYS))
    store["k"] = b"the value"
    return store, _file(store, "k")


@pytest.mark.parametrize(
    "spoil",
    [
        lambda data: data[:-1],  # truncated
        lambda data: data[:10],  # cut inside the frame
        lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:],  # one bit flipped in the tag
        lambda data: data[:20] + bytes([data[20] ^ 0x80]) + data[21:],  # one bit of the ciphertext
        lambda data: b"BKE2" + data[4:],  # another version
        lambda data: b"the value",  # a plain value another program wrote
        lambda data: b"",  # an empty file
    ],
    ids=["truncated", "cut", "tag", "ciphertext", "version", "plain", "empty"],
)
def test_data_that_does_not_authenticate_is_a_corrupt_value_never_garbage(tmp_path: Path, spoil: Any) -> None:
    store, sealed = _sealed_file(tmp_path)
    Path(store.path("k")).write_bytes(spoil(sealed))
    with pytest.raises(CorruptValueError) as caught:
        store.load("k")
    said = _everything_said(caught.value)
    assert not any(form in said for key in CODEC_KEYS for form in _key_forms(key))


def test_no_error_path_of_the_encrypted_codec_shows_a_key(
    tmp_path: Path, sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATTACKS.md class 10: wrong key, tampered, rotated out, bad key argument, key in a URL."""
    planted = Encrypt.generate_key()
    other = Encrypt.generate_key()
    errors: list[BaseException] = []
    store = FileSystemJsonBackend(tmp_path, codec=Encrypt([planted]))
    store["k"] = {"v": 1}

    def caught(action: Any) -> None:
        try:
            action()
        except Exception as exc:
            errors.append(exc)
        else:
            raise AssertionError("no error")

    caught(lambda: FileSystemJsonBackend(tmp_path, codec=Encrypt(other))["k"])  # wrong key / rotated out
    Path(store.path("k")).write_bytes(_file(store, "k")[:-2])
    caught(lambda: store["k"])  # tampered
    caught(lambda: store.load_many(["k"]))
    caught(lambda: dict(store.items()))
    caught(lambda: pickle.dumps(store))  # no key in a pickle: refused
    for bad in (planted[:-2], planted + "AA", planted.encode()[:31], [planted, 5], "!" + planted[1:]):
        caught(lambda bad=bad: Encrypt(bad))  # bad key arguments: they hold most of the key
    monkeypatch.setenv("BACKENDS_KEY", planted[:-3])
    caught(lambda: backends.open(f"file://{tmp_path}?encrypt=1"))
    for url in (f"?key={planted}", f"?encryption_key={planted}", f"?encrypt={planted}", f"?KEYS={planted}"):
        caught(lambda url=url: backends.open(f"file://{tmp_path}{url}"))
    said = "\n".join(_everything_said(exc) for exc in errors)
    said += "\n" + repr(store) + repr(store.codec) + repr(Encrypt([planted, other]))
    said += "\n" + "\n".join(map(repr, sink.events))
    assert len(errors) >= 13
    for key in (planted, other):
        for form in _key_forms(key):
            assert form not in said, form


def test_an_encrypted_value_is_32_bytes_longer_and_never_empty(tmp_path: Path) -> None:
    store = FileSystemRawBackend(tmp_path, codec=Encrypt(CODEC_KEYS))
    store["empty"] = b""
    assert len(_file(store, "empty")) == 4 + 12 + 16
    assert store["empty"] == b""
    store["k"] = b"x" * 100
    assert len(_file(store, "k")) == 100 + 32


def test_the_keys_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKENDS_KEY", f"{CODEC_KEYS[1]}, {CODEC_KEYS[0]}")
    store = backends.open(f"file://{tmp_path}?encrypt=1&compress=zstd&compress_threshold=0")
    assert repr(store.codec) == "JsonCodec() | Zstd(threshold=0, level=3) | Encrypt(keys=2)"
    store["k"] = BIG
    assert FileSystemJsonBackend(tmp_path, codec=Zstd() | Encrypt(CODEC_KEYS[1]))["k"] == BIG
    monkeypatch.delenv("BACKENDS_KEY")
    with pytest.raises(ValueError, match="BACKENDS_KEY holds no key"):
        backends.open(f"file://{tmp_path}?encrypt=1")
    assert backends.open(f"file://{tmp_path}?encrypt=0").codec is FileSystemJsonBackend.codec


# -- ATTACKS.md class 5: bad input in every codec option, refused before any I/O ----------------

_NOT_A_SIZE = [-1, math.nan, math.inf, 1e300, 2**41, True, "10", None, 1.5]


@pytest.mark.parametrize("layer", [Zstd, Gzip])
@pytest.mark.parametrize("option", ["threshold", "max_size"])
@pytest.mark.parametrize("value", _NOT_A_SIZE, ids=repr)
def test_a_bad_size_is_refused_naming_the_option(layer: Any, option: str, value: Any) -> None:
    if option == "threshold" and value is None:
        value = []
    with pytest.raises((TypeError, ValueError), match=option):
        layer(**{option: value})


@pytest.mark.parametrize(
    ("layer", "level"),
    [
        (Zstd, 0),
        (Zstd, 23),
        (Zstd, -1),
        (Gzip, 0),
        (Gzip, 10),
        (Zstd, 2.0),
        (Gzip, True),
        (Zstd, "3"),
        (Gzip, math.nan),
    ],
    ids=repr,
)
def test_a_level_out_of_range_is_refused_naming_it(layer: Any, level: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="level"):
        layer(level=level)


@pytest.mark.parametrize(
    "keys",
    [
        [],
        (),
        b"",
        b"x" * 31,
        b"x" * 33,
        "",
        "short",
        5,
        None,
        [5],
        [b"x" * 32, None],
        {"k": 1},
        3.5,
        [b"x" * 16],
    ],
    ids=repr,
)
def test_bad_keys_are_refused_naming_the_argument(keys: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="keys"):
        Encrypt(keys)


class NotAModel:
    """A class that is no pydantic model, dataclass or msgspec struct."""


@pytest.mark.parametrize("model", [int, str, dict, NotAModel, Point(x=1, label="a"), "Point", None, 5])
def test_a_model_that_is_not_a_model_is_refused(model: Any) -> None:
    with pytest.raises(TypeError, match="model"):
        Typed(model)


@pytest.mark.parametrize(
    "codec",
    [5, "zstd", JsonCodec, Zstd, object(), [Zstd()]],
    ids=["int", "str", "JsonCodec-class", "Zstd-class", "object", "list"],  # stable across xdist workers
)
def test_a_codec_argument_of_the_wrong_kind_is_refused_before_any_io(tmp_path: Path, codec: Any) -> None:
    for build in (
        lambda: FileSystemJsonBackend(tmp_path / "f", codec=codec),
        lambda: backends.SqliteJsonBackend(tmp_path / "s" / "kv.db", codec=codec),
        lambda: backends.JsonCache(tmp_path / "c", codec=codec),
        lambda: backends.MemoryCache(codec=codec),
        lambda: backends.VolatileBackend(codec=codec),
        lambda: backends.RedisJsonBackend("redis://127.0.0.1:1/0", codec=codec),
        lambda: backends.S3JsonBackend("bucket", codec=codec),
    ):
        with pytest.raises(TypeError, match="codec"):
            build()
    assert list(tmp_path.iterdir()) == []


def test_layers_on_a_store_of_objects_are_refused() -> None:
    with pytest.raises(TypeError, match="holds objects"):
        backends.VolatileBackend(codec=Zstd())
    assert backends.VolatileBackend(codec=JsonCodec() | Zstd(0)).dump("k", {"a": 1})


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("compress=lz4", "compress"),
        ("compress=zstd&compress_threshold=-1", "threshold"),
        ("compress=zstd&compress_threshold=nan", "compress_threshold"),
        ("compress=zstd&compress_threshold=1e9", "compress_threshold"),
        ("compress=gzip&compress_threshold=99999999999999999999", "compress_threshold"),
        ("compress=gzip&compress_level=10", "level"),
        ("compress=zstd&compress_level=%0A3", "compress_level"),
        ("compress_threshold=5", "compress_threshold"),
        ("compress=zstd%0D%0AX-Evil:1", "compress"),
        ("encrypt=maybe", "encrypt"),
        ("encrypt=é", "encrypt"),
    ],
)
def test_a_bad_codec_parameter_in_a_url_is_refused_naming_it(tmp_path: Path, query: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        backends.open(f"file://{tmp_path}/x?{query}")
    with pytest.raises(ValueError, match=named):
        backends.open(f"sqlite://{tmp_path}/kv.db?{query}")
    assert list(tmp_path.iterdir()) == []


def test_a_key_bearing_url_parameter_is_refused_by_name_without_its_value(tmp_path: Path) -> None:
    planted = Encrypt.generate_key()
    for name in ("key", "keys", "encryption_key", "Encryption_Key", "backends_key", "secret"):
        for url in (f"file://{tmp_path}?{name}={planted}", f"cache://{tmp_path}?{name}={planted}::memory://"):
            with pytest.raises(ValueError, match="BACKENDS_KEY") as caught:
                backends.open(url)
            assert planted not in _everything_said(caught.value)
            assert planted[:10] not in _everything_said(caught.value)


# -- ATTACKS.md class 2: foreign and plain values in a compressed or encrypted store --------------


def test_foreign_values_in_an_encrypted_redis_store_get_one_typed_answer(redis: str) -> None:
    import redis as redis_py

    store = backends.RedisJsonBackend(redis, prefix="t/sealed", codec=Encrypt(CODEC_KEYS))
    store.dump_many({"plain": 0, "gzip": 0, "ours": {"a": 1}})
    client = redis_py.Redis.from_url(redis)
    client.set("t/sealed:plain", b'{"a": 2}')  # another program rewrote them, plain
    client.set("t/sealed:gzip", gzip.compress(b"[1]"))
    try:
        for key in ("plain", "gzip"):  # read, never returned as they are
            with pytest.raises(CorruptValueError, match="not encrypted by this codec"):
                store[key]
            assert key in store
        with pytest.raises(CorruptValueError):
            store.load_many(["ours", "plain"])
        assert store["ours"] == {"a": 1}
    finally:
        store.clear()
        store.close()


def test_foreign_values_in_a_compressed_store_read_as_they_are_or_as_their_frames(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path, codec=Zstd())
    store["ours"] = BIG
    Path(tmp_path / "theirs").write_bytes(b'{"plain": true}')
    Path(tmp_path / "zipped").write_bytes(gzip.compress(b'{"gz": true}'))
    Path(tmp_path / "garbage").write_bytes(GZIP_MAGIC + b"\x00garbage")
    assert store["theirs"] == {"plain": True} and store["zipped"] == {"gz": True}
    with pytest.raises(CorruptValueError, match="gzip"):
        store["garbage"]


# -- ATTACKS.md class 4: hostile text in validation errors, up to the command line ---------------


def test_typed_validation_errors_name_fields_never_values_on_one_line(tmp_path: Path) -> None:
    store = FileSystemBackend(tmp_path, codec=Typed(Point))
    store["k"] = Point(x=1, label="a")
    hostile = '{"x": "\\u001b]0;pwned\\u0007\\n\\ud800 SECRET-VALUE", "label": 5, "\\u001b[2J": 1}'
    Path(store.path("k")).write_text(hostile)
    with pytest.raises(CorruptValueError) as caught:
        store["k"]
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and "\x07" not in message
    assert "SECRET-VALUE" not in message  # the field and the rule, never the stored value
    assert "x:" in message and "label:" in message
    message.encode("utf-8")  # no lone surrogate
    spots = backends.SqliteBackend(tmp_path / "kv.db", codec=Typed(Spot))
    spots["k"] = Spot(x=1, label="a")
    spots.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "kv.db") as db:
        db.execute("UPDATE kv SET data = ?", ('{"x": 1, "label": 1, "\u001b[2J\\n": 2}'.encode(),))
    spots = backends.SqliteBackend(tmp_path / "kv.db", codec=Typed(Spot))
    with pytest.raises(CorruptValueError) as caught:
        spots["k"]
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)
    spots.close()


def test_hostile_stored_values_reach_the_command_line_escaped_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.cli import main

    monkeypatch.setenv("BACKENDS_KEY", CODEC_KEYS[0])
    store = FileSystemJsonBackend(tmp_path, codec=Encrypt(CODEC_KEYS[0]))
    store["k"] = 1
    Path(tmp_path / "plain").write_bytes(b'"\x1b]0;pwned\x07"')  # a foreign plain value
    assert main(["get", f"file://{tmp_path}?encrypt=1", "plain"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and err.count("\n") == 1 and "not encrypted by this codec" in err
    assert main(["ls", f"file://{tmp_path}?encrypt=1"]) in (0, 1)
    out = capsys.readouterr().out
    assert "\x1b" not in out


# -- ATTACKS.md class 9: fork after first use, threads sharing one compressor ----------------------


def test_a_forked_child_compresses_with_its_own_context(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path, codec=Zstd(threshold=0) | Encrypt(CODEC_KEYS))
    store["parent"] = BIG  # the zstd context exists before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            store["child"] = {**BIG, "by": "child"}
            ok = store["parent"] == BIG
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert store["child"] == {**BIG, "by": "child"}
    store["parent2"] = BIG


def test_threads_sharing_one_compressor_get_their_own_values_back(tmp_path: Path) -> None:
    codec = JsonCodec() | Zstd(threshold=0, level=5)
    store = backends.VolatileBackend(codec=codec)
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        barrier.wait()
        try:
            for i in range(60):
                value = {"worker": worker, "i": i, "pad": "x" * (i * 37 % 900)}
                store[f"{worker}/{i}"] = value
                assert store[f"{worker}/{i}"] == value
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(store) == 480


# -- through S3, tiers, the async twin and cp ---------------------------------------------------


def test_s3_never_gzips_twice_and_says_its_objects_are_octet_streams(moto: S3Target) -> None:
    options = {"prefix": "assets", "client": moto.client}
    plain = backends.S3RawBackend(moto.bucket, **options)
    plain["old.js"] = b"console.log(1);" * 200  # S3's own Content-Encoding: gzip
    squeezed = backends.S3RawBackend(moto.bucket, codec=Zstd(threshold=64), **options)
    squeezed["new.js"] = b"console.log(2);" * 200
    head = moto.client.head_object(Bucket=moto.bucket, Key="assets/new.js")
    body = moto.client.get_object(Bucket=moto.bucket, Key="assets/new.js")["Body"].read()
    assert "ContentEncoding" not in head and head["ContentType"] == "application/octet-stream"
    assert body.startswith(ZSTD_MAGIC)
    assert squeezed["old.js"] == b"console.log(1);" * 200  # S3's gzip undone by the store, once
    assert squeezed["new.js"] == b"console.log(2);" * 200
    found = squeezed.stat("new.js")
    assert found is not None and found.size == len(body)  # stored bytes
    assert backends.S3JsonBackend(moto.bucket, codec=Encrypt(CODEC_KEYS), **options).codec.content_type == (
        "application/octet-stream"
    )


def test_etags_if_match_and_load_if_changed_work_through_a_codec(moto: S3Target) -> None:
    store = backends.S3JsonBackend(
        moto.bucket, prefix="tags", client=moto.client, codec=Zstd(0) | Encrypt(CODEC_KEYS)
    )
    store["k"] = BIG
    loaded = store.load_if_changed("k")
    assert isinstance(loaded, Versioned) and loaded.value == BIG and loaded.etag
    assert store.load_if_changed("k", loaded.etag) is UNCHANGED
    assert store.dump("k", [1], if_match='"not-the-etag"') is False
    assert store.dump("k", [2], if_match=loaded.etag) is True
    assert store["k"] == [2]
    assert store.dump("k", [3], if_absent=True) is False


def test_a_tier_revalidates_through_codecs_and_its_cache_keeps_its_own(
    moto: S3Target, tmp_path: Path
) -> None:
    origin = backends.S3JsonBackend(moto.bucket, prefix="tier", client=moto.client, codec=Encrypt(CODEC_KEYS))
    clock = FrozenClock()
    cache = backends.JsonCache(tmp_path, timeout=60, clock=clock, codec=Zstd(threshold=64))
    tier = backends.TieredBackend(cache, origin)
    origin["k"] = BIG
    assert tier["k"] == BIG
    assert Path(cache.path("k")).read_bytes()[:4] == ZSTD_MAGIC  # the cache's own codec, not the origin's
    clock.advance(600)  # expired: the next load revalidates with the ETag
    assert tier["k"] == BIG
    assert tier.stats.revalidations == 1  # a 304 through the encrypted origin: its ETag held


def test_the_async_twin_loads_and_dumps_through_the_codec(tmp_path: Path) -> None:
    import asyncio

    store = FileSystemBackend(tmp_path, codec=Typed(Point) | Encrypt(CODEC_KEYS))

    async def run() -> Any:
        twin = store.aio()
        await twin.dump("k", Point(x=1, label="a"))
        with pytest.raises(SerializationError):
            await twin.dump("bad", {"x": 1})  # a dict is no Point
        return await twin.load("k")

    assert asyncio.run(run()) == Point(x=1, label="a")
    assert not Path(tmp_path / "bad").exists()


def test_cp_copies_into_and_out_of_compressed_and_encrypted_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backends.cli import main

    monkeypatch.setenv("BACKENDS_KEY", CODEC_KEYS[0])
    FileSystemJsonBackend(tmp_path / "a").dump_many({"k1": BIG, "k2": [1]})
    FileSystemRawBackend(tmp_path / "r").dump("big.bin", os.urandom(3 << 20))  # streamed by cp
    assert (
        main(
            [
                "cp",
                f"file://{tmp_path}/a",
                f"file://{tmp_path}/b?compress=zstd&compress_threshold=64&encrypt=1",
            ]
        )
        == 0
    )
    assert main(["cp", f"file://{tmp_path}/b?encrypt=1", f"file://{tmp_path}/c"]) == 0
    assert main(["cp", f"file://{tmp_path}/r?format=raw", f"file://{tmp_path}/s?format=raw&encrypt=1"]) == 0
    capsys.readouterr()
    assert dict(FileSystemJsonBackend(tmp_path / "c").items()) == {"k1": BIG, "k2": [1]}
    assert Path(tmp_path / "b" / "k1").read_bytes().startswith(b"BKE1")
    sealed = FileSystemRawBackend(tmp_path / "s", codec=Encrypt(CODEC_KEYS[0]))
    assert Path(tmp_path / "s" / "big.bin").read_bytes().startswith(b"BKE1")  # never streamed past the codec
    assert sealed["big.bin"] == FileSystemRawBackend(tmp_path / "r")["big.bin"]
    with sealed.open("big.bin") as reader:
        assert reader.read(10) == FileSystemRawBackend(tmp_path / "r")["big.bin"][:10]


def test_s3_streaming_goes_through_the_codec(moto: S3Target, tmp_path: Path) -> None:
    store = backends.S3RawBackend(moto.bucket, prefix="stream", client=moto.client, codec=Encrypt(CODEC_KEYS))
    payload = os.urandom(1 << 20)
    assert store.dump_file("big.css", io.BytesIO(payload)) is True
    stored = moto.client.get_object(Bucket=moto.bucket, Key="stream/big.css")
    assert stored["Body"].read().startswith(b"BKE1") and "ContentEncoding" not in stored
    assert store.dump_file("big.css", io.BytesIO(b"other"), if_absent=True) is False
    assert store.load_file("big.css", tmp_path / "out") is True
    assert (tmp_path / "out").read_bytes() == payload
    assert store.load_file("absent", tmp_path / "none") is False and not (tmp_path / "none").exists()
