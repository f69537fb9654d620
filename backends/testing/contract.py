"""The contract tests, as a pytest class any store's test suite can subclass.

::

    from backends.testing import JSON, ContractTests, StoreCase

    class TestMyStore(ContractTests):
        case = StoreCase("my-store", lambda folder: MyJsonStore(folder / "db"), family=JSON, on_disk=True)

Every test of the class then runs on the store: one example-based test per
line of the contract, and the parity state machine against a dict. A
parametrized suite overrides the ``store_case`` fixture instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, KeysView
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..base import BaseBackend
from ..errors import InvalidKeyError, KeyConflictError
from ..hooks import StoreHooks
from .case import StoreCase
from .parity import check_parity

__all__ = ["ContractTests", "Sample", "answers_in_itself"]

#: a valid value of the store's family, distinct for each seed
Sample = Callable[[int], Any]


def answers_in_itself(backend: BaseBackend[Any, Any]) -> bool:
    """Whether the store says it answers ``in`` without reading the value.

    The capability flag is the optional ``_contains`` hook itself: a store
    that implements it answers ``in`` its own way, which must not load (the
    suite checks it); a store of the four required hooks keeps the default,
    which loads, and is no less correct.
    """
    return type(backend)._contains is not StoreHooks._contains


def _fit(key: str, limit: int) -> str:
    """``key`` cut to at most ``limit`` UTF-8 bytes, still a valid key."""
    return key.encode()[:limit].decode(errors="ignore").strip("/")


class ContractTests:
    """Subclass it (named ``Test...``) and set :attr:`case`, or override the ``store_case`` fixture."""

    #: the store under test
    case: ClassVar[StoreCase | None] = None

    @pytest.fixture
    def store_case(self) -> StoreCase:
        if self.case is None:
            raise TypeError(
                f"{type(self).__name__}: set case = StoreCase(...) or override the store_case fixture"
            )
        return self.case

    @pytest.fixture
    def backend(self, store_case: StoreCase, tmp_path: Path) -> Iterator[BaseBackend[Any, Any]]:
        with store_case.opened(tmp_path / "store") as store:
            yield store

    @pytest.fixture
    def sample(self, store_case: StoreCase) -> Sample:
        return store_case.family.sample

    def test_behaves_like_a_dict(self, store_case: StoreCase, tmp_path: Path) -> None:
        """The parity state machine: random operations, compared with a dict after every step."""
        check_parity(store_case, tmp_path)

    def test_load_returns_the_stored_value_or_default(
        self, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        assert backend.load("k") is None
        assert backend.load("k", "fallback") == "fallback"
        backend.dump("k", sample(1))
        assert backend.load("k", "fallback") == sample(1)

    def test_dump_stores_the_value_and_returns_true(
        self, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        assert backend.dump("k", sample(1)) is True
        assert backend.dump("k", sample(2)) is True
        assert backend["k"] == sample(2)

    def test_delete_says_whether_the_key_existed(
        self, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        backend.dump("k", sample(1))
        assert backend.delete("k") is True
        assert backend.delete("k") is False
        assert "k" not in backend

    def test_len_counts_present_keys(self, backend: BaseBackend[Any, Any], sample: Sample) -> None:
        assert len(backend) == 0
        backend.dump_many({f"k{i}": sample(i) for i in range(7)})
        backend.dump("k0", sample(9))
        assert len(backend) == 7

    def test_in_never_loads_the_value(
        self, backend: BaseBackend[Any, Any], sample: Sample, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where the store says it answers ``in`` without reading (:func:`answers_in_itself`)."""
        backend.dump("k", sample(1))
        assert "k" in backend
        if not answers_in_itself(backend):
            return  # the default _contains loads, correctly: the contract's "where the store can"

        def no_load(key: str) -> Any:
            raise AssertionError("`in` loaded the value")

        monkeypatch.setattr(backend, "_load", no_load)
        assert "k" in backend
        assert "other" not in backend

    def test_iter_and_keys_are_lazy_and_set_like(
        self, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        backend.dump("a", sample(1))  # before "a/b": SeaweedFS can lose one of the two written at once
        backend.dump_many({"d/b": sample(2), "c": sample(3)})
        iterator = iter(backend)
        assert next(iterator) in {"a", "d/b", "c"}  # a generator, not a built list
        keys = backend.keys()
        assert isinstance(keys, KeysView)
        assert keys == {"a", "d/b", "c"}
        assert keys & {"a", "zzz"} == {"a"}
        assert keys - {"a"} == {"d/b", "c"}
        assert "d/b" in keys

    def test_items_gives_every_pair(self, backend: BaseBackend[Any, Any], sample: Sample) -> None:
        data = {f"dir/{i}": sample(i) for i in range(30)}
        backend.dump_many(data)
        assert dict(backend.items()) == data
        assert sorted(map(str, backend.values())) == sorted(map(str, data.values()))
        assert ("dir/3", sample(3)) in backend.items()

    def test_getitem_setitem_delitem_work_as_a_dict(
        self, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        with pytest.raises(KeyError):
            backend["missing"]
        with pytest.raises(KeyError):
            del backend["missing"]
        backend["k"] = sample(1)
        assert backend["k"] == sample(1)
        del backend["k"]
        assert "k" not in backend

    def test_clear_removes_every_key(
        self, store_case: StoreCase, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        # Past one 1000-key batch locally; S3 paging is covered by the request-count tests.
        count = 1500 if not store_case.remote else 30
        backend.dump_many({f"k/{i}": sample(i) for i in range(count)})
        backend.dump("j", sample(0))
        backend.clear()
        assert len(backend) == 0
        assert list(backend) == []
        assert not backend

    def test_bulk_calls_match_the_loops(self, backend: BaseBackend[Any, Any], sample: Sample) -> None:
        backend.dump_many((f"k{i}", sample(i)) for i in range(5))
        assert backend.load_many(["k0", "k4", "absent", "k0"]) == {"k0": sample(0), "k4": sample(4)}
        assert backend.delete_many(["k0", "k1", "absent"]) == 2
        assert set(backend) == {"k2", "k3", "k4"}
        with pytest.raises(TypeError):
            backend.load_many("k2")  # one str is not an iterable of keys

    def test_dict_methods_behave_as_for_a_dict(self, backend: BaseBackend[Any, Any], sample: Sample) -> None:
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

    def test_if_absent_writes_only_a_new_key(self, backend: BaseBackend[Any, Any], sample: Sample) -> None:
        assert backend.dump("k", sample(1), if_absent=True) is True
        assert backend.dump("k", sample(2), if_absent=True) is False
        assert backend["k"] == sample(1)

    @pytest.mark.parametrize("key", ["a", "a/b", "x" * 1024, "é" * 512, ".hidden", "...", "a b", "~", "%2F"])
    def test_valid_keys_are_accepted(
        self, store_case: StoreCase, backend: BaseBackend[Any, Any], sample: Sample, key: str
    ) -> None:
        if len(key.encode()) > backend.max_key_bytes:  # an S3 prefix takes part of S3's 1024 bytes
            with pytest.raises(InvalidKeyError):
                backend.dump(key, sample(1))
            key = _fit(key, backend.max_key_bytes)
        if store_case.segment_limit and len(key.encode()) > store_case.segment_limit:
            with pytest.raises(InvalidKeyError, match="refuses this key"):
                backend.dump(key, sample(1))
            key = _fit("/".join(key[i : i + 100] for i in range(0, len(key), 100)), backend.max_key_bytes)
        if not store_case.holds(key):  # a plain folder tree: no file can have this name
            with pytest.raises(InvalidKeyError, match=r"reserved|file name"):
                backend.dump(key, sample(1))
            assert list(backend) == []
            return
        backend.dump(key, sample(1))
        assert backend[key] == sample(1)
        assert list(backend) == [key]

    @pytest.mark.parametrize(
        "key", ["", "a/", "/a", "a//b", ".", "a/..", "a\x00", "a\x7f", "x" * 1025, 1, None, b"k"]
    )
    def test_invalid_keys_raise_invalid_key_error(self, backend: BaseBackend[Any, Any], key: Any) -> None:
        with pytest.raises(InvalidKeyError) as info:
            backend.load(key)
        assert isinstance(info.value, ValueError)
        assert repr(backend) in str(info.value)

    def test_keys_are_case_sensitive_and_never_normalised(
        self, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        nfc, nfd = "caf\u00e9", "cafe\u0301"
        backend.dump(nfc, sample(1))
        backend.dump(nfd, sample(2))
        backend.dump("CAFE", sample(3))
        backend.dump("cafe", sample(4))
        assert backend[nfc] == sample(1)
        assert backend[nfd] == sample(2)
        assert set(backend) == {nfc, nfd, "CAFE", "cafe"}

    def test_a_and_a_slash_b_coexist(
        self, store_case: StoreCase, backend: BaseBackend[Any, Any], sample: Sample
    ) -> None:
        if store_case.tree:  # the declared limit of an ordinary folder tree, and nothing changed
            backend.dump("a", sample(1))
            with pytest.raises(KeyConflictError):
                backend.dump("a/b", sample(2))
            with pytest.raises(KeyConflictError):
                backend.dump_many({"c/d": sample(3), "c": sample(4)})
            assert set(backend) == {"a", "c/d"} and backend["a"] == sample(1)
            return
        backend.dump("a", sample(1))
        backend.dump("a/b", sample(2))
        backend.dump("a/b/c", sample(3))
        assert (backend["a"], backend["a/b"], backend["a/b/c"]) == (sample(1), sample(2), sample(3))
        backend.delete("a/b")
        assert set(backend) == {"a", "a/b/c"}

    def test_equality_is_same_store_never_a_full_read(self, store_case: StoreCase, tmp_path: Any) -> None:
        one, two = store_case.make(tmp_path / "x"), store_case.make(tmp_path / "x")
        other = store_case.make(tmp_path / "y")
        assert (one == two) is store_case.shared  # two views of one folder or prefix; two memories differ
        assert one == one  # noqa: PLR0124 - __eq__ is ours, not identity
        assert one != other
        assert one != {}
        assert repr(one).startswith(type(one).__name__ + "(")
        if store_case.shared:
            assert hash(one) == hash(two)

    def test_a_pickled_backend_sees_the_same_data(
        self, store_case: StoreCase, tmp_path: Any, sample: Sample
    ) -> None:
        backend = store_case.make(tmp_path / "store")
        if not store_case.pickles:
            with pytest.raises(TypeError, match="one per process"):
                pickle.dumps(backend)
            return
        backend.dump("k", sample(1))
        copy = pickle.loads(pickle.dumps(backend))
        assert copy["k"] == sample(1)
        copy.dump("k2", sample(2))
        assert ("k2" in backend) is (
            store_case.on_disk or store_case.remote
        )  # memory is copied, a folder is shared
