"""Codecs (#27): every store through compression, encryption and typed models (the contract
suite and the parity machine on each codec case), and what each codec promises."""

from __future__ import annotations

import pytest

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

import base64
import gzip
import io
import math
import os
import pickle
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import zstandard
from conftest import CODEC_KEYS, Pin, Point, Spot
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
    RawCodec,
    SerializationError,
    Typed,
    Zstd,
)
from backends.base import MISSING, UNCHANGED, Versioned
from backends.codecs import reencrypt
from backends.codecs.compress import GZIP_MAGIC, ZSTD_MAGIC

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
        except Exception as exc:  # noqa: BLE001 - every error is scanned
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
