"""The SQLite store attacked (issue 25, ``../shared/ATTACKS.md``): start-up races, readers and
writers, sizes, listings, a full disk, reads that must change nothing, foreign files, closing,
bad input, time and processes. Bounded in the default run; ``BACKENDS_LONG=1`` runs more.

Lost replies (class 1) and secrets (class 10) do not apply: a local file has no
reply to lose (a call returns what SQLite did, in this process), and the store
takes no credential to leak.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import servers
from clock import FrozenClock
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from backends import (
    BackendError,
    InvalidKeyError,
    PermissionDeniedError,
    SqliteJsonBackend,
    SqliteRawBackend,
    SqliteTextBackend,
    StoreError,
    StoreUnavailableError,
)
from backends.sqlite.schema import WRITING

LONG = os.environ.get("BACKENDS_LONG") == "1"
CI = os.environ.get("CI") == "true"


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` and its bytes: what "nothing changed" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign_database(path: Path, journal: str = "delete") -> None:
    """Another program's database: one table of its own, in rollback-journal mode."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal}")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO notes (body) VALUES ('theirs')")
    db.close()


# -- start-up: the switch to WAL waits for another connection's write ------------------------------


def test_the_first_write_waits_for_another_connections_write_then_switches_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    foreign_database(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO notes (body) VALUES ('in flight')")
    store = SqliteJsonBackend(path, busy_timeout=30)
    outcome: list[object] = []
    writer = threading.Thread(target=lambda: outcome.append(_attempt(lambda: store.dump("k", 1))))
    writer.start()
    writer.join(timeout=0.5)
    try:
        assert writer.is_alive() and outcome == []  # it waits (it used to fail at once)
    finally:
        other.execute("COMMIT")
        other.close()
    writer.join(timeout=60)
    assert outcome == [True]
    assert store["k"] == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_the_switch_to_wal_locked_past_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    foreign_database(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailableError, match=r"busy_timeout=0.2 s") as caught:
            SqliteJsonBackend(path, busy_timeout=0.2).dump("k", 1)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert SqliteJsonBackend(path).dump("k", 1)


def _attempt(call: Any) -> object:
    try:
        return call()
    except BaseException as exc:
        return exc


def _first_writes(path: str, start: Any, writes: int, failures: Any) -> None:
    store = SqliteJsonBackend(path)
    start.wait()
    for i in range(writes):
        try:
            store[f"w{os.getpid()}-{i}"] = i
        except BackendError:
            with failures.get_lock():
                failures.value += 1


def test_eight_processes_making_their_first_writes_at_once_lose_none(tmp_path: Path) -> None:
    rounds, writes = (10, 60) if LONG else (2, 30)
    context = multiprocessing.get_context("fork")
    for round_ in range(rounds):
        path = str(tmp_path / f"kv{round_}.db")
        start, failures = context.Barrier(8), context.Value("i", 0)
        workers = [
            context.Process(target=_first_writes, args=(path, start, writes, failures)) for _ in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [worker.exitcode for worker in workers] == [0] * 8
        assert failures.value == 0
        assert len(SqliteJsonBackend(path)) == 8 * writes


# -- readers never wait for a writer, and an expired entry is absent --------------------------------


@pytest.fixture
def expired(tmp_path: Path) -> Iterator[tuple[SqliteJsonBackend, FrozenClock]]:
    clock = FrozenClock()
    store = SqliteJsonBackend(tmp_path / "kv.db", timeout=10, busy_timeout=0.2, clock=clock)
    store.dump_many({"old": 1})
    clock.advance(20)
    store.dump_many({"fresh": 2})
    yield store, clock
    store.close()


@pytest.mark.parametrize("call", ["load", "get", "in", "load_many", "getitem", "load_if_changed"])
def test_reading_an_expired_entry_does_not_wait_for_a_writer(
    expired: tuple[SqliteJsonBackend, FrozenClock], call: str
) -> None:
    store, _ = expired
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's write, held past busy_timeout
    try:
        answer = {
            "load": lambda: store.load("old", "absent"),
            "get": lambda: store.get("old", "absent"),
            "in": lambda: "old" in store,
            "load_many": lambda: store.load_many(["old", "fresh"]),
            "getitem": lambda: _attempt(lambda: store["old"]),
            "load_if_changed": lambda: store.load_if_changed("old"),
        }[call]()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert answer in ("absent", False, {"fresh": 2}, backends.MISSING) or isinstance(answer, KeyError)
    assert len(store) == 1 and store.purge() == 1  # still there for purge (or the next write) to remove


def test_an_expired_entry_of_a_read_only_database_reads_as_absent(
    expired: tuple[SqliteJsonBackend, FrozenClock],
) -> None:
    store, _ = expired
    store.close()
    reader = SqliteJsonBackend(store.path, timeout=10, clock=store.clock)
    with immutable(Path(store.path)):
        assert reader.load("old", "absent") == "absent" and "old" not in reader
        assert reader.load_many(["old", "fresh"]) == {"fresh": 2} and reader["fresh"] == 2
        assert list(reader) == ["fresh"] and len(reader) == 1
        with pytest.raises(PermissionDeniedError, match="no permission to write"):
            reader["new"] = 3
        assert reader.load("new") is None


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i``: not even root may write (mode bits do not stop root)."""
    made: list[Path] = []
    try:
        for path in paths:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
                _cannot(f"chattr +i {path} (this filesystem has no immutable flag)")
            made.append(path)
        yield
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def _cannot(what: str) -> None:
    """A test that needs what this machine cannot do: a skip, but a failure under CI=true."""
    if CI:
        pytest.fail(f"cannot {what}, and CI=true")
    pytest.skip(f"cannot {what}")  # ok: only outside CI (a failure under CI=true, above)


def test_a_read_only_folder_and_file_are_read_and_a_write_is_permission_denied(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    # Another process keeps it open: the log and its index stay beside the file.
    # (In one process, SQLite dies of SIGBUS reading an immutable index it has mapped.)
    path = str(folder / "kv.db")
    code = f"import backends; s = backends.SqliteJsonBackend({path!r}); s['k'] = 1; print(); input()"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    owner = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == b"\n"
        reader = SqliteJsonBackend(folder / "kv.db")
        before = tree(folder)
        with immutable(*folder.iterdir(), folder):
            assert reader["k"] == 1 and list(reader) == ["k"] and len(reader) == 1
            with pytest.raises(PermissionDeniedError, match="no permission to write"):
                reader["k"] = 2
            with pytest.raises(PermissionDeniedError):
                reader.delete_many(["k"])
            assert reader["k"] == 1
        assert tree(folder) == before
        reader.close()
    finally:
        owner.communicate(b"\n", timeout=60)
    assert sorted(p.name for p in folder.iterdir()) == ["kv.db"]
    # Without the log's index, SQLite cannot read a WAL file in a folder it may not write.
    with immutable(folder / "kv.db", folder):
        late = SqliteJsonBackend(folder / "kv.db")
        with pytest.raises(PermissionDeniedError, match=r"must make kv.db-shm .* folder is read-only"):
            late.load("k")
        late.close()
    assert sorted(p.name for p in folder.iterdir()) == ["kv.db"]


# -- sizes: checked before any I/O ------------------------------------------------------------------


def test_a_value_past_sqlites_limit_is_a_store_error_before_any_io(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path)
    for size in (2**31, 2**32 + 5, 1_000_000_001):
        for name in ("dump", "setitem", "dump_many", "fill"):
            huge = bytes(size)  # calloc'd: its pages are never touched, no memory used
            with pytest.raises(StoreError, match=rf"{size:,} bytes.*at most") as caught:
                if name == "dump":
                    store.dump("k", huge)
                elif name == "setitem":
                    store["k"] = huge
                elif name == "dump_many":
                    store.dump_many({"a": b"small", "k": huge})
                else:
                    store.fill("k", huge)
            assert caught.value.operation in (name, "dump") and not path.exists(), name
            del huge, caught
    store.dump("k", bytes(1_000))
    assert len(store["k"]) == 1_000


# -- listings end, and raise only typed errors --------------------------------------------------------


def folded(keys: set[str], prefix: str, delimiter: str) -> list[str]:
    """What ``list(prefix, delimiter)`` of a dict of ``keys`` gives: the model."""
    expected: list[str] = []
    for key in sorted(k for k in keys if k.startswith(prefix)):
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        entry = key[: cut + len(delimiter)] if cut >= 0 else key
        if entry not in expected:
            expected.append(entry)
    return expected


def test_a_listing_at_the_last_code_point_ends(tmp_path: Path) -> None:
    store = SqliteTextBackend(tmp_path / "kv.db")
    keys = {"\U0010ffffz", "\U0010ffff\U0010ffff", "a\U0010ffff/b", "\ud7ffz", "\ud7ff\ud7ff"}
    store.dump_many(dict.fromkeys(keys, ""))
    assert list(store.list("", "\U0010ffff")) == ["a\U0010ffff", "\ud7ffz", "\ud7ff\ud7ff", "\U0010ffff"]
    for prefix, delimiter in [("", "\ud7ff"), ("\ud7ff", "z"), ("", "z"), ("\U0010ffff", "\U0010ffff")]:
        assert list(store.list(prefix, delimiter)) == folded(keys, prefix, delimiter), (prefix, delimiter)
    assert list(store.list("\ud800")) == [] and list(store.list("", "\udfff")) == sorted(store)
    assert list(store.stat_many("\ud800")) == []


EXTREME = st.sampled_from(
    ["\x01", "/", "z", "\x7f", "\ud7ff", "\ue000", "\uffff", "\U00010000", "\U0010ffff"]
)
TEXT = st.text(EXTREME, max_size=4)
ODD = st.text(st.sampled_from(["\ud800", "\udfff", "\x00", "a", "\U0010ffff"]), max_size=3)


@settings(max_examples=200 if LONG else 40, deadline=None)
@given(
    keys=st.sets(TEXT.filter(lambda k: k and "/" not in k), max_size=6),
    prefix=TEXT | ODD,
    delimiter=TEXT | ODD,
)
def test_listings_of_extreme_code_points_match_a_dict(
    sqlite_folder: Path, keys: set[str], prefix: str, delimiter: str
) -> None:
    store = SqliteTextBackend(sqlite_folder / f"kv{next(_counter)}.db")
    valid = {key for key in keys if not any(ch in key for ch in "\x01\x7f")}
    store.dump_many({key: "" for key in valid})
    assert list(store.list(prefix, delimiter)) == folded(valid, prefix, delimiter)
    store.close()


_counter = iter(range(10**9))


@pytest.fixture(scope="module")
def sqlite_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("listings")


# -- a full disk ---------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with servers.small_disk(tmp_path / "disk", "1m") as folder:
        yield folder


@pytest.mark.parametrize("call", ["dump_many", "delete_many", "dump"])
def test_a_full_disk_is_named_and_the_original_error_kept(small_disk: Path, call: str) -> None:
    store = SqliteRawBackend(small_disk / "kv.db")
    store.dump_many({f"k{i}": bytes(1_000) for i in range(100)})
    before = store.load_many([f"k{i}" for i in range(100)])
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(bytes(4096))
            out.flush()
    action = {
        "dump_many": lambda: store.dump_many({f"n{i}": os.urandom(1_000) for i in range(2_000)}),
        "delete_many": lambda: store.delete_many([f"k{i}" for i in range(100)]),
        "dump": lambda: store.dump("big", os.urandom(900_000)),
    }[call]
    with pytest.raises(StoreError, match="disk is full") as caught:
        for _ in range(20):  # a delete may fit in what is left: repeat until it does not
            action()
            store.dump_many({f"k{i}": before[f"k{i}"] for i in range(100)})
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert "full" in str(caught.value.__cause__)
    filler.unlink()
    assert store.load_many([f"k{i}" for i in range(100)]) == before  # nothing half-done
    store.dump("after", b"1")  # and service once there is room
    assert store["after"] == b"1"


# -- reading creates and changes nothing --------------------------------------------------------------


def test_reading_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "typo" / "kv.db", timeout=60)
    assert store.load("k") is None and "k" not in store and store.get("k", 1) == 1
    assert store.load_many(["k"]) == {} and len(store) == 0 and list(store) == [] and not store
    assert list(store.list("")) == [] and list(store.stat_many()) == [] and store.stat("k") is None
    assert store.peek("k") is None and store.load_if_changed("k") is backends.MISSING
    assert store.delete("k") is False and store.delete_many(["k"]) == 0 and store.purge() == 0
    assert store.renew("k", "etag") is False
    store.clear()
    with pytest.raises(KeyError):
        store.expires("k")
    assert not (tmp_path / "typo").exists()
    store["k"] = 1  # the first write makes the folder and the file
    assert store["k"] == 1


@pytest.mark.parametrize("command", [["ls"], ["get", "k"], ["stat", "k"]])
def test_the_command_on_a_mistyped_url_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite://{tmp_path}/typo/kv.db"
    run = subprocess.run(
        [sys.executable, "-m", "backends", command[0], url, *command[1:]],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=60,
    )
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "typo").exists()


def test_reading_another_programs_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    foreign_database(path)
    before = tree(tmp_path)
    store = SqliteJsonBackend(path)
    assert store.load("k") is None and "k" not in store and list(store) == [] and len(store) == 0
    assert store.load_many(["k"]) == {} and store.stat("k") is None and store.delete("k") is False
    store.close()
    assert tree(tmp_path) == before  # not switched to WAL, no table added
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_foreign_table_of_our_name_is_a_store_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE kv (name TEXT, value TEXT)")
    db.execute("INSERT INTO kv VALUES ('k', 'theirs')")
    db.close()
    before = tree(tmp_path)
    store = SqliteJsonBackend(path)
    for call in (lambda: store.load("k"), lambda: store.dump("k", 1), lambda: list(store), store.clear):
        with pytest.raises(StoreError, match=r"table 'kv' .*not made by this library"):
            call()
    store.close()
    assert tree(tmp_path) == before


def test_writing_another_programs_database_keeps_its_tables(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    foreign_database(path)
    store = SqliteJsonBackend(path)
    store["k"] = 1
    store.clear()
    store.close()
    assert sqlite3.connect(path).execute("SELECT body FROM notes").fetchall() == [("theirs",)]


def test_a_corrupt_database_is_a_store_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "kv.db"
    store = SqliteRawBackend(path)
    store.dump_many({f"k{i}": bytes(3_000) for i in range(200)})
    store.close()
    with path.open("r+b") as file:
        file.seek(8192)
        file.write(os.urandom(8192))  # pages of the table, not the header
    for name in ("kv.db-wal", "kv.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    before = tree(tmp_path)
    reader = SqliteRawBackend(path)
    with pytest.raises(StoreError, match=r"is corrupt .*malformed.* left as it is"):
        reader.load_many([f"k{i}" for i in range(200)])
    with pytest.raises(StoreError, match="is corrupt"):
        list(reader)
    with pytest.raises(StoreError, match="is corrupt"):
        reader["k0"] = b"x"
    reader.close()
    assert tree(tmp_path) == before


@pytest.mark.parametrize("data", [5, 2.5, "text", "{not json"], ids=["integer", "real", "text", "broken"])
def test_a_row_another_program_wrote_gets_one_answer(tmp_path: Path, data: object) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    store["k"] = 0
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("UPDATE kv SET data = ? WHERE key = 'k'", (data,))
    db.close()
    outcome = _attempt(lambda: store.load("k"))
    assert not isinstance(outcome, BaseException) or isinstance(outcome, BackendError), repr(outcome)
    assert _attempt(lambda: store.load_many(["k"])) in ({"k": outcome},) or isinstance(outcome, BackendError)
    assert "k" in store and store.stat("k") is not None and [s.key for s in store.stat_many()] == ["k"]


def test_a_row_whose_name_is_not_a_key_is_a_stray_not_listed_and_named(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    store.dump_many({"a/b": 1, "z": 2})
    bad = ["a//x", "/lead", "a/\x1b[31mred", "bell\x07", "nul\x00", "x" * 1025, "a/./b", "a/"]
    db = sqlite3.connect(store.path, isolation_level=None)
    db.executemany("INSERT INTO kv VALUES (?, x'31', 0, NULL, NULL)", [(key,) for key in bad])
    db.close()
    assert list(store) == ["a/b", "z"] and list(store.list("")) == ["a/", "z"]
    assert list(store.list("a/")) == ["a/b"] and [s.key for s in store.stat_many()] == ["a/b", "z"]
    assert dict(store.items()) == {"a/b": 1, "z": 2}
    named = dict(store.strays())
    assert sorted(named) == sorted(bad) and all(reason.startswith("not a key: ") for reason in named.values())
    assert [key for key, _ in store.strays("a/")] == sorted(k for k in bad if k.startswith("a/"))
    for key in bad:
        with pytest.raises(InvalidKeyError):
            store.load(key)
    store.clear()  # clear() empties the table, strays too: they are rows of our table
    assert list(store.strays()) == []


def _ls(store: SqliteJsonBackend) -> subprocess.CompletedProcess[str]:
    """``backends ls`` of the store's URL, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "backends", "ls", f"sqlite://{store.path}"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=60,
    )


def test_rows_named_in_no_utf8_or_not_as_text_are_strays_and_listings_go_past_them(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    store.dump_many({"a": 1, "n": 2, "m/x": 3})
    db = sqlite3.connect(store.path, isolation_level=None)
    # more than a page (500) of names that are no UTF-8, sorted between "m" and "n"
    db.executemany(
        "INSERT INTO kv VALUES (CAST(? AS TEXT), x'31', 0, NULL, NULL)",
        [(b"m\xff%04d" % i,) for i in range(600)],
    )
    db.execute("INSERT INTO kv VALUES (x'ff00', x'31', 0, NULL, NULL)")  # a BLOB name
    db.close()
    assert list(store) == ["a", "m/x", "n"] and list(store.list("", "/")) == ["a", "m/", "n"]
    assert [s.key for s in store.stat_many()] == ["a", "m/x", "n"] and dict(store.items()) == {
        "a": 1,
        "m/x": 3,
        "n": 2,
    }
    named = dict(store.strays())
    assert len(named) == 601
    assert named["m\udcff0599"] == "not a key: not UTF-8 text"
    assert named["\udcff\x00"] == "not a key: a name stored as blob, not text"
    assert len(dict(store.strays("m"))) == 600 and dict(store.strays("n")) == {}
    run = _ls(store)
    assert run.returncode == 1 and run.stdout.split() == ["a", "m/x", "n"]
    assert "m\\xff0599" in run.stderr and "\udcff" not in run.stderr


def test_the_command_names_a_stray_on_one_line(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    store["ok"] = 1
    db = sqlite3.connect(store.path, isolation_level=None)
    db.execute("INSERT INTO kv VALUES ('two\nlines', x'31', 0, NULL, NULL)")
    db.close()
    run = _ls(store)
    assert run.stdout == "ok\n" and "not a key" in run.stderr and "Traceback" not in run.stderr


# -- stat_many and stat agree -----------------------------------------------------------------------


@pytest.mark.parametrize("family", [SqliteJsonBackend, SqliteTextBackend, SqliteRawBackend])
def test_stat_many_gives_what_stat_gives(tmp_path: Path, family: type[Any]) -> None:
    store = family(tmp_path / "kv.db")
    store["a/b"] = b"xy" if family is SqliteRawBackend else "xy"
    assert list(store.stat_many()) == [store.stat("a/b")]


# -- ":memory:", paths and other bad input ---------------------------------------------------------------


@pytest.mark.parametrize("path", [":memory:", "", "a\x00b"])
def test_a_path_that_names_no_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="path"):
        SqliteJsonBackend(path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", [None, 5, b"kv.db"])
def test_a_path_of_the_wrong_type_is_refused(path: Any) -> None:
    with pytest.raises(TypeError, match="path"):
        SqliteJsonBackend(path)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", -1),
        ("timeout", float("nan")),
        ("timeout", "5"),
        ("timeout", True),
        ("busy_timeout", float("nan")),
        ("busy_timeout", float("inf")),
        ("busy_timeout", "5"),
        ("busy_timeout", True),
        ("busy_timeout", 1e308),
        ("durable", "no"),
        ("durable", 1),
        ("clock", 5),
    ],
)
def test_a_bad_option_is_refused_naming_it(tmp_path: Path, option: str, value: object) -> None:
    with pytest.raises((ValueError, TypeError), match=option):
        SqliteJsonBackend(tmp_path / "kv.db", **{option: value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("timeout", [-1, float("nan"), "5", True, 10**20])
def test_a_bad_timeout_of_a_call_is_refused_before_any_io(tmp_path: Path, timeout: object) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    with pytest.raises(ValueError, match="timeout"):
        store.dump("k", 1, timeout=timeout)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/kv.db",
        "sqlite://",
        "sqlite:///kv.db?busy_timeout=abc",
        "sqlite:///kv.db?busy_timeout=nan",
        "sqlite:///kv.db?durable=maybe",
        "sqlite:///kv.db?timeout=-5",
        "sqlite:///kv.db?format=yaml",
        "sqlite:///kv.db?colour=red",
        "sqlite:///k%00v.db",
    ],
)
def test_a_bad_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError):
        backends.open(url)


