"""Local stores against raw file I/O and their peers: per-call costs, then listings at scale."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends import FileSystemJsonBackend, JsonCache, SqliteJsonBackend, SqliteRawBackend

from .harness import LIMIT, OURS, PEER, Bench

__all__ = ["DOC", "bounded_calls", "listed", "local_calls", "peak", "scale_on_disk"]

#: 1 KiB of JSON, the value of every per-call measurement
DOC: dict[str, Any] = {"id": 42, "name": "Ada Lovelace", "tags": ["math", "engines"], "bio": "x" * 940}
SECTION = "files and caches: 1 KiB JSON"

Ops = dict[str, Callable[..., Any]]


#: the stored bytes of a JSON value, exactly as our JSON codec encodes it (compact, UTF-8)
_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _raw(root: Path) -> Ops:
    """The physical limit of an atomic write: a new temporary file in the key's folder, the
    value (encoded as ours is) written to it, closed, renamed over the key's name; a read
    opens and reads the file. Folders (``users/42``) are made once, then found by path."""
    root.mkdir(parents=True)
    counter = itertools.count()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    made: set[str] = set()

    def dump(key: str, value: Any) -> None:
        folder, _, name = key.rpartition("/")
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        at = f"{root}/{folder}/" if folder else f"{root}/"
        temp = f"{at}.{next(counter)}.tmp"
        fd = os.open(temp, flags, 0o666)
        try:
            os.write(fd, _encode(value).encode())
        finally:
            os.close(fd)
        os.rename(temp, at + name)

    def load(key: str) -> Any:
        with open(root / key, "rb") as f:
            return json.loads(f.read())

    def count() -> int:
        return _walk(str(root))

    return {"dump": dump, "load": load, "in": lambda key: os.path.exists(root / key), "len": count}


def _ours(store: Any) -> Ops:
    return {"dump": store.dump, "load": store.load, "in": store.__contains__, "len": store.__len__}


def _peers(base: Path, bench: Bench) -> dict[str, Ops]:
    found: dict[str, Ops] = {}
    try:
        import diskcache

        cache = diskcache.Cache(str(base / "diskcache"))
        found["diskcache Cache"] = {
            "dump": cache.set,
            "load": cache.get,
            "in": cache.__contains__,
            "len": cache.__len__,
        }
    except ImportError:
        bench.lacking("diskcache", "not installed: pip install -e '.[bench]'")
    try:
        import fsspec

        mapper = fsspec.get_mapper(f"file://{base / 'fsspec'}", create=True)
        found["fsspec mapper"] = {
            "dump": lambda key, value: mapper.__setitem__(key, _encode(value).encode()),
            "load": lambda key: json.loads(mapper[key]),
            "in": mapper.__contains__,
            "len": mapper.__len__,
        }
    except ImportError:
        bench.lacking("fsspec", "not installed: pip install -e '.[bench]'")
    try:
        from minimalkv.fs import FilesystemStore

        (base / "minimalkv").mkdir(parents=True)
        kv = FilesystemStore(str(base / "minimalkv"))
        found["minimalkv FilesystemStore"] = {
            "dump": lambda key, value: kv.put(key, _encode(value).encode()),
            "load": lambda key: json.loads(kv.get(key)),
            "in": kv.__contains__,
            "len": lambda: sum(1 for _ in kv.iter_keys()),
        }
    except ImportError:
        bench.lacking("minimalkv", "not installed: pip install -e '.[bench]'")
    return found


#: rounds of a dump per round of the harness, each over a slice of the keys: a disk flush
#: (another process's, or the kernel's writeback) lands on whichever contender runs then,
#: so many short interleaved rounds give a median that such stalls do not move
SLICES = 5


def per_call(
    ops: Ops, keys: list[str], verb: str, fresh: bool = False, slices: int = 1
) -> Callable[[int], float]:
    """Microseconds per call of ``verb`` over ``keys`` (``fresh``: new keys each round), or
    over one of ``slices`` slices of them in turn."""

    def measure(turn: int) -> float:
        part = keys[turn % slices :: slices]
        names = [_fresh_name(key, turn) for key in part] if fresh else part
        call = ops[verb]
        start = time.perf_counter()
        if verb == "dump":
            for key in names:
                call(key, DOC)
        else:
            for key in names:
                call(key)
        return (time.perf_counter() - start) / len(names) * 1e6

    return measure


def _fresh_name(key: str, turn: int) -> str:
    """A key no earlier round wrote, in the same folder as ``key``."""
    folder, _, name = key.rpartition("/")
    return f"{folder}/r{turn}-{name}" if folder else f"r{turn}-{key}"


def counting(ops: Ops) -> Callable[[int], float]:
    """Microseconds per ``len``, called again and again (nothing written between the calls),
    after one call not timed: a round's first call may walk, and a walk of 20,000 files that
    takes longer than the round's 50 ms would otherwise be most of the figure."""

    def measure(turn: int) -> float:
        ops["len"]()  # the first call of a round may walk (a count remembered is a second old at most)
        calls, start = 0, time.perf_counter()
        while calls < 100 and (calls < 3 or time.perf_counter() - start < 0.05):
            ops["len"]()
            calls += 1
        return (time.perf_counter() - start) / calls * 1e6  # 100 calls, or 50 ms of them

    return measure


