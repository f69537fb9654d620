"""Example tests, one per line of ../shared/CONTRACT.md, run on every backend case."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, KeysView
from typing import Any

import pytest
from conftest import BackendCase

import backends
from backends import BaseBackend

Sample = Callable[[int], Any]


# -- Interface ------------------------------------------------------------------


def test_load_returns_the_stored_value_or_default(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    assert backend.load("k") is None
    assert backend.load("k", "fallback") == "fallback"
    backend.dump("k", sample(1))
    assert backend.load("k", "fallback") == sample(1)


def test_dump_stores_the_value_and_returns_true(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    assert backend.dump("k", sample(1)) is True
    assert backend.dump("k", sample(2)) is True
    assert backend["k"] == sample(2)


def test_delete_says_whether_the_key_existed(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    backend.dump("k", sample(1))
    assert backend.delete("k") is True
    assert backend.delete("k") is False
    assert "k" not in backend


def test_len_counts_present_keys(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    assert len(backend) == 0
    backend.dump_many({f"k{i}": sample(i) for i in range(7)})
    backend.dump("k0", sample(9))
    assert len(backend) == 7


def test_in_never_loads_the_value(
    backend: BaseBackend[Any, Any], sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.dump("k", sample(1))

    def no_load(key: str) -> Any:
        raise AssertionError("`in` loaded the value")

    monkeypatch.setattr(backend, "_load", no_load)
    assert "k" in backend
    assert "other" not in backend


def test_iter_and_keys_are_lazy_and_set_like(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    backend.dump("a", sample(1))  # before "a/b": SeaweedFS can lose one of the two written at once
    backend.dump_many({"a/b": sample(2), "c": sample(3)})
    iterator = iter(backend)
    assert next(iterator) in {"a", "a/b", "c"}  # a generator, not a built list
    keys = backend.keys()
    assert isinstance(keys, KeysView)
    assert keys == {"a", "a/b", "c"}
    assert keys & {"a", "zzz"} == {"a"}
    assert keys - {"a"} == {"a/b", "c"}
    assert "a/b" in keys


def test_items_gives_every_pair(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    data = {f"dir/{i}": sample(i) for i in range(30)}
    backend.dump_many(data)
    assert dict(backend.items()) == data
    assert sorted(map(str, backend.values())) == sorted(map(str, data.values()))
    assert ("dir/3", sample(3)) in backend.items()


def test_getitem_setitem_delitem_work_as_a_dict(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    with pytest.raises(KeyError):
        backend["missing"]
    with pytest.raises(KeyError):
        del backend["missing"]
    backend["k"] = sample(1)
    assert backend["k"] == sample(1)
    del backend["k"]
    assert "k" not in backend


def test_clear_removes_every_key(case: BackendCase, backend: BaseBackend[Any, Any], sample: Sample) -> None:
    # Past one 1000-key batch locally; S3 paging is covered by the request-count tests.
    count = 1500 if case.server is None else 30
    backend.dump_many({f"k/{i}": sample(i) for i in range(count)})
    backend.dump("k", sample(0))
    backend.clear()
    assert len(backend) == 0
    assert list(backend) == []
    assert not backend


def test_bulk_calls_match_the_loops(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    backend.dump_many((f"k{i}", sample(i)) for i in range(5))
    assert backend.load_many(["k0", "k4", "absent", "k0"]) == {"k0": sample(0), "k4": sample(4)}
    assert backend.delete_many(["k0", "k1", "absent"]) == 2
    assert set(backend) == {"k2", "k3", "k4"}
    with pytest.raises(TypeError):
        backend.load_many("k2")  # one str is not an iterable of keys


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


def test_dict_methods_behave_as_for_a_dict(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    assert backend.setdefault("k", sample(1)) == sample(1)
    assert backend.setdefault("k", sample(2)) == sample(1)
    assert backend.get("k") == sample(1)
    assert backend.get("nope", 5) == 5
    backend.update({"a": sample(3)}, b=sample(4))
    assert backend.pop("a") == sample(3)
    assert backend.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        backend.pop("a")
    popped = {backend.popitem()[0], backend.popitem()[0]}
    assert popped == {"k", "b"}
    with pytest.raises(KeyError):
        backend.popitem()


# -- Conditional writes -----------------------------------------------------------


def test_if_absent_writes_only_a_new_key(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    assert backend.dump("k", sample(1), if_absent=True) is True
    assert backend.dump("k", sample(2), if_absent=True) is False
    assert backend["k"] == sample(1)


# -- Keys -------------------------------------------------------------------------


def fit(key: str, limit: int) -> str:
    """``key`` cut to at most ``limit`` UTF-8 bytes, still a valid key."""
    return key.encode()[:limit].decode(errors="ignore").strip("/")


@pytest.mark.parametrize("key", ["a", "a/b", "x" * 1024, "é" * 512, ".hidden", "...", "a b", "~", "%2F"])
def test_valid_keys_are_accepted(
    case: BackendCase, backend: BaseBackend[Any, Any], sample: Sample, key: str
) -> None:
    if len(key.encode()) > backend.max_key_bytes:  # an S3 prefix takes part of S3's 1024 bytes
        with pytest.raises(backends.InvalidKeyError):
            backend.dump(key, sample(1))
        key = fit(key, backend.max_key_bytes)
    if case.segment_limit and len(key.encode()) > case.segment_limit:
        with pytest.raises(backends.InvalidKeyError, match="refuses this key"):
            backend.dump(key, sample(1))
        key = fit("/".join(key[i : i + 100] for i in range(0, len(key), 100)), backend.max_key_bytes)
    backend.dump(key, sample(1))
    assert backend[key] == sample(1)
    assert list(backend) == [key]


@pytest.mark.parametrize(
    "key", ["", "a/", "/a", "a//b", ".", "a/..", "a\x00", "a\x7f", "x" * 1025, 1, None, b"k"]
)
def test_invalid_keys_raise_invalid_key_error(backend: BaseBackend[Any, Any], key: Any) -> None:
    with pytest.raises(backends.InvalidKeyError) as info:
        backend.load(key)
    assert isinstance(info.value, ValueError)
    assert repr(backend) in str(info.value)


def test_keys_are_case_sensitive_and_never_normalised(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    backend.dump(nfc, sample(1))
    backend.dump(nfd, sample(2))
    backend.dump("CAFE", sample(3))
    backend.dump("cafe", sample(4))
    assert backend[nfc] == sample(1)
    assert backend[nfd] == sample(2)
    assert set(backend) == {nfc, nfd, "CAFE", "cafe"}


def test_a_and_a_slash_b_coexist(backend: BaseBackend[Any, Any], sample: Sample) -> None:
    backend.dump("a", sample(1))
    backend.dump("a/b", sample(2))
    backend.dump("a/b/c", sample(3))
    assert (backend["a"], backend["a/b"], backend["a/b/c"]) == (sample(1), sample(2), sample(3))
    backend.delete("a/b")
    assert set(backend) == {"a", "a/b/c"}


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


def test_equality_is_same_store_never_a_full_read(case: BackendCase, tmp_path: Any) -> None:
    one, two = case.make(tmp_path / "x"), case.make(tmp_path / "x")
    other = case.make(tmp_path / "y")
    assert (one == two) is case.shared  # two views of one folder or prefix; two memories differ
    assert one == one  # noqa: PLR0124 - __eq__ is ours, not identity
    assert one != other
    assert one != {}
    assert repr(one).startswith(type(one).__name__ + "(")
    if case.shared:
        assert hash(one) == hash(two)


def test_a_pickled_backend_sees_the_same_data(case: BackendCase, tmp_path: Any, sample: Sample) -> None:
    backend = case.make(tmp_path / "store")
    if case.server is not None:
        with pytest.raises(TypeError, match="one per process"):
            pickle.dumps(backend)
        return
    backend.dump("k", sample(1))
    copy = pickle.loads(pickle.dumps(backend))
    assert copy["k"] == sample(1)
    copy.dump("k2", sample(2))
    assert ("k2" in backend) is case.on_disk  # memory is copied, a folder is shared
