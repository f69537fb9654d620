"""Parity: a backend behaves like a plain dict (plus the key and value rules).

One RuleBasedStateMachine drives a backend and a dict model with the same
operations and asserts the same results and the same exception types after
every step, and the len/keys/items invariants in between.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ..base import MISSING
from ..errors import BackendError, InvalidKeyError, KeyConflictError, ReadOnlyError, SerializationError
from . import strategies as s
from .case import StoreCase

__all__ = ["Folders", "Model", "check_parity", "outcome", "parity_machine"]


class Folders:
    """Hands out fresh empty folders below ``base``; ``drop`` removes one."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def new(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.base))

    def drop(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


Outcome = tuple[str, Any]


class Model(dict[str, Any]):
    """The dict the backend is compared with; it also remembers every key ever set.

    SeaweedFS keeps the folder "a/" after "a/b" is deleted, and refuses a
    conditional create of "a" while it exists.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ever: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        self.ever.add(key)
        super().__setitem__(key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.ever.add(key)
        return super().setdefault(key, default)


def outcome(action: Any) -> Outcome:
    try:
        return "ok", action()
    except (BackendError, KeyError) as exc:
        return "raise", type(exc)


def parity_machine(case: StoreCase, folders: Folders) -> type[RuleBasedStateMachine]:  # noqa: C901 - one rule per call
    """A hypothesis state machine driving a fresh backend of ``case`` and a dict alike."""
    # A valid key the store cannot hold (a tree: a segment too long for a
    # file name) is refused like an invalid one, by every call.
    tagged_keys = s.tagged_keys.filter(lambda tagged: not tagged[1] or case.represents(tagged[0])).map(
        lambda tagged: (tagged[0], tagged[1] and case.holds(tagged[0]))
    )
    tagged_values = st.one_of(
        case.values.map(lambda v: (v, True)), case.invalid_values.map(lambda v: (v, False))
    )

    class Parity(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.folder = folders.new()
            self.backend = case.make(self.folder)
            self.model = Model()
            for key, value in case.initial:
                self.model[key] = case.normal(value)

        def teardown(self) -> None:
            if case.remote and not case.refuses_writes:
                self.backend.clear()  # a shared server bucket must not grow from test to test
            if case.finish is not None:
                case.finish(self.backend)
            self.backend.close()
            folders.drop(self.folder)

        # -- helpers --------------------------------------------------------------

        def check_loaded(self, key: str, loaded: Any) -> None:
            expected = self.model[key]
            if case.identity:
                assert loaded is expected, key
            else:
                assert s.same(loaded, expected), (key, loaded, expected)

        def expect_write(
            self, tagged_key: tuple[Any, bool], tagged_value: tuple[Any, bool], stored: bool = True
        ) -> Outcome | None:
            """The exception a write must raise, or None if it is valid.

            Without ``stored``, only what is checked before any I/O (the key and the value).
            """
            if not tagged_key[1]:
                return "raise", InvalidKeyError
            if not tagged_value[1]:
                return "raise", SerializationError
            if stored and case.conflicts(tagged_key[0], self.model):
                return "raise", KeyConflictError
            return None

        def refused(self, write: Any) -> bool:
            """For a read-only backend: the write raised ReadOnlyError (and the model stays). Else False."""
            if not case.refuses_writes:
                return False
            assert outcome(write) == ("raise", ReadOnlyError)
            return True

        def follow_stored(self, keys: list[str] | dict[str, None]) -> None:
            """The model takes what the store kept of ``keys`` (after a write that may be partial)."""
            for key in keys:
                stored = self.backend.load(key, MISSING)
                if stored is MISSING:
                    self.model.pop(key, None)
                else:
                    self.model[key] = stored

        # -- single keys ------------------------------------------------------------

        @rule(key=tagged_keys, value=tagged_values)
        def dump(self, key: tuple[Any, bool], value: tuple[Any, bool]) -> None:
            if self.refused(lambda: self.backend.dump(key[0], value[0])):
                return
            got = outcome(lambda: self.backend.dump(key[0], value[0]))
            expected = self.expect_write(key, value)
            if expected is None:
                self.model[key[0]] = case.normal(value[0])
                expected = ("ok", True)
            assert got == expected

        @rule(key=tagged_keys, value=tagged_values)
        def dump_if_absent(self, key: tuple[Any, bool], value: tuple[Any, bool]) -> None:
            if self.refused(lambda: self.backend.dump(key[0], value[0], if_absent=True)):
                return
            if key[1] and not case.creates(key[0], self.model.ever):
                return  # a server bug, not compared (README: "S3-compatible stores")
            got = outcome(lambda: self.backend.dump(key[0], value[0], if_absent=True))
            expected = self.expect_write(key, value)
            if expected == ("raise", KeyConflictError) and key[0] in self.model:
                expected = None  # present: False, before any write is tried
            if expected is None:
                expected = ("ok", key[0] not in self.model)
                self.model.setdefault(key[0], case.normal(value[0]))
            assert got == expected

        @rule(key=tagged_keys, value=tagged_values)
        def setitem(self, key: tuple[Any, bool], value: tuple[Any, bool]) -> None:
            if self.refused(lambda: self.backend.__setitem__(key[0], value[0])):
                return

            def assign() -> None:
                self.backend[key[0]] = value[0]

            got = outcome(assign)
            expected = self.expect_write(key, value)
            if expected is None:
                self.model[key[0]] = case.normal(value[0])
                expected = ("ok", None)
            assert got == expected

        def check_read(self, key: tuple[Any, bool], got: Outcome, absent: Outcome) -> None:
            """A read of ``key`` gave ``got``: the model's value, ``absent``, or InvalidKeyError."""
            if not key[1]:
                assert got == ("raise", InvalidKeyError)
            elif key[0] in self.model:
                assert got[0] == "ok"
                self.check_loaded(key[0], got[1])
            else:
                assert got == absent

        @rule(key=tagged_keys)
        def load(self, key: tuple[Any, bool]) -> None:
            marker = object()
            self.check_read(key, outcome(lambda: self.backend.load(key[0], marker)), ("ok", marker))

        @rule(key=tagged_keys)
        def getitem(self, key: tuple[Any, bool]) -> None:
            self.check_read(key, outcome(lambda: self.backend[key[0]]), ("raise", KeyError))

        @rule(key=tagged_keys)
        def contains(self, key: tuple[Any, bool]) -> None:
            got = outcome(lambda: key[0] in self.backend)
            assert got == (("ok", key[0] in self.model) if key[1] else ("raise", InvalidKeyError))

        @rule(key=tagged_keys)
        def delete(self, key: tuple[Any, bool]) -> None:
            if self.refused(lambda: self.backend.delete(key[0])):
                return
            got = outcome(lambda: self.backend.delete(key[0]))
            if not key[1]:
                assert got == ("raise", InvalidKeyError)
            else:
                existed = key[0] in self.model
                self.model.pop(key[0], None)
                assert got == ("ok", existed)

        @rule(key=tagged_keys)
        def delitem(self, key: tuple[Any, bool]) -> None:
            if self.refused(lambda: self.backend.__delitem__(key[0])):
                return

            def remove() -> None:
                del self.backend[key[0]]

            got = outcome(remove)
            if not key[1]:
                assert got == ("raise", InvalidKeyError)
            elif key[0] in self.model:
                del self.model[key[0]]
                assert got == ("ok", None)
            else:
                assert got == ("raise", KeyError)

        @rule(key=tagged_keys)
        def pop(self, key: tuple[Any, bool]) -> None:
            if self.refused(lambda: self.backend.pop(key[0], None)):
                return
            marker = object()
            self.check_read(key, outcome(lambda: self.backend.pop(key[0], marker)), ("ok", marker))
            if key[1]:
                self.model.pop(key[0], None)

        @rule(key=tagged_keys, value=tagged_values)
        def setdefault(self, key: tuple[Any, bool], value: tuple[Any, bool]) -> None:
            if case.refuses_writes and key[1] and key[0] in self.model:
                self.check_read(key, outcome(lambda: self.backend.setdefault(key[0], value[0])), ("ok", None))
                return
            if self.refused(lambda: self.backend.setdefault(key[0], value[0])):
                return
            if key[1] and key[0] not in self.model and not case.creates(key[0], self.model.ever):
                return  # a server bug, not compared (README: "S3-compatible stores")
            got = outcome(lambda: self.backend.setdefault(key[0], value[0]))
            expected = self.expect_write(key, value)
            if expected == ("raise", KeyConflictError) and key[0] in self.model:
                expected = None  # present: returned, nothing written
            if expected is not None:
                assert got == expected
                return
            assert got[0] == "ok"
            if key[0] in self.model:
                self.check_loaded(key[0], got[1])
            else:
                assert got[1] is value[0]  # it stored and returns the default itself
                self.model[key[0]] = case.normal(value[0])

        # -- bulk ---------------------------------------------------------------------

        @rule(pairs=st.lists(st.tuples(tagged_keys, tagged_values), max_size=5))
        def dump_many(self, pairs: list[tuple[tuple[Any, bool], tuple[Any, bool]]]) -> None:
            if self.refused(lambda: self.backend.dump_many([(k[0], v[0]) for k, v in pairs])):
                return
            got = outcome(lambda: self.backend.dump_many([(k[0], v[0]) for k, v in pairs]))
            valid = [k[0] for k, v in pairs if k[1]]
            if case.tree and all(k[1] and v[1] for k, v in pairs):
                batch = dict.fromkeys(valid)
                if any(case.conflicts(key, [*self.model, *batch]) for key in batch):
                    # A tree writes the pairs in turn: the first in the way of
                    # another (or of a stored key) raises, the rest may be written.
                    assert got == ("raise", KeyConflictError)
                    self.follow_stored(batch)
                    return
            if not case.writes_together(valid):
                # A server bug, not compared (README: "S3-compatible stores"):
                # whatever it kept of these keys is what the model follows.
                self.follow_stored(valid)
                return
            # Pairs are checked in order, key then value; the first bad one
            # decides the error, and nothing is written.
            failure = next(filter(None, (self.expect_write(k, v, stored=False) for k, v in pairs)), None)
            if failure is not None:
                assert got == failure
            else:
                assert got == ("ok", None)
                for k, v in pairs:
                    self.model[k[0]] = case.normal(v[0])

        @rule(keys=st.lists(tagged_keys, max_size=5))
        def load_many(self, keys: list[tuple[Any, bool]]) -> None:
            got = outcome(lambda: self.backend.load_many(k for k, _ in keys))
            if not all(valid for _, valid in keys):
                assert got == ("raise", InvalidKeyError)
                return
            assert got[0] == "ok"
            assert set(got[1]) == {k for k, _ in keys if k in self.model}
            for key, value in got[1].items():
                self.check_loaded(key, value)

        @rule(keys=st.lists(tagged_keys, max_size=5))
        def delete_many(self, keys: list[tuple[Any, bool]]) -> None:
            if self.refused(lambda: self.backend.delete_many([k for k, _ in keys])):
                return
            got = outcome(lambda: self.backend.delete_many([k for k, _ in keys]))
            if not all(valid for _, valid in keys):
                assert got == ("raise", InvalidKeyError)
                return
            present = {k for k, _ in keys if k in self.model}
            for key in present:
                del self.model[key]
            assert got == ("ok", len(present))

        @rule()
        def clear(self) -> None:
            if self.refused(self.backend.clear):
                return
            self.backend.clear()
            self.model.clear()

        @rule(prefix=st.sampled_from(["", "a", "a/", "a/b", "k", "é"]), delimiter=st.sampled_from(["", "/"]))
        def listing(self, prefix: str, delimiter: str) -> None:
            listed = list(self.backend.list(prefix, delimiter))
            assert len(listed) == len(set(listed)), "an entry was listed twice"
            assert listed == sorted(listed), "a listing is sorted (by code point, as S3 lists)"
            below = [key[len(prefix) :] for key in self.model if key.startswith(prefix)]
            keys = {prefix + rest for rest in below if not delimiter or delimiter not in rest}
            folders = {
                prefix + rest.split(delimiter)[0] + delimiter
                for rest in below
                if delimiter and delimiter in rest
            }
            assert {entry for entry in listed if not entry.endswith("/")} == keys
            if case.segment_limit is None:  # SeaweedFS lists the folders it kept after their last key went
                assert {entry for entry in listed if entry.endswith("/")} == folders

        # -- invariants ---------------------------------------------------------------

        @invariant()
        def same_keys(self) -> None:
            listed = list(self.backend)
            assert len(listed) == len(set(listed)), "a key was listed twice"
            assert set(listed) == set(self.model)
            assert set(self.backend.keys()) == self.model.keys()
            assert len(self.backend) == len(self.model)
            assert bool(self.backend) == bool(self.model)

        @invariant()
        def same_items(self) -> None:
            items = dict(self.backend.items())
            assert items.keys() == self.model.keys()
            for key, value in items.items():
                self.check_loaded(key, value)

    return Parity


def check_parity(case: StoreCase, folder: Path, *, examples: int | None = None, steps: int = 40) -> None:
    """Run the parity machine on ``case``: ``examples`` runs (default ``case.examples``) of ``steps`` steps.

    Fresh backends are made in new folders below ``folder``. Raises the
    first difference from a dict, shrunk by hypothesis.
    """
    machine = parity_machine(case, Folders(folder))
    chosen = settings(max_examples=examples or case.examples, stateful_step_count=steps, deadline=None)
    run_state_machine_as_test(machine, settings=chosen)