def counting_after_write(ops: Ops, key: str) -> Callable[[int], float]:
    """Microseconds per ``len`` called right after a write of ``key`` (an overwrite) by the
    same process: what a store that remembers counts must find out afresh."""

    def measure(turn: int) -> float:
        ops["len"]()  # as above: what is measured is the len after each write, not the round's first
        calls, spent = 0, 0.0
        while calls < 20 and (calls < 3 or spent < 0.05):
            ops["dump"](key, DOC)
            start = time.perf_counter()
            ops["len"]()
            spent += time.perf_counter() - start
            calls += 1
        return spent / calls * 1e6

    return measure


#: what a peer cannot do: minimalkv's keys have no "/"
_NO_FOLDERS = {"minimalkv FilesystemStore"}


def local_calls(bench: Bench, base: Path, count: int) -> None:
    """dump (new key, overwrite; flat ``user-N`` and nested ``users/N``), load, in and len of
    ``count`` keys: microseconds per call, each against the raw atomic write of the same run."""
    stores: dict[str, tuple[str, Ops]] = {
        "raw files (temp + rename in the key's folder; open + read; scandir walk)": (
            LIMIT,
            _raw(base / "raw"),
        )
    }
    stores["backends folder (FileSystemJsonBackend)"] = (OURS, _ours(FileSystemJsonBackend(base / "folder")))
    stores["backends SQLite (SqliteJsonBackend)"] = (
        OURS,
        _ours(SqliteJsonBackend(base / "sqlite" / "kv.db")),
    )
    stores["backends JsonCache"] = (OURS, _ours(JsonCache(base / "cache", timeout=3600)))
    stores.update({name: (PEER, ops) for name, ops in _peers(base, bench).items()})
    flat = [f"user-{i:05d}" for i in range(count)]
    nested = [f"users/{i}" for i in range(count)]
    nesting = {who: kind_ops for who, kind_ops in stores.items() if who not in _NO_FOLDERS}

    for who, (_, ops) in stores.items():  # the keys every later call finds
        for key in flat + (nested if who in nesting else []):
            ops["dump"](key, DOC)
    works: list[tuple[str, dict[str, tuple[str, Ops]], Callable[[Ops], Callable[[int], float]]]] = [
        ("dump, new key", stores, lambda ops: per_call(ops, flat, "dump", fresh=True, slices=SLICES)),
        ("dump, overwrite", stores, lambda ops: per_call(ops, flat, "dump", slices=SLICES)),
        (
            "dump, new key, nested (users/N)",
            nesting,
            lambda ops: per_call(ops, nested, "dump", fresh=True, slices=SLICES),
        ),
        (
            "dump, overwrite, nested (users/N)",
            nesting,
            lambda ops: per_call(ops, nested, "dump", slices=SLICES),
        ),
        ("load", stores, lambda ops: per_call(ops, flat, "load")),
        ("in", stores, lambda ops: per_call(ops, flat, "in")),
        (f"len of {2 * count:,} (+ the new keys), called again and again", stores, counting),
        (
            f"len of {2 * count:,} (+ the new keys), right after a write",
            stores,
            lambda ops: counting_after_write(ops, flat[0]),
        ),
    ]
    for work, among, make in works:
        rounds = bench.rounds * SLICES if work.startswith("dump") else None
        contenders = {who: (kind, make(ops)) for who, (kind, ops) in among.items()}
        bench.compare(SECTION, work, "us", contenders, rounds)
    in_memory(bench, count)