@pytest.mark.parametrize("key", ["", "a//b", "/a", "a\x00", "\ud800", 5, None, "x" * 1025])
def test_a_bad_key_is_refused_before_any_io(tmp_path: Path, key: Any) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    for call in (store.load, store.delete, store.stat, store.expires, lambda k: store.dump(k, 1)):
        with pytest.raises(InvalidKeyError):
            call(key)
    with pytest.raises(InvalidKeyError):
        store.dump_many({"ok": 1, key: 2})
    assert list(tmp_path.iterdir()) == []


# -- closing ---------------------------------------------------------------------------------------------


def test_close_twice_and_every_call_after_close_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteJsonBackend(tmp_path / "kv.db")
    store["k"] = 1
    store.close()
    store.close()
    calls = [
        lambda: store.load("k"),
        lambda: store.dump("k", 2),
        lambda: store.dump_many({"k": 2}),
        lambda: store.load_many(["k"]),
        lambda: store.delete("k"),
        lambda: "k" in store,
        lambda: len(store),
        lambda: list(store),
        lambda: list(store.list("")),
        store.purge,
        lambda: store.stat("k"),
        lambda: list(store.stat_many()),
        lambda: store.lock("k").acquire(),
    ]
    for call in calls:
        with pytest.raises(StoreError, match="closed"):
            call()
    assert SqliteJsonBackend(store.path)["k"] == 1  # nothing written after close


