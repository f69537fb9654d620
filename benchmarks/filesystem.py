"""Filesystem backend against the physical limit and its peers, in one run.

    python benchmarks/filesystem.py [--keys 10000] [--rounds 5]

Prints ops/s for 1 KiB JSON values: our ``load``/``dump`` next to a raw
``open``/``read``/``json.loads`` and a raw temporary file + ``os.replace``,
diskcache's ``Cache.get``/``set`` and fsspec's local mapper; then the time
and peak Python memory of ``keys()`` over 100,000 keys. Each figure is the
best of ``--rounds`` passes over every key. Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
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

from backends import FileSystemJsonBackend, FileSystemRawBackend

DOC: dict[str, Any] = {
    "id": 42,
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "tags": ["math", "engines", "poetry"],
    "scores": [1.5, 2.25, 3.125, 4.0625],
    "bio": "x" * 858,
    "active": True,
}


def best(rounds: int, keys: list[str], op: Callable[[str], object]) -> float:
    """Best ops/s over ``rounds`` passes of ``op`` over every key."""
    fastest = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for key in keys:
            op(key)
        fastest = min(fastest, time.perf_counter() - start)
    return len(keys) / fastest


def raw_ops(root: Path) -> tuple[Callable[[str], object], Callable[[str], object]]:
    counter = itertools.count()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def read(key: str) -> object:
        with open(root / key, "rb") as f:
            return json.loads(f.read())

    def write(key: str) -> object:
        path = root / key
        temp = f"{path}.{next(counter)}.tmp"
        fd = os.open(temp, flags, 0o666)
        try:
            os.write(fd, json.dumps(DOC).encode())
        finally:
            os.close(fd)
        os.replace(temp, path)
        return True

    return read, write


def peer_ops(root: Path) -> dict[str, tuple[Callable[[str], object], Callable[[str], object]]]:
    peers: dict[str, tuple[Callable[[str], object], Callable[[str], object]]] = {}
    try:
        import diskcache

        cache = diskcache.Cache(str(root / "diskcache"))
        peers["diskcache Cache"] = (cache.get, lambda key: cache.set(key, DOC))
    except ImportError:
        print("(diskcache not installed: pip install -e '.[bench]')")
    try:
        import fsspec

        mapper = fsspec.get_mapper(f"file://{root / 'fsspec'}", create=True)

        def fs_get(key: str) -> object:
            return json.loads(mapper[key])

        def fs_set(key: str) -> object:
            mapper[key] = json.dumps(DOC).encode()
            return True

        peers["fsspec mapper"] = (fs_get, fs_set)
    except ImportError:
        print("(fsspec not installed: pip install -e '.[bench]')")
    return peers


def listing(root: Path, count: int) -> tuple[float, int]:
    """Seconds and peak traced bytes to iterate ``count`` keys."""
    folder = root / "listing"
    folder.mkdir()
    for i in range(count):
        (folder / f"key-{i:07d}").write_bytes(b"1")
    backend = FileSystemJsonBackend(folder, layout="escaped")  # written by hand: say which layout
    tracemalloc.start()
    start = time.perf_counter()
    seen = sum(1 for _ in backend.keys())  # noqa: SIM118 - keys() is what is measured
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seen == count
    return elapsed, peak


def folder_listings(root: Path, count: int, rounds: int) -> dict[str, float]:
    """Milliseconds (best of ``rounds``) of each listing of ``count`` keys in 100 folders."""
    backend = FileSystemRawBackend(root / "folders")
    backend.dump_many({f"dir{i % 100:02d}/key-{i:07d}": b"1" for i in range(count)})

    def raw_walk() -> int:
        found, folders = 0, [str(backend.root)]
        while folders:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        found += 1
        return found

    listings: dict[str, Callable[[], object]] = {
        "raw scandir walk (the limit)": raw_walk,
        "iter(b)": lambda: sum(1 for _ in backend),
        "len(b)": lambda: len(backend),
        'list("", None): every key, sorted': lambda: sum(1 for _ in backend.list("", None)),
        'list(""): the 100 folders': lambda: sum(1 for _ in backend.list("")),
        'list("dir42/"): one folder\'s keys': lambda: sum(1 for _ in backend.list("dir42/")),
    }
    timings = {}
    for name, run in listings.items():
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        timings[name] = min(times) * 1000
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--list-keys", type=int, default=100_000)
    args = parser.parse_args()
    keys = [f"user-{i:05d}" for i in range(args.keys)]
    print(f"value: {len(json.dumps(DOC))} bytes of JSON; {args.keys} keys; best of {args.rounds}")
    base = Path(tempfile.mkdtemp(prefix="backends-bench-"))
    try:
        raw_root = base / "raw"
        raw_root.mkdir()
        raw_read, raw_write = raw_ops(raw_root)
        ours = FileSystemJsonBackend(base / "ours")
        results = {
            "raw atomic write (temp + os.replace)": best(args.rounds, keys, raw_write),
            "backends dump": best(args.rounds, keys, lambda key: ours.dump(key, DOC)),
        }
        for name, (_, write) in peer_ops(base).items():
            results[f"{name} set"] = best(args.rounds, keys, write)
        results["raw read (open/read/json.loads)"] = best(args.rounds, keys, raw_read)
        results["backends load"] = best(args.rounds, keys, ours.load)
        for name, (read, _) in peer_ops(base).items():
            results[f"{name} get"] = best(args.rounds, keys, read)
        for name, rate in results.items():
            print(f"{name:40s} {rate:>10,.0f} ops/s  {1e6 / rate:6.1f} us/op")
        write_ratio = results["raw atomic write (temp + os.replace)"] / results["backends dump"]
        read_ratio = results["raw read (open/read/json.loads)"] / results["backends load"]
        print(
            f"dump costs {write_ratio:.2f}x the raw atomic write; load costs {read_ratio:.2f}x the raw read"
        )
        elapsed, peak = listing(base, args.list_keys)
        print(
            f"keys() over {args.list_keys:,} keys: {elapsed:.2f} s, peak Python memory {peak / 1024:.0f} KiB"
        )
        for name, ms in folder_listings(base, args.list_keys, args.rounds).items():
            print(f"{name:40s} {ms:10.2f} ms ({args.list_keys:,} keys in 100 folders)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