#: a filesystem in memory, where a write costs no disk: what is left is the software's own cost
TMPFS = Path("/dev/shm")
IN_MEMORY = "files and caches on tmpfs (/dev/shm, no disk): the software's own cost of a 1 KiB JSON dump"


def in_memory(bench: Bench, count: int) -> None:
    """The four dumps again on tmpfs, against the raw write there (a disk's flushes, which
    fall on whoever writes when they come, dominate and blur these ratios on a disk)."""
    if not TMPFS.is_dir() or not os.access(TMPFS, os.W_OK):
        bench.notes.append(f"{IN_MEMORY}: not measured, no writable {TMPFS}")
        return
    base = Path(tempfile.mkdtemp(prefix="backends-bench-", dir=TMPFS))
    try:
        stores: dict[str, tuple[str, Ops]] = {
            "raw files (temp + rename in the key's folder)": (LIMIT, _raw(base / "raw")),
            "backends folder (FileSystemJsonBackend)": (OURS, _ours(FileSystemJsonBackend(base / "folder"))),
            "backends JsonCache": (OURS, _ours(JsonCache(base / "cache", timeout=3600))),
        }
        flat = [f"user-{i:05d}" for i in range(count)]
        nested = [f"users/{i}" for i in range(count)]
        for _, ops in stores.values():
            for key in flat + nested:
                ops["dump"](key, DOC)
        works = [
            ("dump, new key", flat, True),
            ("dump, overwrite", flat, False),
            ("dump, new key, nested (users/N)", nested, True),
            ("dump, overwrite, nested (users/N)", nested, False),
        ]
        for work, keys, fresh in works:
            contenders = {
                who: (kind, per_call(ops, keys, "dump", fresh, SLICES)) for who, (kind, ops) in stores.items()
            }
            bench.compare(IN_MEMORY, work, "us", contenders, bench.rounds * SLICES)
    finally:
        shutil.rmtree(base, ignore_errors=True)


BOUNDED = "bounded caches: 1 KiB JSON, maxbytes against diskcache's size_limit"