def test_close_during_bulk_calls_and_listings_gives_only_typed_errors(tmp_path: Path) -> None:
    # close() lands after a growing number of calls of another thread: in the
    # middle of a bulk call (6 statements of 500 keys) or a listing (6 pages).
    many = {f"k{i:05d}": i for i in range(3_000)}
    for round_ in range(40 if LONG else 8):
        store = SqliteJsonBackend(tmp_path / f"kv{round_}.db")
        store.dump_many(many)
        errors: list[BaseException] = []
        progress = threading.Semaphore(0)
        worker = threading.Thread(target=_bulk_until_closed, args=(store, many, progress, errors))
        worker.start()
        for _ in range(round_):
            progress.acquire()
        store.close()
        worker.join(timeout=60)
        assert len(errors) == 1 and isinstance(errors[0], StoreError) and "closed" in str(errors[0])
        assert WRITING.in_flight == 0
        values = set(SqliteJsonBackend(store.path).load_many(many).values())
        assert values in ({*many.values()}, {-v for v in many.values()})  # each batch whole or not at all


def test_close_inside_a_transaction_rolls_it_back_and_forks_still_run(tmp_path: Path) -> None:
    class Closing(FrozenClock):
        closes: SqliteJsonBackend | None = None

        def __call__(self) -> float:
            if self.closes is not None:
                store, self.closes = self.closes, None
                store.close()  # delete_many reads the clock inside its transaction
            return self.now

    clock = Closing()
    store = SqliteJsonBackend(tmp_path / "kv.db", clock=clock)
    many = {f"k{i}": i for i in range(1_200)}
    store.dump_many(many)
    clock.closes = store
    with pytest.raises(StoreError, match="closed"):
        store.delete_many(many)
    assert clock.closes is None
    assert WRITING.in_flight == 0  # a write counted forever would make every fork wait forever
    child = multiprocessing.get_context("fork").Process(target=os.getpid)
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert SqliteJsonBackend(tmp_path / "kv.db").load_many(many) == many  # nothing of it was done


