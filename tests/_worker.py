"""Worker processes for the multi-process tests: ``python _worker.py MODE ROOT ...``."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Callable
from typing import Any

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
    """A JSON backend from ``DIR``, ``redis://HOST:PORT/DB?prefix=P`` or ``s3:ENDPOINT BUCKET PREFIX``."""
    if where.startswith(("redis://", "sqlite://")):
        from backends import open_url

        return open_url(where)
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


def load_together(tier: BaseBackend[Any, Any], threads: int) -> list[object]:
    """On a line from stdin, load "hot" from ``threads`` threads at once; the values they got."""
    import threading

    start = threading.Barrier(threads)
    values: list[object] = []

    def load() -> None:
        start.wait()
        values.append(tier.load("hot"))

    sys.stdin.readline()  # start together (with the other processes)
    workers = [threading.Thread(target=load) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return values


def tier_load(cache_root: str, where: str, threads: int) -> None:
    """Load "hot" through a tier on a shared cache folder from ``threads`` threads at once."""

    from backends import JsonCache, TieredBackend

    tier = TieredBackend(JsonCache(cache_root), open_store(where))
    values = load_together(tier, threads)
    stats = tier.stats
    print(json.dumps({"values": values, "origin_requests": stats.origin_requests, "hits": stats.hits}))


def tier3_load(cache_root: str, shared_url: str, where: str, threads: int) -> None:
    """Load "hot" from ``threads`` threads through a disk cache, then Redis, then ``where``."""
    from dataclasses import asdict

    from backends import JsonCache, TieredBackend, open_url

    shared = TieredBackend(open_url(shared_url), open_store(where))
    tier = TieredBackend(JsonCache(cache_root), shared)
    values = load_together(tier, threads)
    print(json.dumps({"values": values, "shared": asdict(shared.stats), "disk": asdict(tier.stats)}))


def events_scenario(cache_root: str, redis_url: str, stream: str, where: str) -> None:
    """Run "load KEY" / "dump KEY N" lines from stdin through a tier, telling every event
    to a Redis stream and a memory ring; answer "ok" per line, then print the ring as JSON."""
    from backends import JsonCache, TieredBackend, subscribe
    from backends.events import MemorySink
    from backends.redis.stream import RedisStreamSink

    tier = TieredBackend(JsonCache(cache_root), open_store(where))
    sink, memory = RedisStreamSink(redis_url, stream=stream, interval=0.01), MemorySink()
    with subscribe(sink), subscribe(memory):
        for line in sys.stdin:
            command, *words = line.split()
            if command == "quit":
                break
            key, value = words[0], words[1:]
            if command == "load":
                tier.load(key)
            else:
                tier[key] = {"n": int(value[0])}
            print("ok", flush=True)
    sink.close()
    print(json.dumps([event._asdict() for event in memory]), flush=True)


def writer_of(kind: str, root: str) -> tuple[BaseBackend[Any, Any], Callable[[str, bytes], object]]:
    """A backend of ``kind`` on ``root`` and the write the kill loop repeats."""
    from backends import JsonCache, TieredBackend

    if kind == "fs":
        fs = FileSystemRawBackend(root)
        return fs, fs.dump
    if kind == "file":
        fs = FileSystemRawBackend(root)
        spool = os.path.join(root, "~spool")  # "~": never a key

        def from_file(key: str, value: bytes) -> object:
            with open(spool, "wb") as out:
                out.write(value)
            return fs.dump_file(key, spool)

        return fs, from_file
    if kind == "sqlite":
        from backends import SqliteRawBackend

        store = SqliteRawBackend(os.path.join(root, "kv.db"))
        return store, lambda key, value: store.dump_many({key: value, f"{key}/copy": value})
    if kind == "cache":
        cache = JsonCache(root, timeout=0.001)  # expiring while others look
        return cache, lambda key, value: cache.dump(key, value.hex(), timeout=random.choice([0, 300]))
    # A killed writer holds its key's lock until the lease ends: 0.2 s here.
    tier = TieredBackend(
        JsonCache(os.path.join(root, "cache")), FileSystemJsonBackend(os.path.join(root, "origin")), lease=0.2
    )
    return tier, lambda key, value: tier.dump(key, value.hex())


def flip_kind(kind: str, root: str) -> None:
    """Overwrite two keys of a ``kind`` backend forever, until killed."""
    _, write = writer_of(kind, root)
    i = 0
    while True:
        write("blob", blob(i))
        write("dir/blob", blob(i + 1))
        if i == 0:
            print("ready", flush=True)
        i += 1


def expiry_writer(root: str, rounds: int) -> None:
    """Expire a key, write it fresh, read it back: the read must give what was written."""
    from backends import JsonCache

    cache = JsonCache(root)
    sys.stdin.readline()
    lost = 0
    for n in range(rounds):
        cache.dump("k", -1, timeout=0)
        cache.dump("k", n, timeout=300)
        if cache.load("k") != n:
            lost += 1
    print(json.dumps({"rounds": rounds, "lost": lost}), flush=True)


def purger(root: str) -> None:
    """Purge and look at "k" until stdin closes or the process is killed."""
    from backends import JsonCache

    cache = JsonCache(root)
    print("ready", flush=True)
    n = 0
    while True:
        cache.purge()
        "k" in cache  # noqa: B015 - meeting the key removes it if expired
        n += 1


def absent_writer(root: str, rounds: int) -> None:
    """Create "k" only if absent; count the wins (each must find no fresh value)."""
    from backends import JsonCache

    cache = JsonCache(root)
    sys.stdin.readline()
    wins = sum(cache.dump("k", "x", if_absent=True) for _ in range(rounds))
    print(json.dumps({"wins": wins}), flush=True)


def popper(root: str, keys: int, seed: int) -> None:
    """Pop every key ``p/<i>`` in an order of its own; print the values this process got."""
    backend = FileSystemJsonBackend(root)
    order = [f"p/{i}" for i in range(keys)]
    random.Random(seed).shuffle(order)
    order.sort(key=lambda key: int(key[2:]) // 10)  # shuffled within runs of 10: many collisions
    sys.stdin.readline()
    got = [value for key in order if (value := backend.pop(key, None)) is not None]
    print(json.dumps(got), flush=True)


def tier_racer(root: str, role: str, index: int, rounds: int) -> None:
    """Write increasing numbers, or read, through tiers on one cache folder and one origin folder.

    Half the racers hold leases of 2 ms, so leases run out mid-load and mid-write.
    """
    from backends import JsonCache, TieredBackend

    lease = 0.002 if index % 2 else 30.0
    tier = TieredBackend(
        JsonCache(os.path.join(root, "cache")),
        FileSystemJsonBackend(os.path.join(root, "origin")),
        lease=lease,
    )
    keys = [f"k{i}" for i in range(4)]
    rng = random.Random(index)
    sys.stdin.readline()
    for n in range(rounds):
        key = rng.choice(keys)
        if role == "writer":
            tier[key] = {"writer": index, "n": n}
        elif rng.random() < 0.5:
            tier.load(key)
        else:
            tier.load_many(rng.sample(keys, 2))
    print("done", flush=True)


def die_removing(root: str) -> None:
    """Meet an expired entry, let a fresh one be written, and die while deciding what to remove."""
    from clock import FrozenClock

    from backends import JsonCache

    class Clock(FrozenClock):
        readings = 0

        def __call__(self) -> float:
            self.readings += 1
            if self.readings == 1:  # the entry was just seen expired
                JsonCache(root, timeout=300, clock=FrozenClock(self.now)).dump("k", "fresh")
            elif self.readings == 2:
                os._exit(17)
            return self.now

    writer = JsonCache(root, timeout=10, clock=FrozenClock())
    writer.dump("k", "old")
    clock = Clock(FrozenClock().now + 20)
    JsonCache(root, clock=clock).load("k")
    raise SystemExit("the clock was not read twice")


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
    elif mode == "tier3":
        tier3_load(root, rest[0], rest[1], int(rest[2]))
    elif mode == "events":
        events_scenario(root, rest[0], rest[1], rest[2])
    elif mode == "hold":
        hold(root, float(rest[0]))
    elif mode == "die-removing":
        die_removing(root)
    elif mode == "flip-kind":
        flip_kind(rest[0], root)
    elif mode == "expiry-writer":
        expiry_writer(root, int(rest[0]))
    elif mode == "purger":
        purger(root)
    elif mode == "absent-writer":
        absent_writer(root, int(rest[0]))
    elif mode == "popper":
        popper(root, int(rest[0]), int(rest[1]))
    elif mode == "tier-racer":
        tier_racer(root, rest[0], int(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
