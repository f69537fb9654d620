"""``@cached`` (#26): keys, single flight, expiry, stale values, negative caching, on memory and folders.

Every clock is frozen and moved by the tests; nothing sleeps. The same
behaviour over every store is in test_cached_stores.py, the processes in
test_cached_processes.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clock import FrozenClock
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from backends import (
    CachedError,
    CacheKeyError,
    FileSystemJsonBackend,
    InvalidKeyError,
    JsonCache,
    LockTimeoutError,
    MemoryCache,
    SerializationError,
    SqliteJsonBackend,
    StoreError,
    VolatileBackend,
    cached,
)
from backends.events import MemorySink, subscribe
from backends.memo import LONGEST_ARGUMENTS, MARK


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def store(tmp_path: Path, clock: FrozenClock) -> Iterator[JsonCache]:
    cache = JsonCache(tmp_path / "cache", timeout=None, clock=clock)
    yield cache
    cache.close()


class Body:
    """A function body that counts its runs and can be held at its start."""

    def __init__(self, result: Any = "v") -> None:
        self.runs = 0
        self.result = result
        self.entered = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.runs += 1
            run = self.runs
        self.entered.set()
        assert self.go.wait(30)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result if not callable(self.result) else self.result(run)


# -- keys ------------------------------------------------------------------------------------


def test_a_call_is_keyed_by_its_bound_arguments_with_defaults_applied(store: JsonCache) -> None:
    body = Body(lambda run: run)

    @cached(store)
    def f(a: int, b: int = 2, *rest: int, c: str = "x", **more: Any) -> int:
        return body(a, b, rest, c, more)  # type: ignore[no-any-return]

    assert f(1) == f(1, 2) == f(a=1, b=2) == f(1, c="x") == 1
    assert body.runs == 1
    assert f(1, 3) == 2 and f(1, 2, 3) == 3 and f(1, z=[1]) == 4
    # The documented rule, written out: these keys never change between runs or versions.
    name = "test_cached.test_a_call_is_keyed_by_its_bound_arguments_with_defaults_applied.<locals>.f"
    assert f.cache_key(1) == f'cached/{name}/v1/{{"a":1,"b":2,"c":"x","more":{{}},"rest":[]}}'


def test_the_argument_part_is_canonical_json_in_one_segment(store: JsonCache) -> None:
    @cached(store, prefix="p:", version="2024-01")
    def f(x: Any) -> Any:
        return x

    assert f.cache_key({"b": 1, "a": [1, (2, 3)]}) == f.cache_key({"a": [1, [2, 3]], "b": 1})
    key = f.cache_key("a/../b\x7f\n é \U0001f600 \ud800")
    assert key.endswith('/v2024-01/{"x":"a\\/..\\/b\\u007f\\n \\u00e9 \\ud83d\\ude00 \\ud800"}')
    assert key.startswith("p:test_cached.")
    assert backends.is_valid_key(key)
    assert f.cache_key(1) != f.cache_key(1.0) != f.cache_key(True) != f.cache_key("1")
    assert f("a/../b") == "a/../b"  # stored under that key on the folder


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet='a/\x7f\u00e9\U0001f600\ud800\\"\n'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(a=JSON_VALUES, b=JSON_VALUES, by_name=st.booleans())
def test_the_argument_part_is_the_documented_rule_for_any_json_arguments(
    a: Any, b: Any, by_name: bool
) -> None:
    """The rule of the manual written out with json.dumps, against every shortcut of the key builder:
    keys are kept across runs and versions, so no shortcut may ever change one."""

    def f(a: Any, b: Any = None) -> Any:
        return a

    cached_f = cached(backends.VolatileBackend())(f)
    text = json.dumps(
        {"a": a, "b": b}, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    text = text.replace("/", "\\/").replace("\x7f", "\\u007f")
    if len(text) > LONGEST_ARGUMENTS:
        text = "sha256-" + hashlib.sha256(text.encode("ascii")).hexdigest()
    key = cached_f.cache_key(a, b=b) if by_name else cached_f.cache_key(a, b)
    assert key == f"cached/{f.__module__}.{f.__qualname__}/v1/{text}"


def test_a_long_argument_part_becomes_its_sha256(store: JsonCache) -> None:
    @cached(store)
    def f(x: str) -> str:
        return x[:3]

    short = f.cache_key("a" * 10)
    long = f.cache_key("a" * LONGEST_ARGUMENTS)
    assert '{"x":"aaaaaaaaaa"}' in short
    tail = long.rsplit("/", 1)[1]
    assert tail.startswith("sha256-") and len(tail) == 7 + 64
    assert "aaaa" not in long
    assert f("a" * 5000) == "aaa" and f("a" * 5000) == "aaa"
    assert f.stats.computed == 1


def test_the_same_arguments_give_the_same_key_in_another_process(tmp_path: Path) -> None:
    program = (
        "import backends, json, sys\n"
        "store = backends.VolatileBackend()\n"
        "@backends.cached(store)\n"
        "def f(a, b=None): return a\n"
        "f.__module__ = 'app'\n"
        "print(json.dumps([backends.memo.KeyRule(f.__wrapped__, 'cached/', 1, None)(a, {}) for a in "
        "[((1, 'é', {'z': 1, 'a': [2.5, None]}),), ('x' * 500,)]]))\n"
    )
    keys = []
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin", "PYTHONPATH": ":".join(sys.path)},
        )
        keys.append(json.loads(out.stdout))
    assert keys[0] == keys[1]
    assert keys[0][0] == 'cached/__main__.f/v1/{"a":[1,"\\u00e9",{"a":[2.5,null],"z":1}],"b":null}'


def test_an_argument_without_a_key_form_is_a_typed_error_naming_it_not_its_value(store: JsonCache) -> None:
    @cached(store)
    def f(user: Any, token: Any = None) -> None:
        raise AssertionError("never called")

    class Secret:
        def __repr__(self) -> str:
            return "hunter2-repr"

    for bad in ({1, 2}, b"hunter2", Secret(), {"hunter2": {3: 4}}, [math.nan], object()):
        with pytest.raises(CacheKeyError) as info:
            f(1, token=bad)
        assert "token" in str(info.value) and "hunter2" not in str(info.value)
        assert isinstance(info.value, TypeError)
    with pytest.raises(TypeError, match="missing a required argument"):
        f()  # type: ignore[call-arg]


def test_methods_leave_self_and_cls_out_of_the_key(store: JsonCache) -> None:
    body = Body(lambda run: run)

    class Users:
        def __init__(self, name: str) -> None:
            self.name = name

        @cached(store)
        def get(self, uid: int) -> int:
            return body(uid)  # type: ignore[no-any-return]

        @classmethod
        @cached(store)
        def count(cls, uid: int) -> int:
            return body(uid)  # type: ignore[no-any-return]

    a, b = Users("a"), Users("b")
    assert a.get(1) == b.get(1) == 1  # another instance: the same key (documented; pass key=)
    assert a.get.cache_key(1).endswith('/v1/{"uid":1}')
    assert Users.count(1) == 2 and Users.count(1) == 2
    assert a.get.invalidate(1) is True and a.get(1) == 3
    assert a.get.refresh(1) == 4 and b.get(1) == 4


def test_key_gives_the_argument_part(store: JsonCache) -> None:
    @cached(store, key=lambda uid, **_: f"users/{uid}")
    def f(uid: int, verbose: bool = False) -> int:
        return uid

    assert f.cache_key(42, verbose=True).endswith(".f/v1/users/42")
    assert f(42) == 42 and store.load(f.cache_key(42))[MARK] == 1

    @cached(store, key=lambda secret: f"a//{secret}")
    def g(secret: str) -> str:
        return secret

    with pytest.raises(InvalidKeyError) as info:
        g("hunter2")
    assert "hunter2" not in str(info.value)

    @cached(store, key=lambda x: 3)  # type: ignore[arg-type, return-value]
    def h(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="returns a str, not int"):
        h(1)


# -- single flight -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "memory", "sqlite"])
def test_sixteen_threads_on_one_missing_key_run_the_body_once(tmp_path: Path, kind: str) -> None:
    store: backends.BaseBackend[Any, Any] = {
        "folder": lambda: FileSystemJsonBackend(tmp_path / "f"),
        "memory": VolatileBackend,
        "sqlite": lambda: SqliteJsonBackend(tmp_path / "db"),
    }[kind]()
    body = Body({"n": 1})
    body.go.clear()
    f = cached(store)(body)
    start = threading.Barrier(16)
    results: list[Any] = []

    def call() -> None:
        start.wait()
        results.append(f())

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert body.entered.wait(10)
    body.go.set()
    for thread in threads:
        thread.join()
    assert results == [{"n": 1}] * 16
    assert body.runs == 1
    assert f.stats == backends.memo.CachedStats(hits=15, misses=1, computed=1)


def test_past_lock_timeout_a_waiter_computes_or_raises(store: JsonCache, sink: MemorySink) -> None:
    body = Body("mine")
    compute = cached(store, lock_timeout=0)(body)
    refuse = cached(store, lock_timeout=0, on_lock_timeout="raise")(body)
    with store.lock(compute.cache_key(), timeout=0, ttl=60):  # another holder, anywhere
        with pytest.raises(LockTimeoutError):
            refuse()
        assert compute() == "mine"
    assert body.runs == 1
    assert compute.counters.get("cached", "lock timed out").count == 1
    assert compute.stats.misses == 1 and compute.stats.computed == 1
    assert [e.outcome for e in sink if e.operation == "cached"].count("lock timed out") == 2
    assert compute() == "mine" and body.runs == 1  # it stored what it computed


def test_a_holder_that_hangs_past_its_lease_is_taken_over(store: JsonCache, clock: FrozenClock) -> None:
    entered, go = threading.Event(), threading.Event()
    runs: list[int] = []

    @cached(store, lease=10, lock_timeout=30)
    def f() -> str:
        runs.append(len(runs) + 1)
        run = len(runs)
        if run == 1:  # the first holder hangs until told
            entered.set()
            assert go.wait(30)
        return f"run {run}"

    first: list[Any] = []
    hung = threading.Thread(target=lambda: first.append(f()))
    hung.start()
    assert entered.wait(10)
    clock.advance(11)  # the frozen lease clock passes the holder's lease
    assert f() == "run 2"  # a waiter took the lock over and computed
    go.set()
    hung.join()
    assert first == ["run 1"]  # the late holder still answers its caller (with what it computed)
    assert runs == [1, 2]
    assert f() == "run 2"  # its lease had run out: its older result was not written over the newer one
    assert f.counters.get("cached", "lost").count == 1  # told once


# -- expiry and stale values ---------------------------------------------------------------------


def test_an_entry_expires_after_timeout_on_the_injected_clock(store: JsonCache, clock: FrozenClock) -> None:
    f = cached(store, timeout=60)(Body(lambda run: run))
    assert f() == 1
    clock.advance(59.9)
    assert f() == 1
    clock.advance(0.1)
    assert f() == 2
    assert store.expires(f.cache_key()) is not None  # the store's own timeout is kept too


def test_stale_while_revalidate_serves_the_old_value_while_one_refreshes(
    store: JsonCache, clock: FrozenClock, sink: MemorySink
) -> None:
    body = Body(lambda run: run)
    f = cached(store, timeout=60, stale_while_revalidate=30)(body)
    assert f() == 1
    clock.advance(70)
    body.go.clear()
    body.entered.clear()
    assert [f() for _ in range(5)] == [1] * 5  # at once, while the refresh is held
    assert body.entered.wait(10)
    body.go.set()
    assert f.join(10)
    assert body.runs == 2 and f() == 2
    assert f.stats.stale == 5
    clock.advance(60 + 30)  # past the grace: a plain miss, computed by the caller
    assert f() == 3
    outcomes = [e.outcome for e in sink if e.operation == "cached"]
    assert outcomes.count("stale") == 5 and outcomes.count("computed") == 3


def test_a_failed_background_refresh_is_counted_and_keeps_the_stale_value(
    store: JsonCache, clock: FrozenClock
) -> None:
    body = Body("old")
    f = cached(store, timeout=60, stale_while_revalidate=30)(body)
    f()
    body.result = RuntimeError("down")
    clock.advance(61)
    assert f() == "old"
    assert f.join(10)
    assert f.counters.get("cached", "refresh failed").count == 1
    assert f() == "old"  # the lock was released: another refresh is tried
    assert f.join(10)
    assert not store.lock(f.cache_key(), timeout=0).acquire().release()


def test_stale_if_error_serves_the_old_value_when_the_function_fails(
    store: JsonCache, clock: FrozenClock
) -> None:
    body = Body("old")
    f = cached(store, timeout=60, stale_if_error=100)(body)
    f()
    body.result = ConnectionError("down")
    clock.advance(150)
    assert f() == "old"
    assert f.stats.stale == 1
    clock.advance(20)  # 110 s past the timeout: out of the grace
    with pytest.raises(ConnectionError):
        f()
    body.result = "new"
    assert f() == "new"


# -- negative caching -------------------------------------------------------------------------


def test_none_is_cached_only_when_asked_for_its_own_timeout(store: JsonCache, clock: FrozenClock) -> None:
    plain = cached(store)(Body(None))
    assert plain() is None and plain() is None
    assert plain.stats.computed == 2 and plain.cache_key() not in store
    body = Body(None)
    kept = cached(store, timeout=600, cache_none=True, none_timeout=5, prefix="kept/")(body)
    assert kept() is None and kept() is None and body.runs == 1
    clock.advance(5)
    assert kept() is None and body.runs == 2


class NotFound(LookupError):
    """An error a cached function may keep (cache_errors)."""


class Picky(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def test_a_cached_error_is_raised_again_as_its_class_with_its_message(
    store: JsonCache, clock: FrozenClock
) -> None:
    body = Body(NotFound("user 42"))
    f = cached(store, cache_errors=(LookupError,), error_timeout=10)(body)
    for _ in range(3):
        with pytest.raises(NotFound, match="user 42"):
            f()
    assert body.runs == 1
    clock.advance(10)
    with pytest.raises(NotFound):
        f()
    assert body.runs == 2
    other = cached(store, cache_errors=ValueError, prefix="other/")(Body(KeyError("k")))
    with pytest.raises(KeyError):
        other()
    with pytest.raises(KeyError):
        other()
    assert other.stats.computed == 2  # not among cache_errors: never kept


def test_a_cached_error_whose_class_cannot_be_rebuilt_is_a_cached_error(store: JsonCache) -> None:
    f = cached(store, cache_errors=Picky)(Body(Picky(1, 2)))
    with pytest.raises(Picky):
        f()
    with pytest.raises(CachedError, match="Picky: 1/2") as info:
        f()
    assert info.value.error_class.endswith("test_cached.Picky")


# -- values ------------------------------------------------------------------------------------------


def test_a_value_the_codec_refuses_is_a_serialization_error_at_the_first_call(store: JsonCache) -> None:
    f = cached(store)(Body({1, 2}))
    with pytest.raises(SerializationError):
        f()
    assert f.cache_key() not in store
    g = cached(store)(Body({"x": (1, 2)}))
    assert g() == {"x": (1, 2)} and g() == {"x": [1, 2]}  # a hit is what the JSON codec loads back


@pytest.mark.parametrize("cls", [backends.FileSystemTextBackend, backends.FileSystemRawBackend])
def test_a_text_or_raw_store_is_refused_at_decoration(tmp_path: Path, cls: Any) -> None:
    with pytest.raises(TypeError, match="JSON values"):
        cached(cls(tmp_path))
    tier = backends.TieredBackend(MemoryCache(), cls(tmp_path))
    with pytest.raises(TypeError, match="JSON values"):
        cached(tier)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "foreign",
    [
        "plain",
        [1, 2],
        {"v": 1},
        {MARK: 2, "at": 1, "v": 1},
        {MARK: 1, "at": "x", "v": 1},
        {MARK: 1, "at": 1, "ttl": -1, "v": 1},
        {MARK: 1, "at": 1, "v": 1, "error": {}},
        {MARK: 1, "at": 1, "error": {"class": 3, "message": "m"}},
        None,
    ],
)
def test_foreign_data_under_the_key_is_a_miss_and_replaced(store: JsonCache, foreign: Any) -> None:
    f = cached(store)(Body("mine"))
    store[f.cache_key()] = foreign
    assert f() == "mine" and f() == "mine"
    assert f.stats.computed == 1
    assert f.counters.get("cached", "foreign").count == 1
    assert store[f.cache_key()]["v"] == "mine"


def test_bytes_that_are_no_json_under_the_key_are_a_miss(tmp_path: Path) -> None:
    store = FileSystemJsonBackend(tmp_path)
    raw = backends.FileSystemRawBackend(tmp_path)
    f = cached(store)(Body("mine"))
    raw[f.cache_key()] = b"\xff not json"
    assert f() == "mine"
    assert f.counters.get("cached", "foreign").count == 1
    assert store[f.cache_key()]["v"] == "mine"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("timeout", -1, ValueError),
        ("timeout", math.nan, ValueError),
        ("timeout", "300", TypeError),
        ("timeout", True, TypeError),
        ("timeout", 1e12, ValueError),
        ("lock_timeout", -0.5, ValueError),
        ("lock_timeout", math.nan, ValueError),
        ("lock_timeout", "1", TypeError),
        ("lease", 0, ValueError),
        ("lease", math.inf, ValueError),
        ("lease", None, TypeError),
        ("on_lock_timeout", "comptue", ValueError),
        ("on_lock_timeout", None, ValueError),
        ("stale_while_revalidate", -1, ValueError),
        ("stale_while_revalidate", math.inf, ValueError),
        ("stale_while_revalidate", None, TypeError),
        ("stale_if_error", math.nan, ValueError),
        ("none_timeout", -3, ValueError),
        ("error_timeout", "5", TypeError),
        ("cache_none", 1, TypeError),
        ("cache_errors", [ValueError], TypeError),
        ("cache_errors", (KeyboardInterrupt,), TypeError),
        ("cache_errors", ("ValueError",), TypeError),
        ("prefix", "a\r\nb/", ValueError),
        ("prefix", "\ud800/", ValueError),
        ("prefix", "/lead", ValueError),
        ("prefix", "a//", ValueError),
        ("prefix", b"cached/", TypeError),
        ("prefix", "x" * 1100, ValueError),
        ("version", -1, ValueError),
        ("version", "a/b", ValueError),
        ("version", "", ValueError),
        ("version", "\n", ValueError),
        ("version", 1.5, TypeError),
        ("version", False, TypeError),
        ("key", "users", TypeError),
        ("clock", 3, TypeError),
    ],
)
def test_every_bad_option_is_refused_at_decoration_naming_it(
    tmp_path: Path, option: str, value: Any, error: type[Exception]
) -> None:
    store = FileSystemJsonBackend(tmp_path / "store")
    with pytest.raises(error, match=option):
        cached(store, **{option: value})
    assert not (tmp_path / "store").exists()  # before any I/O


def test_the_store_and_the_function_are_checked(store: JsonCache) -> None:
    with pytest.raises(TypeError, match="backend"):
        cached({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="function"):
        cached(store)(3)  # type: ignore[arg-type]

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        cached(store)(gen)


# -- closing, fork, secrets ----------------------------------------------------------------------


def test_a_store_closed_mid_flight_gives_its_typed_error(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "db")
    f = cached(store)(lambda: store.close() or "v")
    with pytest.raises(StoreError, match="closed") as info:
        f()
    assert "not released" in "".join(getattr(info.value, "__notes__", []))
    with pytest.raises(StoreError, match="closed"):
        f()
    store.close()


def test_a_forked_child_uses_the_function_after_its_parent_did(store: JsonCache, clock: FrozenClock) -> None:
    import os

    body = Body(lambda run: run)
    f = cached(store, timeout=60, stale_while_revalidate=60)(body)
    assert f() == 1
    clock.advance(61)
    body.go.clear()
    body.entered.clear()
    assert f() == 1  # a refresh thread holds the body in the parent
    assert body.entered.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: no refresh thread of its parent to wait for
        code = 0 if f.join(0) and f() == 1 and f.cache_key() in store else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    body.go.set()
    assert f.join(10)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f() == 2


def test_arguments_are_data_in_keys_and_digest_keys_hides_them(store: JsonCache) -> None:
    secret = "hunter2-session-token"

    @cached(store)
    def f(token: str) -> int:
        return len(token)

    seen, hidden = MemorySink(), MemorySink()
    with subscribe(seen), subscribe(hidden, digest_keys=True):
        assert f(secret) == len(secret) and f(secret) == len(secret)
    assert any(secret in (e.key or "") for e in seen)  # keys are data (documented)
    assert hidden and not any(secret in "".join(map(str, e)) for e in hidden)
    assert secret not in repr(f)
    long = f.cache_key(secret * 20)
    assert secret not in long  # a digest


def test_counters_and_events_tell_each_outcome(store: JsonCache, sink: MemorySink) -> None:
    f = cached(store)(Body("v"))
    f()
    f()
    events = [e for e in sink if e.operation == "cached"]
    assert [e.outcome for e in events] == ["miss", "computed", "hit"]
    assert {e.backend for e in events} == {repr(store)}
    assert all(e.detail.endswith(".<lambda>") or "Body" in e.detail or e.detail for e in events)
    assert f.stats == backends.memo.CachedStats(hits=1, misses=1, computed=1)


def test_a_late_holder_whose_lock_was_taken_still_answers_and_counts_it_lost(
    store: JsonCache, clock: FrozenClock, sink: MemorySink
) -> None:
    entered, go = threading.Event(), threading.Event()

    @cached(store, lease=10)
    def f() -> str:
        entered.set()
        assert go.wait(30)
        return "late"

    answer: list[Any] = []
    hung = threading.Thread(target=lambda: answer.append(f()))
    hung.start()
    assert entered.wait(10)
    clock.advance(11)  # its lease ran out: another holder takes the key
    with store.lock(f.cache_key(), timeout=0, ttl=60):
        go.set()
        hung.join()
    assert answer == ["late"]
    assert f.counters.get("cached", "lost").count == 1
    assert [e.outcome for e in sink if e.operation == "cached"][-1] == "lost"
