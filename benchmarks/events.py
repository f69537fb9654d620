"""What events cost: hits with nobody subscribed, against a build without events, and per sink.

    python benchmarks/events.py [--against REV] [--rounds 7] [--ops 20000]

Runs the same hits (``JsonCache.load`` served from its memo, a
``TieredBackend(JsonCache, folder)`` hit, ``MemoryCache.load``,
``VolatileBackend.load``) under this tree and under a git worktree of
``REV`` (default: the commit before events were added), in child processes
taking turns, and prints the medians and the ratio. Then, in this tree, the
same tier hit with a subscriber: a no-op callable, the memory ring, the
counters, the logging sink with its logger off and on (to a null handler),
and the Redis stream (a loopback redis-server; the calls' cost, the sending
is the background thread's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEFORE_EVENTS = "fc0836e"  # the last commit without backends.events

DOC = {"id": 42, "name": "Ada Lovelace", "tags": ["math", "engines"], "bio": "x" * 900}


def hits(folder: str) -> dict[str, Callable[[], object]]:
    """The hits to time, on stores made in ``folder`` (by whichever build is imported)."""
    from backends import FileSystemJsonBackend, JsonCache, MemoryCache, TieredBackend, VolatileBackend

    cache = JsonCache(Path(folder) / "cache", timeout=3600)
    cache["k"] = DOC
    tier = TieredBackend(
        JsonCache(Path(folder) / "tier", timeout=3600), FileSystemJsonBackend(Path(folder) / "o")
    )
    tier["k"] = DOC
    memory = MemoryCache(timeout=3600)
    memory["k"] = DOC
    volatile = VolatileBackend()
    volatile["k"] = DOC
    return {
        "JsonCache.load hit": lambda: cache.load("k"),
        "TieredBackend hit": lambda: tier.load("k"),
        "MemoryCache.load hit": lambda: memory.load("k"),
        "VolatileBackend.load": lambda: volatile.load("k"),
    }


def per_call(action: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(action, number=number, repeat=3)) / number * 1e9


def measure(ops: int) -> None:
    """Child mode: time every hit once, print ns per call as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps({name: per_call(call, ops) for name, call in hits(folder).items()}))


def child(build: Path, ops: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(build)}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", "--ops", str(ops)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=build,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def sinks(ops: int) -> None:
    from backends.events import Counters, LoggingSink, MemorySink, subscribe

    quiet = logging.getLogger("bench.quiet")
    quiet.disabled = True
    loud = logging.getLogger("bench.loud")
    loud.addHandler(logging.NullHandler())
    loud.setLevel(logging.DEBUG)
    loud.propagate = False
    with tempfile.TemporaryDirectory() as folder:
        tier = hits(folder)["TieredBackend hit"]
        base = statistics.median(per_call(tier, ops) for _ in range(5))
        print(f"\nTieredBackend hit with a subscriber (this tree; nobody: {base:,.0f} ns):")
        for name, sink in {
            "a no-op callable": lambda event: None,
            "MemorySink": MemorySink(),
            "Counters": Counters(),
            "LoggingSink, logger off": LoggingSink(quiet),
            "LoggingSink, to a handler": LoggingSink(loud),
        }.items():
            with subscribe(sink):
                cost = statistics.median(per_call(tier, ops) for _ in range(5))
            print(f"  {name:28} {cost:8,.0f} ns  +{cost - base:6,.0f} ns  ({cost / base:.2f}x)")
        sys.path.insert(0, str(ROOT / "tests"))  # the loopback redis-server lives with the tests
        from servers import redis_server

        from backends.redis.stream import RedisStreamSink

        with redis_server() as url:
            stream = RedisStreamSink(url, maxlen=100_000, queue_size=1_000_000)
            with subscribe(stream):
                cost = statistics.median(per_call(tier, ops) for _ in range(5))
                stream.flush(timeout=60)
            print(
                f"  {'RedisStreamSink':28} {cost:8,.0f} ns  +{cost - base:6,.0f} ns  ({cost / base:.2f}x)"
                f"  sent {stream.sent:,}, dropped {stream.dropped:,}"
            )
            stream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default=BEFORE_EVENTS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.ops)
        return
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before), args.against],
            check=True,
        )
        try:
            runs: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
            for _ in range(args.rounds):
                runs["before"].append(child(before, args.ops))
                runs["now"].append(child(ROOT, args.ops))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=True)
    print(f"nobody subscribed: ns per call, medians of {args.rounds} interleaved runs")
    print(f"  {'':28} {args.against:>9} {'now':>9}  ratio")
    for name in runs["now"][0]:
        old = statistics.median(run[name] for run in runs["before"])
        new = statistics.median(run[name] for run in runs["now"])
        print(f"  {name:28} {old:9,.0f} {new:9,.0f}  {new / old:5.3f}")
    sinks(args.ops)


if __name__ == "__main__":
    main()
