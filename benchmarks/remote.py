"""S3 (moto's server and SeaweedFS, each in its own process), the 20 ms proxy, tiers, Redis, scale
and streaming, against raw boto3, obstore, redis-py and the peer libraries."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from servers import CREDENTIALS, Proxy, free_port, redis_server, s3_client, seaweedfs

from backends import (
    JsonCache,
    MemoryCache,
    RedisJsonBackend,
    S3JsonBackend,
    SqliteJsonBackend,
    TieredBackend,
)

from .harness import LIMIT, OURS, PEER, Bench, cpu_of
from .local import DOC, listed
from .s3 import TRANSFER, answers, latency_proxy, process

__all__ = ["redis_section", "s3_servers", "streaming", "through_latency", "tiers"]

BODY = json.dumps(DOC).encode()
BUCKET = "bench"


@contextmanager
def moto_process() -> Iterator[tuple[str, int]]:
    """moto's server in its own process (its CPU apart from ours); its endpoint and PID."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(args, answers(endpoint)) as proc:
        yield endpoint, proc.pid


@contextmanager
def seaweed_process() -> Iterator[tuple[str, int]]:
    with seaweedfs() as endpoint:
        port = endpoint.rsplit(":", 1)[1]
        pid = next(
            int(entry)
            for entry in os.listdir("/proc")
            if entry.isdigit() and f"-s3.port={port}".encode() in _cmdline(entry)
        )
        yield endpoint, pid


def _listening(endpoint: str) -> int:
    """The PID of the process started with ``endpoint``'s port on its command line (the proxy)."""
    port = endpoint.rsplit(":", 1)[1]
    return next(
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and entry != str(os.getpid()) and f"port={port}".encode() in _cmdline(entry)
    )


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def raw_obstore_store(endpoint: str, timed: bool = False) -> Any:
    """A raw obstore store on ``endpoint``; ``timed``: with the connect and read timeouts the
    obstore engine sets (60 s, the backends' default ``timeout=``), whose timers cost a little
    on every request."""
    from obstore.store import S3Store

    config = {
        "endpoint": endpoint,
        "region": "us-east-1",
        "access_key_id": CREDENTIALS["aws_access_key_id"],
        "secret_access_key": CREDENTIALS["aws_secret_access_key"],
        "virtual_hosted_style_request": False,
    }
    options: dict[str, Any] = {"allow_http": True}
    if timed:
        options |= {
            "connect_timeout": timedelta(seconds=60),
            "read_timeout": timedelta(seconds=60),
            "timeout": timedelta(days=365),  # the engine's: a whole transfer is not bounded
        }
    return S3Store(BUCKET, config=config, client_options=options)  # type: ignore[arg-type]


