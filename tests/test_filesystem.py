"""FileSystem*Backend: layout, confinement to the root, atomic writes, streaming."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from backends import FileSystemJsonBackend, FileSystemRawBackend, FileSystemTextBackend, StoreError
from backends.filesystem.tree import MARKER
from backends.testing import strategies as s


def files_under(folder: Path) -> list[Path]:
    return [
        Path(root, name) for root, dirs, names in os.walk(folder) for name in names + dirs if name != MARKER
    ]


def names_in(folder: Path) -> list[str]:
    """The names in ``folder``, but the layout marker this library writes at the first write."""
    return sorted(set(os.listdir(folder)) - {MARKER})


# -- layout ---------------------------------------------------------------------


def test_root_is_created_at_the_first_write_not_before(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "root"
    backend = FileSystemJsonBackend(root)
    assert backend.load("k") is None and len(backend) == 0 and "k" not in backend
    assert backend.delete("k") is False and list(backend.list()) == []
    assert not (tmp_path / "deep").exists()  # reading never creates anything
    backend["a/b"] = 1
    assert root.is_dir() and backend["a/b"] == 1


def test_plain_keys_are_plain_files_and_folders_carry_a_plus(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    backend["users/42"] = {"name": "Ann"}
    backend["users"] = []
    assert (tmp_path / "users+" / "42").read_bytes() == b'{"name":"Ann"}'
    assert (tmp_path / "users").read_bytes() == b"[]"
    assert backend.path("users/42") == tmp_path / "users+" / "42"


@settings(max_examples=150)
@given(key=st.one_of(s.valid_keys, s.long_keys))
def test_listing_gives_back_the_exact_key(key: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("layout")
    backend = FileSystemTextBackend(root)
    backend[key] = "v"
    assert list(backend) == [key]
    assert backend[key] == "v"
    for path in files_under(root):
        assert len(path.name.encode()) <= 255
        assert path.resolve().is_relative_to(root.resolve())
    assert backend.delete(key)
    assert names_in(root) == []  # emptied folders are pruned


def test_a_segment_longer_than_the_name_limit_is_stored(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path)
    key = "\u00e9" * 512  # 1024 bytes in one segment, 3072 characters escaped
    backend[key] = b"v"
    backend[key + "x"[:0]] = b"w"
    assert backend[key] == b"w"
    assert list(backend) == [key]
    assert max(len(p.name) for p in files_under(tmp_path)) <= 201


def test_foreign_and_temporary_files_are_never_keys(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    backend["k"] = 1
    (tmp_path / f"~backends-{0x3F2A:032x}.tmp").write_text("partial")  # a killed writer's leftover
    (tmp_path / "%zz").write_text("1")  # not a valid escape
    (tmp_path / "%41").write_text("1")  # escapes a character that is never escaped
    (tmp_path / "stray+").write_text("1")  # a file where only folders go
    (tmp_path / "dir=").mkdir()  # a piece shorter than a canonical cut
    (tmp_path / "dir=" / "x").write_text("1")
    assert list(backend) == ["k"]
    backend.clear()
    assert (tmp_path / f"~backends-{0x3F2A:032x}.tmp").exists()  # clear() removes what is old only


def test_two_listings_at_once_each_see_every_key(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path)
    backend.dump_many({f"k{i}": i for i in range(50)})
    first, second = iter(backend), iter(backend)
    seen = [next(first) for _ in range(10)]
    assert len(list(second)) == 50
    assert len(seen + list(first)) == 50


def test_listing_memory_stays_flat(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path)
    count = 20_000
    for i in range(count):
        (tmp_path / f"key-{i:06d}").write_bytes(b"")
    tracemalloc.start()
    try:
        seen = sum(1 for _ in backend)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    # A list of 20,000 keys alone would take more than 1 MB.
    assert peak < 200_000, peak


def test_root_removed_while_in_use_is_recreated(tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = FileSystemJsonBackend(root)
    backend["a/b"] = 1
    shutil.rmtree(root)
    assert backend.load("a/b") is None
    backend["a/b"] = 2
    backend["c"] = 3
    assert (root / "a+" / "b").read_text() == "2"
    assert set(backend) == {"a/b", "c"}


# -- confinement -------------------------------------------------------------------

TRICKS = [
    "../escape",
    "a/../../escape",
    "/etc/passwd",
    "..",
    "./x",
    "a/./b",
    "x/..",
    "%2e%2e/escape",
    "..%2fescape",
    "..\\escape",
    "a\\..\\..\\escape",
    "~/escape",
    "$HOME/escape",
    "a+/../escape",
    "\u2024\u2024/escape",
    "\uff0e\uff0e/escape",
    ".../escape",
    "escape\x00",
    "C:\\escape",
    "a/b" + "/.." * 3,
]


@pytest.mark.parametrize("key", TRICKS, ids=repr)
def test_no_key_writes_outside_the_root(tmp_path: Path, key: str) -> None:
    parent = tmp_path / "parent"
    root = parent / "root"
    root.mkdir(parents=True)
    backend = FileSystemTextBackend(root)
    (parent / "secret").write_text("keep")
    try:
        backend[key] = "payload"
        assert backend[key] == "payload"
        assert list(backend) == [key]
        assert backend.path(key).resolve().is_relative_to(root.resolve())
        backend.delete(key)
    except backends.InvalidKeyError:
        pass  # ok: rejected before any I/O
    assert sorted(os.listdir(parent)) == ["root", "secret"]
    assert (parent / "secret").read_text() == "keep"
    assert names_in(root) == []


@settings(max_examples=200)
@given(key=st.text(st.sampled_from("./\\%~+=ab\u2024\uff0e"), min_size=1, max_size=20))
def test_generated_keys_stay_inside_the_root(key: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    parent = tmp_path_factory.mktemp("confine")
    root = parent / "root"
    backend = FileSystemRawBackend(root)
    if backends.is_valid_key(key):
        backend[key] = b"x"
        assert list(backend) == [key]
        assert all(p.resolve().is_relative_to(root.resolve()) for p in files_under(root))
    else:
        with pytest.raises(backends.InvalidKeyError):
            backend[key] = b"x"
    assert os.listdir(parent) == (["root"] if backends.is_valid_key(key) else [])


def test_a_symlinked_folder_inside_the_root_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    backend = FileSystemJsonBackend(root)
    os.symlink(outside, root / "users+")
    (outside / "42").write_text('"outside"')
    with pytest.raises(backends.StoreError, match="symlink"):
        backend["users/42"] = "new"
    assert backend.load("users/42") is None  # not read through either
    assert "users/42" not in backend
    assert list(backend) == []
    assert backend.delete("users/42") is False
    assert os.listdir(outside) == ["42"]
    assert (outside / "42").read_text() == '"outside"'


def test_a_symlinked_value_file_is_absent_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text('"outside"')
    root = tmp_path / "root"
    root.mkdir()
    backend = FileSystemJsonBackend(root)
    os.symlink(target, root / "k")
    assert backend.load("k") is None
    assert "k" not in backend
    assert list(backend) == []
    assert backend.delete("k") is False
    assert backend.pop("k", "absent") == "absent"
    with pytest.raises(StoreError, match="not a file"):
        backend["k"] = "inside"
    with pytest.raises(StoreError, match="not a file"):
        backend.dump("k", "inside", if_absent=True)
    assert target.read_text() == '"outside"'
    assert (root / "k").is_symlink()


# -- atomic writes -----------------------------------------------------------------


def test_no_temporary_file_is_left_after_writes(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path)
    for i in range(20):
        backend[f"k/{i % 3}"] = bytes(i)
        backend.dump(f"k/{i % 3}", b"x", if_absent=True)
    assert sorted(p.name for p in files_under(tmp_path)) == ["0", "1", "2", "k+"]


def test_a_failed_write_leaves_the_old_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileSystemRawBackend(tmp_path)
    backend["k"] = b"old"

    def full_disk(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(backends.StoreError, match="No space left") as info:
        backend["k"] = b"new"
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert backend["k"] == b"old"
    assert names_in(tmp_path) == ["k"]


def test_durable_writes_fsync_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    FileSystemJsonBackend(tmp_path / "fast")["k"] = 1
    assert synced == []
    FileSystemJsonBackend(tmp_path / "safe", durable=True)["a/k"] = 1
    assert synced.count("file") == 1
    assert synced[-1] == "dir"


def test_permission_denied_is_typed(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # Root bypasses permission bits; simulate what the kernel says to others.
        backend = FileSystemJsonBackend(tmp_path)
        error = backend._error(PermissionError(13, "Permission denied"), "dump", "k")
        assert isinstance(error, backends.PermissionDeniedError)
        assert "permission denied" in str(error)
        return
    root = tmp_path / "ro"
    backend = FileSystemJsonBackend(root)
    root.chmod(0o500)
    with pytest.raises(backends.PermissionDeniedError):
        backend["k"] = 1


# -- streaming -------------------------------------------------------------------


def test_raw_values_stream_from_and_to_files(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path / "store")
    source = tmp_path / "big.bin"
    payload = os.urandom(3 << 20)
    source.write_bytes(payload)
    assert backend.dump_file("blobs/big", source) is True
    assert backend.dump_file("blobs/big", source, if_absent=True) is False
    assert backend["blobs/big"] == payload
    target = tmp_path / "copy.bin"
    assert backend.load_file("blobs/big", target) is True
    assert target.read_bytes() == payload
    buffer = io.BytesIO()
    assert backend.dump_file("blobs/small", io.BytesIO(b"abc")) is True
    assert backend.load_file("blobs/small", buffer) is True
    assert buffer.getvalue() == b"abc"


def test_load_file_of_an_absent_key_creates_nothing(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path / "store")
    assert backend.load_file("absent", tmp_path / "out.bin") is False
    assert not (tmp_path / "out.bin").exists()
    with pytest.raises(backends.InvalidKeyError):
        backend.dump_file("../x", io.BytesIO(b"x"))


def test_text_is_byte_exact_under_any_locale(tmp_path: Path) -> None:
    value = "caf\u00e9\r\n\u20ac\n"
    script = (
        "import locale, sys; from backends import FileSystemTextBackend as T; "
        "b = T(sys.argv[1]); b['k'] = sys.argv[2].encode('ascii').decode('unicode_escape'); "
        "print(locale.getpreferredencoding(False), ascii(b['k']))"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    escaped = value.encode("unicode_escape").decode("ascii")
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), escaped],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    encoding, loaded = done.stdout.split(" ", 1)
    assert encoding.upper() in {"ANSI_X3.4-1968", "ASCII", "US-ASCII"}  # really not UTF-8
    assert loaded.strip() == ascii(value)
    assert (tmp_path / "k").read_bytes() == value.encode("utf-8")


# -- a root made or remade while other threads use it -----------------------------------


@pytest.mark.parametrize("make", [FileSystemJsonBackend, backends.JsonCache], ids=["folder", "cache"])
def test_threads_reading_while_the_root_is_made_and_remade_never_fail(tmp_path: Path, make: Any) -> None:
    """Found by four processes of two threads on a new cache folder: a reader used the root's
    descriptor while a writer making the root closed it (EBADF, or another file's number)."""
    import threading

    root = tmp_path / "root"
    store = make(root)
    stop = threading.Event()
    failures: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                value = store.load("k")
                if value is not None and not (isinstance(value, int) and 0 <= value < 300):
                    failures.append(f"wrong value {value!r}")
                store.load("d/k")
                if not isinstance("k" in store, bool):
                    failures.append("in gave no bool")
            except Exception as exc:  # any error is the defect
                failures.append(repr(exc))
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        for i in range(300):
            shutil.rmtree(root, ignore_errors=True)  # the root deleted: the next write makes it anew
            store["k"] = i
            store["d/k"] = i
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert store["k"] == 299 and sorted(store) == ["d/k", "k"]


# -- close while a call has taken the root's descriptor -------------------------------------


@pytest.mark.parametrize("make", [FileSystemRawBackend, backends.RawCache], ids=["folder", "cache"])
@pytest.mark.parametrize("key", ["k", "deep/k"])
def test_a_write_that_took_the_root_before_close_never_lands_in_a_folder_opened_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Any, key: str
) -> None:
    # close() closed the root's descriptor at once: a call of another thread holding its number
    # a moment ago then used whatever the next open() got that number for, here another store's
    # folder, and wrote the value there.
    import backends.filesystem.store as folder_store

    store = make(tmp_path / "mine")
    store["warm"] = b"w"
    other_root = tmp_path / "other"
    other_root.mkdir()
    opened: list[int] = []
    real_create, real_open_folder = folder_store.create_temp, type(store)._open_folder

    def close_then_open_another(*args: Any) -> Any:
        if not opened:
            store.close()  # another thread closes it, and another folder is opened, now
            opened.append(os.open(other_root, os.O_RDONLY | os.O_DIRECTORY))
        return args

    def create_temp(folder: int) -> Any:
        close_then_open_another()
        return real_create(folder)

    def open_folder(self: Any, parent: int, name: str, create: bool) -> int:
        close_then_open_another()
        return real_open_folder(self, parent, name, create)

    monkeypatch.setattr(folder_store, "create_temp", create_temp)
    monkeypatch.setattr(type(store), "_open_folder", open_folder)
    try:
        with pytest.raises(StoreError, match="closed"):
            store[key] = b"v"
    finally:
        monkeypatch.undo()
        for fd in opened:
            os.close(fd)
    assert sorted(p.name for p in other_root.rglob("*")) == []  # nothing written in another folder