def bounded_calls(bench: Bench, base: Path, count: int) -> None:
    """load (a hit) and dump of a new key on SQLite stores and folder caches bounded to about
    half of ``count`` entries, under the bound and past it (each dump then removes one),
    against the same store unbounded and diskcache with its own ``size_limit`` (its default
    policy, and its LRU)."""
    half = count * len(json.dumps(DOC)) // 2
    stores: dict[str, tuple[str, Ops]] = {
        "backends SQLite, unbounded": (LIMIT, _ours(SqliteJsonBackend(base / "unbounded.db"))),
        "backends SQLite maxbytes, under it": (
            OURS,
            _ours(SqliteJsonBackend(base / "under.db", maxbytes=100 * half)),
        ),
        "backends SQLite maxbytes, past it": (
            OURS,
            _ours(SqliteJsonBackend(base / "past.db", maxbytes=half)),
        ),
        "backends JsonCache, unbounded": (LIMIT, _ours(JsonCache(base / "jc-unbounded", timeout=None))),
        "backends JsonCache maxbytes, under it": (
            OURS,
            _ours(JsonCache(base / "jc-under", timeout=None, maxbytes=100 * half)),
        ),
        "backends JsonCache maxbytes, past it": (
            OURS,
            _ours(JsonCache(base / "jc-past", timeout=None, maxbytes=half)),
        ),
    }
    try:
        import diskcache

        for policy, name in [("least-recently-stored", "default"), ("least-recently-used", "LRU")]:
            for where, limit in [("under it", 100 * half), ("past it", half)]:
                cache = diskcache.Cache(
                    str(base / f"dc-{name}-{limit}"), size_limit=limit, eviction_policy=policy
                )
                ops = {"dump": cache.set, "load": cache.get, "in": cache.__contains__, "len": cache.__len__}
                stores[f"diskcache size_limit ({name}), {where}"] = (PEER, ops)
    except ImportError:
        bench.lacking("diskcache", "not installed: pip install -e '.[bench]'")
    keys = [f"user-{i:05d}" for i in range(count)]
    for _, ops in stores.values():
        for key in keys:
            ops["dump"](key, DOC)
    hits = keys[-count // 4 :]  # the newest quarter: kept by every store, whatever its policy
    works: list[tuple[str, Callable[[Ops], Callable[[int], float]]]] = [
        ("load (a hit)", lambda ops: per_call(ops, hits, "load")),
        ("dump, new key", lambda ops: per_call(ops, keys, "dump", fresh=True)),
    ]
    for work, make in works:
        bench.compare(BOUNDED, work, "us", {who: (kind, make(ops)) for who, (kind, ops) in stores.items()})


def _walk(root: str) -> int:
    """The physical limit of a listing: a raw scandir walk counting files."""
    found, folders = 0, [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    found += 1
    return found


def fill_folder(root: Path, count: int) -> None:
    """``count`` keys in folders of 1,000, written as our escaped layout writes plain names."""
    store = FileSystemJsonBackend(root, layout="escaped")
    store["seed"] = 1  # records the layout
    os.remove(root / "seed")
    for start in range(0, count, 1000):
        folder = root / f"d{start // 1000:04d}+"
        folder.mkdir()
        for i in range(start, min(count, start + 1000)):
            fd = os.open(folder / f"k{i:07d}", os.O_WRONLY | os.O_CREAT, 0o666)
            os.write(fd, b"1")
            os.close(fd)


def peak(action: Callable[[], object]) -> tuple[float, float]:
    """Seconds and peak traced Python memory (MiB) of ``action``."""
    tracemalloc.start()
    try:
        start = time.perf_counter()
        action()
        elapsed = time.perf_counter() - start
        return elapsed, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def scale_on_disk(bench: Bench, base: Path, sizes: list[int]) -> None:
    """keys() and len on a folder tree and on SQLite: time, and peak memory, at each size."""
    for count in sizes:
        _scale(bench, base, count)


def _scale(bench: Bench, base: Path, count: int) -> None:
    section = f"scale: {count:,} keys on disk"
    root = base / f"tree-{count}"
    fill_folder(root, count)
    folder = FileSystemJsonBackend(root)
    sqlite = SqliteRawBackend(base / f"scale-{count}.db")
    for start in range(0, count, 50_000):
        batch = range(start, min(count, start + 50_000))
        sqlite.dump_many({f"d{i // 1000:04d}/k{i:07d}": b"1" for i in batch})
    listings = {
        "raw scandir walk": (LIMIT, lambda: _walk(str(root))),
        "backends folder keys()": (OURS, lambda: sum(1 for _ in folder)),
        "backends folder len": (OURS, lambda: len(folder)),
        "backends SQLite keys()": (OURS, lambda: sum(1 for _ in sqlite)),
        "backends SQLite len": (OURS, lambda: len(sqlite)),
    }
    listed(bench, section, listings, rounds=max(2, bench.rounds - 2) if count >= 1_000_000 else None)
    shutil.rmtree(root, ignore_errors=True)


def listed(
    bench: Bench,
    section: str,
    listings: dict[str, tuple[str, Callable[[], object]]],
    rounds: int | None = None,
) -> None:
    """Time each listing (ms) over interleaved rounds, then its peak Python memory in a pass of
    its own (tracing allocations slows Python code far more than a raw walk: never timed)."""

    def timed(action: Callable[[], object]) -> Callable[[int], float]:
        def measure(turn: int) -> float:
            start = time.perf_counter()
            action()
            return (time.perf_counter() - start) * 1000

        return measure

    contenders = {who: (kind, timed(action)) for who, (kind, action) in listings.items()}
    bench.compare(section, "listing", "ms", contenders, rounds)
    for who, (kind, action) in listings.items():
        mib = peak(action)[1]
        bench.row(section, "peak Python memory of the listing", who, kind, "MiB").values.append(mib)