def _readers(endpoint: str, bench: Bench) -> dict[str, tuple[str, Callable[[str], object]]]:
    """Who reads one 1 KiB JSON value, and how."""
    client = s3_client(endpoint)
    found: dict[str, tuple[str, Callable[[str], object]]] = {
        "raw boto3 get_object": (
            PEER,
            lambda key: json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()),
        ),
        "backends (boto3 engine)": (OURS, S3JsonBackend(BUCKET, client=client).load),
        "backends (obstore engine)": (OURS, S3JsonBackend(BUCKET, client=client, engine="obstore").load),
    }
    try:
        import obstore

        store = raw_obstore_store(endpoint)
        found["raw obstore get"] = (PEER, lambda key: json.loads(bytes(obstore.get(store, key).bytes())))
        timed = raw_obstore_store(endpoint, timed=True)
        found["raw obstore get, with the engine's connect and read timeouts"] = (
            PEER,
            lambda key: json.loads(bytes(obstore.get(timed, key).bytes())),
        )
    except ImportError:
        bench.lacking("obstore", "not installed: pip install -e '.[bench]'")
    try:
        import s3fs

        fs = s3fs.S3FileSystem(
            key=CREDENTIALS["aws_access_key_id"],
            secret=CREDENTIALS["aws_secret_access_key"],
            client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        )
        found["s3fs cat"] = (PEER, lambda key: json.loads(fs.cat(f"{BUCKET}/{key}")))
    except ImportError:
        bench.lacking("s3fs", "not installed: pip install -e '.[bench]'")
    try:
        import boto3
        from minimalkv.net.boto3store import Boto3Store

        resource = boto3.resource("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS)
        kv = Boto3Store(resource.Bucket(BUCKET))
        found["minimalkv Boto3Store"] = (PEER, lambda key: json.loads(kv.get(key)))
    except ImportError:
        bench.lacking("minimalkv", "not installed: pip install -e '.[bench]'")
    return found


def s3_servers(bench: Bench, ops: int) -> None:
    """One GET of 1 KiB JSON: wall time, client CPU, server CPU and requests, on each server."""
    for name, server in (("moto server", moto_process), ("SeaweedFS", seaweed_process)):
        with server() as (endpoint, pid):
            client = s3_client(endpoint)
            client.create_bucket(Bucket=BUCKET)
            keys = [f"doc-{i % 100:03d}" for i in range(ops)]
            for key in keys[:100]:
                client.put_object(Bucket=BUCKET, Key=key, Body=BODY, ContentType="application/json")
            section = f"S3 on {name}: one GET of 1 KiB JSON"
            readers = _readers(endpoint, bench)
            contenders = {
                who: (kind, _per_get(bench, section, who, kind, read=read, keys=keys, pid=pid))
                for who, (kind, read) in readers.items()
            }
            bench.compare(section, "wall time", "us", contenders)
            if name == "moto server":
                _requests(bench, section, endpoint, keys[:20])


def _per_get(
    bench: Bench,
    section: str,
    who: str,
    kind: str,
    *,
    read: Callable[[str], object],
    keys: list[str],
    pid: int,
) -> Callable[[int], float]:
    def measure(turn: int) -> float:
        for key in keys[:5]:
            read(key)  # a warm connection
        start = time.perf_counter()
        with cpu_of() as client_cpu, cpu_of(pid) as server_cpu:
            for key in keys:
                read(key)
        elapsed = time.perf_counter() - start
        bench.row(section, "client CPU", who, kind, "us").values.append(client_cpu[0] / len(keys) * 1e6)
        bench.row(section, "server CPU", who, kind, "us").values.append(server_cpu[0] / len(keys) * 1e6)
        return elapsed / len(keys) * 1e6

    return measure


def _requests(bench: Bench, section: str, endpoint: str, keys: list[str]) -> None:
    """Requests per GET, counted at a proxy in front of the server (a separate, untimed pass)."""
    with Proxy(endpoint) as proxy:
        readers = _readers(proxy.endpoint, bench)
        for who, (kind, read) in readers.items():
            before = sum(proxy.requests.values())
            for key in keys:
                read(key)
            sent = (sum(proxy.requests.values()) - before) / len(keys)
            bench.row(section, "requests per GET (at the server)", who, kind, "requests").values.append(sent)


def through_latency(bench: Bench, count: int, latency_ms: float) -> None:
    """load_many of ``count`` small values through a proxy adding ``latency_ms`` to each request."""
    section = f"S3 (SeaweedFS) through a {latency_ms:.0f} ms proxy: load_many of {count:,} values of 1 KiB"
    with seaweed_process() as (endpoint, server_pid):
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        keys = [f"k{i:05d}" for i in range(count)]
        S3JsonBackend(BUCKET, client=client, engine="obstore").dump_many(dict.fromkeys(keys, DOC))
        with latency_proxy(endpoint, latency_ms / 1000) as far:
            proxy_pid = _listening(far)
            far_client = s3_client(far, max_pool_connections=64)
            boto3_engine = S3JsonBackend(BUCKET, client=far_client)
            obstore_engine = S3JsonBackend(BUCKET, client=far_client, engine="obstore")

            def raw_pool() -> object:
                with ThreadPoolExecutor(16) as pool:
                    return list(
                        pool.map(lambda k: far_client.get_object(Bucket=BUCKET, Key=k)["Body"].read(), keys)
                    )

            contenders: dict[str, tuple[str, Callable[[], object]]] = {
                "raw boto3, 16 threads": (PEER, raw_pool),
                "backends load_many (boto3 engine, 16 threads)": (OURS, lambda: boto3_engine.load_many(keys)),
                "backends load_many (obstore engine, 64 threads)": (
                    OURS,
                    lambda: obstore_engine.load_many(keys),
                ),
            }
            try:
                import obstore

                store = raw_obstore_store(far)

                def raw_obstore() -> object:
                    with ThreadPoolExecutor(64) as pool:
                        return list(pool.map(lambda k: obstore.get(store, k).bytes(), keys))

                contenders["raw obstore, 64 threads"] = (PEER, raw_obstore)
                twin = obstore_engine.aio()
                contenders["backends load_many (obstore engine, native async twin, 64 in flight)"] = (
                    OURS,
                    lambda: asyncio.run(twin.load_many(keys)),
                )
                contenders["raw obstore async, 64 in flight"] = (
                    PEER,
                    lambda: asyncio.run(_raw_async(store, keys)),
                )
            except ImportError:
                bench.lacking("obstore", "not installed: pip install -e '.[bench]'")

            def rate(who: str, kind: str, action: Callable[[], object]) -> Callable[[int], float]:
                def measure(turn: int) -> float:
                    start = time.perf_counter()
                    with cpu_of() as spent, cpu_of(server_pid) as served, cpu_of(proxy_pid) as proxied:
                        action()
                    elapsed = time.perf_counter() - start
                    for work, seconds in (("client", spent), ("server", served), ("proxy", proxied)):
                        row = bench.row(section, f"{work} CPU per key", who, kind, "us")
                        row.values.append(seconds[0] / count * 1e6)
                    return count / elapsed

                return measure

            # boto3's rounds take 40 s each: one is enough to show it 4x behind. The obstore
            # contenders (10 s a round) differ by a few percent: three rounds, interleaved.
            slow = {who for who in contenders if "boto3" in who}
            for group, rounds in ((slow, 1), (set(contenders) - slow, 3)):
                bench.compare(
                    section,
                    "throughput",
                    "keys/s",
                    {
                        who: (kind, rate(who, kind, action))
                        for who, (kind, action) in contenders.items()
                        if who in group
                    },
                    rounds=3 if bench.quick else rounds,
                )
            bench.notes.append(
                f"{section}: the proxy and the server share the {os.cpu_count()} cores with the client; "
                "the CPU per key of each shows who is the limit, and what each client could do alone."
            )


def _cpu(action: Callable[[], object], count: int) -> Callable[[int], float]:
    """Microseconds of this process's CPU per call: ``action`` makes ``count`` calls."""

    def measure(turn: int) -> float:
        start = time.process_time()
        action()
        return (time.process_time() - start) / count * 1e6

    return measure


async def _raw_async(store: Any, keys: list[str], in_flight: int = 64) -> list[object]:
    """Every key's value through obstore's async API, ``in_flight`` at a time (asyncio's idiom:
    a semaphore around each ``get_async``), decoded as ours is (JSON)."""
    import obstore

    slots = asyncio.Semaphore(in_flight)

    async def get(key: str) -> object:
        async with slots:
            result = await obstore.get_async(store, key)
            return json.loads(bytes(await result.bytes_async()))

    return await asyncio.gather(*(get(key) for key in keys))


def _rate(action: Callable[[], object], count: int) -> Callable[[int], float]:
    def measure(turn: int) -> float:
        start = time.perf_counter()
        action()
        return count / (time.perf_counter() - start)

    return measure


def tiers(bench: Bench, base: Path, ops: int) -> None:
    """A hit at each level of a tier, against the S3 GET a miss costs."""
    section = "tiers over S3 (moto server): load of 1 KiB JSON"
    with moto_process() as (endpoint, _):
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        origin = S3JsonBackend(BUCKET, client=client)
        origin["k"] = DOC
        levels: dict[str, Any] = {
            "S3 GET (a miss's cost)": origin,
            "hit in MemoryCache": TieredBackend(MemoryCache(timeout=3600), origin),
            "hit in JsonCache (a folder)": TieredBackend(
                JsonCache(base / "tier-cache", timeout=3600), origin
            ),
            "hit in SQLite (timeout=3600)": TieredBackend(
                SqliteJsonBackend(base / "tier.db", timeout=3600), origin
            ),
        }
        for level in levels.values():
            level.load("k")  # filled

        def per_load(level: Any) -> Callable[[int], float]:
            calls = min(ops, 200) if level is origin else ops  # a GET takes milliseconds

            def measure(turn: int) -> float:
                start = time.perf_counter()
                for _ in range(calls):
                    level.load("k")
                return (time.perf_counter() - start) / calls * 1e6

            return measure

        bench.compare(section, "load", "us", {who: (OURS, per_load(level)) for who, level in levels.items()})


def redis_section(bench: Bench, ops: int, sizes: list[int]) -> None:
    """Per-call load/dump and a bulk load against raw redis-py; then listings at scale."""
    import redis

    with redis_server() as url:
        raw = redis.Redis.from_url(url)
        ours = RedisJsonBackend(url, prefix="bench")
        keys = [f"k{i:05d}" for i in range(ops)]
        ours.dump_many(dict.fromkeys(keys, DOC))
        raw.mset({f"raw/{key}": BODY for key in keys})
        section = "Redis: 1 KiB JSON"

        def loop(call: Callable[[str], object]) -> Callable[[int], float]:
            def measure(turn: int) -> float:
                start = time.perf_counter()
                for key in keys:
                    call(key)
                return (time.perf_counter() - start) / len(keys) * 1e6

            return measure

        bench.compare(
            section,
            "load",
            "us",
            {
                "raw redis-py GET + json.loads": (
                    LIMIT,
                    loop(lambda k: json.loads(raw.get(f"raw/{k}") or b"")),
                ),
                "backends RedisJsonBackend": (OURS, loop(ours.load)),
            },
        )
        bench.compare(
            section,
            "dump",
            "us",
            {
                "raw redis-py SET + json.dumps": (
                    LIMIT,
                    loop(lambda k: raw.set(f"raw/{k}", json.dumps(DOC))),
                ),
                "backends RedisJsonBackend": (OURS, loop(lambda k: ours.dump(k, DOC))),
            },
        )
        raw_keys = [f"raw/{key}" for key in keys]
        # Client CPU (what the library adds; the round trip and the server's work left out), #29.
        bench.compare(
            section,
            "dump, client CPU",
            "us",
            {
                "raw redis-py SET + json.dumps": (
                    LIMIT,
                    _cpu(lambda: [raw.set(f"raw/{k}", json.dumps(DOC)) for k in keys], len(keys)),
                ),
                "backends RedisJsonBackend": (
                    OURS,
                    _cpu(lambda: [ours.dump(k, DOC) for k in keys], len(keys)),
                ),
            },
        )
        many = keys[:1000]
        raw_many = raw_keys[:1000]
        bench.compare(
            section,
            f"load_many of {len(many):,}, client CPU",
            "us",
            {
                "raw redis-py MGET + json.loads": (
                    LIMIT,
                    _cpu(lambda: [[json.loads(v) for v in raw.mget(raw_many) if v] for _ in range(10)], 10),
                ),
                "backends load_many": (OURS, _cpu(lambda: [ours.load_many(many) for _ in range(10)], 10)),
            },
        )
        bench.compare(
            section,
            f"load_many of {len(keys):,}",
            "keys/s",
            {
                "raw redis-py MGET + json.loads": (
                    LIMIT,
                    _rate(lambda: [json.loads(v) for v in raw.mget(raw_keys) if v], len(keys)),
                ),
                "backends load_many": (OURS, _rate(lambda: ours.load_many(keys), len(keys))),
            },
        )
        for count in sizes:
            store = RedisJsonBackend(url, prefix=f"scale{count}")
            for start in range(0, count, 50_000):
                store.dump_many({f"k{i:07d}": 1 for i in range(start, min(count, start + 50_000))})
            pattern = f"scale{count}*"
            listed(
                bench,
                f"scale: {count:,} keys in Redis",
                {
                    "raw redis-py SCAN": (
                        LIMIT,
                        lambda p=pattern: sum(1 for _ in raw.scan_iter(p, count=1000)),
                    ),
                    "backends keys()": (OURS, lambda s=store: sum(1 for _ in s)),
                    "backends len": (OURS, lambda s=store: len(s)),
                },
            )
            raw.flushdb()


def s3_scale(bench: Bench, count: int) -> None:
    """keys() and len of ``count`` objects on SeaweedFS: time and peak memory."""
    with seaweed_process() as (endpoint, _):
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        store = S3JsonBackend(BUCKET, prefix="scale", client=client, engine="obstore")
        for start in range(0, count, 10_000):
            store.dump_many({f"k{i:07d}": 1 for i in range(start, min(count, start + 10_000))})
        paginator = client.get_paginator("list_objects_v2")
        listed(
            bench,
            f"scale: {count:,} keys on S3 (SeaweedFS)",
            {
                "raw boto3 paginator": (
                    LIMIT,
                    lambda: sum(
                        len(p.get("Contents", ())) for p in paginator.paginate(Bucket=BUCKET, Prefix="scale/")
                    ),
                ),
                "backends keys()": (OURS, lambda: sum(1 for _ in store)),
                "backends len": (OURS, lambda: len(store)),
            },
            rounds=2 if bench.quick else 1,  # SeaweedFS lists 1,000 keys in about 250 ms
        )


def streaming(bench: Bench, mib: int) -> None:
    """Peak RSS growth of dump_file + load_file of ``mib`` MiB (a fresh process each), SeaweedFS."""
    section = f"streaming {mib:,} MiB through S3 (SeaweedFS)"
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    with seaweedfs() as endpoint, tempfile.TemporaryDirectory() as folder:
        s3_client(endpoint).create_bucket(Bucket="transfer")
        path = Path(folder, "big.bin")
        with open(path, "wb") as out:
            chunk = os.urandom(1 << 20)
            for _ in range(mib):
                out.write(chunk)
        script = TRANSFER.format(tests=tests)
        for mode, who, kind in (
            ("backends", "backends dump_file/load_file", OURS),
            ("boto3-default", "boto3 defaults (classic transfer)", PEER),
        ):
            done = subprocess.run(
                [sys.executable, "-c", script, endpoint, str(path), mode, "path"],
                capture_output=True,
                text=True,
                check=True,
            )
            base, _, top, up, down = map(float, done.stdout.split())
            bench.row(
                section, "peak RSS growth (the process's own high-water mark)", who, kind, "MiB"
            ).values.append(top - base)
            bench.row(section, "upload", who, kind, "MiB/s").values.append(mib / up)
            bench.row(section, "download", who, kind, "MiB/s").values.append(mib / down)
