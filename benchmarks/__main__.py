"""``python -m benchmarks``: every measurement against every peer, in one run.

    python -m benchmarks [--quick] [--only SECTION ...] [--out benchmarks/results]

Local stores (folder, SQLite, JsonCache) against raw file I/O, diskcache,
fsspec and minimalkv; S3 on moto's server and SeaweedFS (each in its own
process) against raw boto3, raw obstore, s3fs and minimalkv (wall time,
client CPU, server CPU, requests counted at the server); ``load_many``
through a proxy adding 20 ms per request; tiers; Redis against redis-py;
listings at scale (time and peak memory); streaming (peak RSS); ``@cached``
against functools, cachetools, dogpile.cache, diskcache and aiocache (a hit;
how often a stampede runs the body); codecs (compression, encryption, typed
models: time and stored bytes). Rounds are
interleaved; each figure is a median with min-max and its ratio to the
limit measured in the same run. ``--quick`` (under two minutes) uses small
sizes; the full run (under fifteen) goes to 1,000,000 keys and 1 GiB.
Results: ``<out>/quick|full.json``, ``.md`` and ``.rst`` (README's table). Peers come with
``pip install -e '.[bench]'``; a missing one is reported missing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the loopback servers

from .cached import cached_section
from .codecs import codecs_section
from .harness import Bench
from .local import bounded_calls, local_calls, scale_on_disk
from .remote import redis_section, s3_scale, s3_servers, streaming, through_latency, tiers

SECTIONS = ("local", "s3", "latency", "tiers", "redis", "scale", "streaming", "cached", "codecs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: under two minutes")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 3 quick, 5 full)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections of the last report in --out (with --only)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    bench = Bench(args.rounds or (3 if quick else 5), quick)
    chosen = set(args.only or SECTIONS)
    base = Path(tempfile.mkdtemp(prefix="backends-bench-"))
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    sections: dict[str, Callable[[], object]] = {
        "local": lambda: (
            local_calls(bench, base / "local", 1_000 if quick else 10_000),
            bounded_calls(bench, base / "bounded", 1_000 if quick else 10_000),
        ),
        "s3": lambda: s3_servers(bench, 100 if quick else 400),
        "latency": lambda: through_latency(bench, 300 if quick else 10_000, 20),
        "tiers": lambda: tiers(bench, base, 300 if quick else 10_000),
        "redis": lambda: redis_section(bench, 1_000 if quick else 10_000, sizes[:1] if quick else sizes),
        "scale": lambda: (scale_on_disk(bench, base, sizes), s3_scale(bench, 2_000 if quick else 100_000)),
        "streaming": lambda: streaming(bench, 64 if quick else 1024),
        "cached": lambda: cached_section(bench, base / "cached", 2_000 if quick else 20_000),
        "codecs": lambda: codecs_section(bench, quick),
    }
    try:
        for name, run in sections.items():
            if name in chosen:
                try:
                    run()
                except (ImportError, RuntimeError) as exc:  # a server or peer this machine lacks
                    bench.lacking(f"the {name} section", str(exc))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    earlier = args.out / f"{'quick' if quick else 'full'}.json"
    if args.merge and earlier.exists():
        bench.merge(earlier)
    written = bench.write(args.out)
    print()
    print(bench.as_markdown())
    print("written:", ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