def _bulk_until_closed(
    store: SqliteJsonBackend, many: dict[str, int], progress: threading.Semaphore, errors: list[BaseException]
) -> None:
    negated = {key: -value for key, value in many.items()}
    try:
        while True:
            for batch in (negated, many):
                store.dump_many(batch)
                progress.release()
                assert store.load_many(many) == batch
                progress.release()
                assert sum(1 for _ in store.list("")) == len(many)
                progress.release()
    except BaseException as exc:
        errors.append(exc)


# -- time: exact boundaries ------------------------------------------------------------------------------


def test_an_entry_is_fresh_until_its_deadline_and_absent_at_it(tmp_path: Path) -> None:
    clock = FrozenClock(1_000.0)
    store = SqliteJsonBackend(tmp_path / "kv.db", timeout=10, clock=clock)
    store["k"] = 1
    store.dump("zero", 1, timeout=0)
    assert "zero" not in store and store.dump("zero", 2, if_absent=True)  # timeout=0: expired at once
    clock.advance(9.999)
    assert store["k"] == 1 and "k" in store and len(store) == 2 and store.stat("k") is not None
    clock.now = 1_010.0  # the deadline itself: expired
    assert store.load("k") is None and "k" not in store and list(store) == []
    assert store.stat("k") is None and store.peek("k") is not None and not store.peek("k").fresh  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        store.expires("k")
    assert store.delete("k") is False and store.dump("k", 2, if_absent=True)
    assert store["k"] == 2


