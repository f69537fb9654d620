"""The contract on every backend case: backends.testing.ContractTests (one example test per
line of ../shared/CONTRACT.md, and the parity machine), plus the family-specific examples."""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

import backends
from backends.base import MISSING, BaseBackend, Missing
from backends.codecs import JsonCodec
from backends.testing import JSON, ContractTests, StoreCase


class TestContract(ContractTests):
    """Every test of the public contract suite, on every registered case."""

    @pytest.fixture
    def store_case(self, case: StoreCase) -> StoreCase:
        return case


class FourHooks(BaseBackend[Any, bytes]):
    """A third-party store as README's "Writing a backend" allows: the four required hooks only."""

    codec = JsonCodec()

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def _load(self, key: str) -> bytes | Missing:
        return self._data.get(key, MISSING)

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        if if_absent and key in self._data:
            return False
        self._data[key] = data
        return True

    def _delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    def _iter_keys(self) -> Iterator[str]:
        return iter(list(self._data))


class TestAStoreOfTheFourRequiredHooksOnly(ContractTests):
    """Its ``in`` loads (the optional ``_contains`` has a default that does): still a correct store."""

    case = StoreCase("four-hooks", lambda folder: FourHooks(), family=JSON, examples=20)


# -- Interface ------------------------------------------------------------------


def test_a_stored_none_is_a_value() -> None:
    backend = backends.VolatileBackend()
    backend["k"] = None
    assert "k" in backend
    assert backend["k"] is None
    assert backend.load_many(["k"]) == {"k": None}


def test_a_stored_json_null_is_a_value(tmp_path: Any) -> None:
    backend = backends.FileSystemJsonBackend(tmp_path)
    backend["k"] = None
    assert "k" in backend
    assert backend["k"] is None
    assert backend.load("k", "default") is None


# -- Conditional writes -----------------------------------------------------------


# -- Keys -------------------------------------------------------------------------


# -- Values -----------------------------------------------------------------------


def test_volatile_loads_the_same_object() -> None:
    backend = backends.VolatileBackend()
    thing = object()
    backend["k"] = thing
    assert backend["k"] is thing


def test_text_is_kept_byte_exact(tmp_path: Any) -> None:
    backend = backends.FileSystemTextBackend(tmp_path)
    value = "line one\r\nline two\n\u00e9\u20ac\U0001f600\r"
    backend["k"] = value
    assert backend["k"] == value
    assert backend.path("k").read_bytes() == value.encode("utf-8")


def test_json_stores_a_tuple_as_a_list(tmp_path: Any) -> None:
    backend = backends.FileSystemJsonBackend(tmp_path)
    backend["k"] = {"t": (1, (2, 3))}
    assert backend["k"] == {"t": [1, [2, 3]]}


def test_json_keeps_numbers_and_unicode_exact(tmp_path: Any) -> None:
    backend = backends.FileSystemJsonBackend(tmp_path)
    value = {"int": 2**70, "float": 0.1, "neg0": -0.0, "bool": True, "s": "\u00e9\ud800"}
    backend["k"] = value
    loaded = backend["k"]
    assert loaded == value
    assert type(loaded["bool"]) is bool and type(loaded["int"]) is int
    assert math.copysign(1, loaded["neg0"]) == -1


def test_raw_loads_bytes(tmp_path: Any) -> None:
    backend = backends.FileSystemRawBackend(tmp_path)
    backend["a"] = bytearray(b"\x00\xff")
    backend["b"] = memoryview(b"xyz")
    assert backend["a"] == b"\x00\xff" and type(backend["a"]) is bytes
    assert backend["b"] == b"xyz"


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (backends.FileSystemJsonBackend, {1: "a"}),
        (backends.FileSystemJsonBackend, {"a": [{2: 3}]}),
        (backends.FileSystemJsonBackend, math.nan),
        (backends.FileSystemJsonBackend, [math.inf]),
        (backends.FileSystemJsonBackend, {"s": {1, 2}}),
        (backends.FileSystemTextBackend, "lone \ud800 surrogate"),
        (backends.FileSystemTextBackend, 42),
        (backends.FileSystemRawBackend, "text"),
    ],
)
def test_a_value_that_cannot_be_stored_exactly_raises_and_changes_nothing(
    tmp_path: Any, make: Any, value: Any
) -> None:
    backend = make(tmp_path)
    backend["k"] = (make is backends.FileSystemRawBackend and b"old") or "old"
    before = backend.path("k").read_bytes()
    with pytest.raises(backends.SerializationError) as info:
        backend["k"] = value
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is not None
    assert backend.path("k").read_bytes() == before
    with pytest.raises(backends.SerializationError):
        backend.dump_many({"new": "fine" if make is not backends.FileSystemRawBackend else b"ok", "k": value})
    assert "new" not in backend


# -- Failures ---------------------------------------------------------------------


def test_a_prefix_shortens_the_longest_key(moto: Any) -> None:
    assert backends.S3JsonBackend(moto.bucket, client=moto.client).max_key_bytes == 1024
    scoped = backends.S3JsonBackend(moto.bucket, prefix="app", client=moto.client)
    assert scoped.max_key_bytes == 1024 - len("app/")
    scoped.dump("x" * 1020, 1)
    assert list(scoped) == ["x" * 1020]


def test_errors_form_one_tree() -> None:
    assert issubclass(backends.InvalidKeyError, (backends.BackendError, ValueError))
    assert issubclass(backends.SerializationError, ValueError)
    for cls in (backends.StoreUnavailableError, backends.PermissionDeniedError, backends.BucketNotFoundError):
        assert issubclass(cls, backends.StoreError)
        assert issubclass(cls, OSError)
    assert issubclass(backends.LockTimeoutError, (backends.LockError, TimeoutError))


def test_an_error_says_what_failed_where_and_keeps_the_cause(tmp_path: Any) -> None:
    backend = backends.FileSystemJsonBackend(tmp_path)
    backend.path("k").write_bytes(b"{not json")
    with pytest.raises(backends.CorruptValueError) as info:
        backend["k"]
    message = str(info.value)
    assert message.startswith(f"FileSystemJsonBackend({str(tmp_path)!r}): load 'k': ")
    assert info.value.key == "k"
    assert info.value.__cause__ is not None
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is backends.CorruptValueError and str(again) == message


def test_stored_bytes_that_cannot_be_decoded_are_corrupt(tmp_path: Any) -> None:
    text = backends.FileSystemTextBackend(tmp_path)
    text.path("k").write_bytes(b"\xff\xfe")
    with pytest.raises(backends.CorruptValueError):
        text["k"]
    json_backend = backends.FileSystemJsonBackend(tmp_path)
    json_backend.path("n").write_bytes(b"[NaN]")
    with pytest.raises(backends.CorruptValueError):
        json_backend["n"]


# -- identity ---------------------------------------------------------------------


class LoadingContains(FourHooks):
    """A store that says it answers ``in`` itself (it implements ``_contains``), yet loads."""

    def _contains(self, key: str) -> bool:
        return self._load(key) is not MISSING


def test_the_suite_still_catches_a_contains_hook_that_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="loaded the value"):
        ContractTests().test_in_never_loads_the_value(LoadingContains(), JSON.sample, monkeypatch)
    ContractTests().test_in_never_loads_the_value(FourHooks(), JSON.sample, monkeypatch)  # the default may
