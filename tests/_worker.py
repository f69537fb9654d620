"""Worker processes for the multi-process tests: ``python _worker.py MODE ROOT ...``."""

from __future__ import annotations

import hashlib
import json
import random
import sys

from backends import BaseBackend, FileSystemJsonBackend, FileSystemRawBackend


def blob(i: int) -> bytes:
    """A value whose every byte is fixed by the 8-byte header: torn values show."""
    size = 100_000 + (i % 7) * 60_000
    return i.to_bytes(8, "big") + bytes([i % 251]) * size


def is_whole_blob(value: bytes) -> bool:
    return len(value) >= 8 and value == blob(int.from_bytes(value[:8], "big"))


def document(writer: int, n: int, rng: random.Random) -> dict[str, object]:
    pad = "x" * rng.randrange(0, 50_000)
    check = hashlib.sha256(f"{writer}:{n}:{pad}".encode()).hexdigest()
    return {"writer": writer, "n": n, "pad": pad, "check": check}


def is_whole_document(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    digest = hashlib.sha256(f"{value['writer']}:{value['n']}:{value['pad']}".encode()).hexdigest()
    return bool(value["check"] == digest)


def flip(root: str) -> None:
    """Overwrite two keys forever, until killed."""
    backend = FileSystemRawBackend(root)
    i = 0
    while True:
        backend["blob"] = blob(i)
        backend["dir/blob"] = blob(i + 1)
        if i == 0:
            print("ready", flush=True)
        i += 1


def mix(root: str, writer: int, steps: int) -> None:
    """Random writes, reads and deletes on a few shared keys; exit 1 on a torn value."""
    backend = FileSystemJsonBackend(root)
    rng = random.Random(writer)
    keys = ["k", "k/0", "k/1", "k/1/deep", "other/2"]
    counts = {"dump": 0, "load": 0, "delete": 0, "whole": 0}
    for n in range(steps):
        key = rng.choice(keys)
        action = rng.choices(["dump", "load", "delete"], [4, 5, 1])[0]
        counts[action] += 1
        if action == "dump":
            backend[key] = document(writer, n, rng)
        elif action == "delete":
            backend.delete(key)
        else:
            value = backend.load(key)
            if value is not None:
                if not is_whole_document(value):
                    print(f"torn value at {key!r}", file=sys.stderr)
                    sys.exit(1)
                counts["whole"] += 1
    print(json.dumps(counts), flush=True)


def race(root: str, writer: int) -> None:
    """On a line from stdin, try to create 100 keys; print the ones won."""
    backend = FileSystemJsonBackend(root)
    sys.stdin.readline()
    won = [f"race/{i}" for i in range(100) if backend.dump(f"race/{i}", writer, if_absent=True)]
    print(json.dumps(won), flush=True)


def open_store(where: str) -> BaseBackend[object, bytes]:
    """A JSON backend from ``DIR`` or ``s3:ENDPOINT BUCKET PREFIX`` (space separated)."""
    if not where.startswith("s3:"):
        return FileSystemJsonBackend(where)
    from servers import S3Target

    from backends import S3JsonBackend

    endpoint, bucket, prefix = where[3:].split(" ")
    options = S3Target("worker", endpoint, bucket, None).options()
    return S3JsonBackend(bucket, prefix=prefix, **options)


def increment(where: str, times: int) -> None:
    """Add 1 to the counter ``n`` ``times``, each under ``lock("n")``."""
    backend = open_store(where)
    sys.stdin.readline()  # start together
    for _ in range(times):
        with backend.lock("n", timeout=60, ttl=30):
            backend["n"] = backend.load("n", 0) + 1
    print("done", flush=True)


def hold(where: str, ttl: float) -> None:
    """Take ``lock("n")`` with a short lease, say so, and wait to be killed."""
    backend = open_store(where)
    backend.lock("n", ttl=ttl).acquire()
    print("held", flush=True)
    sys.stdin.readline()


def tier_load(cache_root: str, where: str, threads: int) -> None:
    """Load "hot" through a tier on a shared cache folder from ``threads`` threads at once."""
    import threading

    from backends import JsonCache, TieredBackend

    tier = TieredBackend(JsonCache(cache_root), open_store(where))
    start = threading.Barrier(threads)
    values: list[object] = []

    def load() -> None:
        start.wait()
        values.append(tier.load("hot"))

    sys.stdin.readline()  # start together
    workers = [threading.Thread(target=load) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stats = tier.stats
    print(json.dumps({"values": values, "origin_requests": stats.origin_requests, "hits": stats.hits}))


if __name__ == "__main__":
    mode, root, *rest = sys.argv[1:]
    if mode == "flip":
        flip(root)
    elif mode == "mix":
        mix(root, int(rest[0]), int(rest[1]))
    elif mode == "race":
        race(root, int(rest[0]))
    elif mode == "increment":
        increment(root, int(rest[0]))
    elif mode == "tier":
        tier_load(root, rest[0], int(rest[1]))
    elif mode == "hold":
        hold(root, float(rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode}")