# -- processes ---------------------------------------------------------------------------------------------


def _reader_writer(path: str, role: int, rounds: int, errors: Any) -> None:
    store = SqliteJsonBackend(path, busy_timeout=30)
    for i in range(rounds):
        try:
            if role % 2:
                store.dump_many({f"p{role}-{i}-{j}": j for j in range(20)})
            else:
                store.load_many([f"p{role + 1}-{i}-{j}" for j in range(20)])
                sum(1 for _ in store.list("", None))
        except BaseException:
            with errors.get_lock():
                errors.value += 1


def test_readers_and_writers_in_eight_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.db")
    SqliteJsonBackend(path)["seed"] = 0
    rounds = 200 if LONG else 25
    context = multiprocessing.get_context("fork")
    errors = context.Value("i", 0)
    workers = [context.Process(target=_reader_writer, args=(path, role, rounds, errors)) for role in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0] * 8 and errors.value == 0
    assert len(SqliteJsonBackend(path)) == 1 + 4 * rounds * 20


def _child_writes(store: SqliteJsonBackend, done: Any) -> None:
    store.dump(f"child-{os.getpid()}", store.load("seed"))
    done.put(os.getpid())


def test_a_child_forked_while_its_parent_writes_can_write(tmp_path: Path) -> None:
    # A fork mid-write would leave the child SQLite's record of the parent's
    # write lock, without the lock: every write of the child waits it out.
    store = SqliteJsonBackend(tmp_path / "kv.db", busy_timeout=5)
    store["seed"] = 1
    stop = threading.Event()
    batch = {f"b{i}": i for i in range(2_000)}

    def write() -> None:
        while not stop.is_set():
            store.dump_many(batch)
            store.delete_many(batch)

    writer = threading.Thread(target=write)
    writer.start()
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    try:
        children = [
            context.Process(target=_child_writes, args=(store, done)) for _ in range(12 if LONG else 4)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=60)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert [child.exitcode for child in children] == [0] * len(children)
    assert sorted(store.load_many(f"child-{child.pid}" for child in children).values()) == [1] * len(children)
