"""Ordinary folder trees (the plain layout), strays, sorted listings, one kind of time."""

from __future__ import annotations

import os
import pickle
from datetime import timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from backends import (
    FileSystemJsonBackend,
    FileSystemRawBackend,
    InvalidKeyError,
    KeyConflictError,
    VolatileBackend,
)
from backends.filesystem.tree import MARKER
from backends.testing import strategies as s

#: a name of the form this library gives its temporary files (a killed writer's leftover)
LEFTOVER = f"~backends-{0x3F2A:032x}.tmp"


def tree(root: Path, files: dict[str, bytes]) -> Path:
    """Make an ordinary folder tree, as another tool would."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


# -- which layout a folder uses ---------------------------------------------------------


def test_a_tree_this_library_did_not_make_is_read_as_plain(tmp_path: Path) -> None:
    root = tree(tmp_path / "site", {"top.json": b"1", "sub/b.json": b"2", "sub/deep/c.json": b"3"})
    backend = FileSystemJsonBackend(root)
    assert backend.layout.name == "plain"
    assert sorted(backend) == ["sub/b.json", "sub/deep/c.json", "top.json"]  # was: only top.json
    assert backend.load_many(["sub/b.json", "sub/deep/c.json"]) == {"sub/b.json": 2, "sub/deep/c.json": 3}
    backend["sub/new.json"] = 4
    assert (root / "sub" / "new.json").read_bytes() == b"4"  # key a/b is the file root/a/b
    assert backend.path("sub/deep/c.json") == root / "sub" / "deep" / "c.json"
    assert not (root / MARKER).exists()  # nothing of ours is added to the user's tree
    del backend["sub/deep/c.json"]
    assert not (root / "sub" / "deep").exists()  # emptied folders go, as in every layout


def test_a_folder_this_library_makes_records_its_layout(tmp_path: Path) -> None:
    made = FileSystemJsonBackend(tmp_path / "new")
    assert made.layout.name == "escaped"
    made["a"] = 1
    made["a/b"] = 2  # the full contract: a key and a folder of the same name
    assert (tmp_path / "new" / MARKER).is_file()
    again = FileSystemJsonBackend(tmp_path / "new")
    assert again.layout.name == "escaped" and dict(again.items()) == {"a": 1, "a/b": 2}
    with pytest.raises(ValueError, match="holds the escaped layout"):
        FileSystemJsonBackend(tmp_path / "new", layout="plain")
    with pytest.raises(ValueError, match="layout is 'auto', 'escaped' or 'plain'"):
        FileSystemJsonBackend(tmp_path / "other", layout="flat")
    assert not (tmp_path / "other").exists()


def test_the_layout_is_chosen_by_url_and_kept_by_pickling(tmp_path: Path) -> None:
    backend = backends.open(f"file://{tmp_path}/t?format=raw&layout=plain")
    assert isinstance(backend, FileSystemRawBackend) and backend.layout.name == "plain"
    assert "layout='plain'" in repr(backend)
    backend["a/b"] = b"x"
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.layout.name == "plain" and copy["a/b"] == b"x" and copy == backend


# -- the plain layout's limits, declared ------------------------------------------------


def test_a_key_and_a_folder_of_the_same_name_conflict_and_change_nothing(tmp_path: Path) -> None:
    backend = FileSystemJsonBackend(tmp_path, layout="plain")
    backend["a/b"] = 1
    with pytest.raises(KeyConflictError, match="cannot hold this key") as info:
        backend["a"] = 2
    assert isinstance(info.value, backends.StoreError) and "layout='escaped'" in str(info.value)
    backend["c"] = 3
    with pytest.raises(KeyConflictError):
        backend.dump("c/d", 4)
    with pytest.raises(KeyConflictError):
        backend.dump("a", 5, if_absent=True)
    assert backend.dump("c", 6, if_absent=True) is False  # present: no conflict to tell
    assert dict(backend.items()) == {"a/b": 1, "c": 3}
    assert "a" not in backend and backend.load("c/d") is None  # reads of either side just miss


@pytest.mark.parametrize("key", ["x" * 256, "dir/" + "é" * 128, "~notes", "a/~b"])
def test_a_key_no_file_can_be_named_is_refused_before_any_io(tmp_path: Path, key: str) -> None:
    backend = FileSystemJsonBackend(tmp_path / "t", layout="plain")
    for call in (lambda: backend.dump(key, 1), lambda: backend.load(key), lambda: key in backend):
        with pytest.raises(InvalidKeyError, match=r"file name|reserved"):
            call()
    with pytest.raises(InvalidKeyError):
        backend.dump_many({"ok": 1, key: 2})
    assert not (tmp_path / "t").exists()  # nothing written, not even the folder


# -- nothing skipped silently -------------------------------------------------------------


def test_what_is_not_a_key_is_reported_as_a_stray(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", {"k": b"1", "sub/k": b"2", "~notes.txt": b"3", "sub/bad\x01name": b"4"})
    (root / "sub" / "link").symlink_to(root / "k")
    os.mkfifo(root / "fifo")
    (root / LEFTOVER).write_bytes(b"a killed writer's")  # ours: never a stray
    (root / "~WRL0001.tmp").write_bytes(b"a user's, named like a temporary file")
    backend = FileSystemRawBackend(root)
    assert sorted(backend) == ["k", "sub/k"]
    strays = dict(backend.strays())
    assert set(strays) == {"~notes.txt", "~WRL0001.tmp", "sub/bad\x01name", "sub/link", "fifo"}
    assert "symlink" in strays["sub/link"] and "FIFO" in strays["fifo"] and "reserved" in strays["~notes.txt"]
    assert dict(backend.strays("sub/")) == {key: strays[key] for key in ("sub/bad\x01name", "sub/link")}
    escaped = FileSystemRawBackend(tmp_path / "e")
    escaped["k"] = b"1"
    (tmp_path / "e" / "plain-folder").mkdir()
    (tmp_path / "e" / "%zz").write_bytes(b"")
    assert dict(escaped.strays()).keys() == {"plain-folder", "%zz"}


# -- listings: sorted everywhere, delimiter None ------------------------------------------


@settings(max_examples=60)
@given(keys=st.sets(s.valid_keys, max_size=12), prefix=st.sampled_from(["", "a", "a/", "é", "a/b"]))
def test_folder_listings_are_sorted_and_walk_only_the_prefix(
    keys: set[str], prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    backend = FileSystemRawBackend(tmp_path_factory.mktemp("sorted"))
    backend.dump_many(dict.fromkeys(keys, b""))
    expected = sorted(key for key in keys if key.startswith(prefix))
    assert list(backend.list(prefix, None)) == expected == list(backend.list(prefix, ""))
    folded = list(backend.list(prefix))
    assert folded == sorted(folded)
    assert list(backend.stat_many(prefix)) == [backend.stat(key) for key in expected]


def test_a_flat_listing_takes_delimiter_none_on_every_backend(tmp_path: Path) -> None:
    for backend in (VolatileBackend(), FileSystemJsonBackend(tmp_path)):
        backend.dump_many({"team/b/1": 1, "team/a/2": 2, "team/a/1": 3, "teams": 4})
        assert list(backend.list("team/", delimiter=None)) == ["team/a/1", "team/a/2", "team/b/1"]
        assert list(backend.list("team")) == ["team/", "teams"]
        with pytest.raises(TypeError, match="delimiter a str or None"):
            list(backend.list("team", delimiter=3))  # type: ignore[arg-type]


# -- one kind of time ---------------------------------------------------------------------


def test_every_time_is_an_aware_utc_datetime(tmp_path: Path) -> None:
    cache = backends.JsonCache(tmp_path / "c", timeout=60)
    memory = backends.MemoryCache(timeout=60)
    folder = FileSystemJsonBackend(tmp_path / "f")
    for store in (cache, memory, folder):
        store["k"] = 1
    for when in (
        cache.expires("k"),
        memory.expires("k"),
        folder.stat("k").last_modified,  # type: ignore[union-attr]
        cache.stat("k").last_modified,  # type: ignore[union-attr]
        next(folder.stat_many()).last_modified,
    ):
        assert when is not None and when.tzinfo is timezone.utc


def test_a_lock_taken_before_the_first_write_leaves_the_folder_ours(tmp_path: Path) -> None:
    first = FileSystemJsonBackend(tmp_path / "t")
    with first.lock("k"):
        pass  # makes ~locks, and no value yet
    second = FileSystemJsonBackend(tmp_path / "t")
    assert second.layout.name == "escaped"
    second["a"] = 1
    second["a/b"] = 2
    assert dict(first.items()) == {"a": 1, "a/b": 2}


def test_a_folder_written_before_layouts_were_recorded_stays_escaped(tmp_path: Path) -> None:
    # What a version without the layout file left: "+" folders, escaped names, no marker.
    tree(tmp_path / "old", {"users+/42": b"1", "caf%C3%A9": b"2"})
    backend = FileSystemJsonBackend(tmp_path / "old")
    assert backend.layout.name == "escaped"
    assert sorted(backend) == ["café", "users/42"]
    backend["new"] = 3
    assert (tmp_path / "old" / MARKER).is_file()  # recorded from the first write on


def test_a_file_whose_key_would_pass_1024_bytes_is_a_stray_not_a_key(tmp_path: Path) -> None:
    backend = FileSystemRawBackend(tmp_path / "t")
    fits = "/".join(["x" * 200] * 5) + "/" + "y" * 19  # 1024 bytes exactly
    backend[fits] = b"1"
    folder = tmp_path / "t" / "+/".join(["x" * 200] * 5)
    (folder.parent / (folder.name + "+") / ("y" * 20)).write_bytes(b"2")  # 1025 bytes: no key
    assert list(backend) == [fits] and len(backend) == 1
    assert [path.rsplit("/", 1)[-1] for path, _ in backend.strays()] == ["y" * 20]


# -- walks: chunked, one name at a time only where needed ---------------------------------


@pytest.mark.parametrize("layout", ["escaped", "plain"])
def test_a_walk_tells_every_name_across_chunks_of_mixed_entries(tmp_path: Path, layout: str) -> None:
    backend = FileSystemRawBackend(tmp_path / "t", layout=layout)
    keys = {f"k{i:05d}" for i in range(2_500)} | {f"sub/k{i}" for i in range(1_200)}
    keys |= {f"caf\u00e9 {i}" for i in range(0, 2_500, 500)}  # escaped names among plain ones
    backend.dump_many(dict.fromkeys(keys, b"1"))
    root = tmp_path / "t"
    for i in range(0, 2_500, 400):  # own files and strays met inside chunks the fast path takes
        (root / f"~backends-{i:032x}.tmp").write_bytes(b"a killed writer's")
        (root / f"~stray{i}").write_bytes(b"")
    if layout == "escaped":
        (root / "%zz").write_bytes(b"")  # not the escaped form of any key
    assert len(backend) == len(keys)
    assert sorted(backend) == sorted(keys) == list(backend.list("", None))
    strays = {path for path, _ in backend.strays()}
    expected = {f"~stray{i}" for i in range(0, 2_500, 400)}
    assert strays == expected | ({"%zz"} if layout == "escaped" else set())
    backend.clear()
    assert len(backend) == 0 and not list(backend)


def test_counting_and_iterating_keys_keep_memory_flat(tmp_path: Path) -> None:
    """A walk holds one chunk of names at a time, however many keys a folder holds."""
    import tracemalloc

    def peak(count: int) -> int:
        root = tmp_path / str(count)
        root.mkdir()
        for i in range(count):
            (root / f"key-{i:06d}").write_bytes(b"")
        backend = FileSystemRawBackend(root, layout="escaped")
        tracemalloc.start()
        try:
            assert len(backend) == count and sum(1 for _ in backend) == count
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(3_000), peak(30_000)
    assert large < small * 1.5  # ten times the keys, not ten times the memory
