"""S3 backends against raw boto3 and their peers, in one run, on loopback servers.

    python benchmarks/s3.py [--ops 2000] [--keys 1000] [--latency-ms 20] [--transfer-mib 1024]

A moto server runs in its own process (it spends 2-3 ms of CPU per request
and bounds throughput), so this process's CPU time is the client's alone:
1. client CPU per operation, ``backends`` against the same call on a raw
   boto3 client with the same configuration;
2. ``load_many``/``dump_many``/``items()`` of 1,000 keys against a raw boto3
   16-thread pool, s3fs's ``getitems``/``setitems`` and minimalkv;
3. through a loopback proxy (its own process) adding ``--latency-ms`` to every
   request, ``load_many`` of 1,000 keys against a sequential loop;
4. peak RSS growth of ``dump_file``/``load_file`` of a large file, in fresh
   processes, against boto3's default transfer settings.
Needs ``pip install -e '.[bench]'`` for the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the loopback servers live with the tests

from servers import CREDENTIALS, free_port, s3_client, seaweedfs  # noqa: E402

from backends import S3JsonBackend  # noqa: E402

DOC = {"id": 42, "name": "Ada Lovelace", "tags": ["math", "engines"], "bio": "x" * 900}
BODY = json.dumps(DOC).encode()


@contextmanager
def process(args: list[str], ready: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[:3]} did not start")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def answers(endpoint: str) -> Callable[[], bool]:
    client = s3_client(endpoint, retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=2)

    def check() -> bool:
        try:
            client.list_buckets()
            return True
        except Exception:
            return False

    return check


@contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with process(args, answers(endpoint)):
        yield endpoint


@contextmanager
def latency_proxy(upstream: str, seconds: float) -> Iterator[str]:
    port = free_port()
    code = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(HERE.parent / "tests")!r})
        from servers import Faults, Proxy
        with Proxy({upstream!r}, Faults(latency={seconds!r}), port={port}):
            threading.Event().wait()
    """)
    endpoint = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-c", code], answers(endpoint)):
        yield endpoint


def cpu_ratio(
    raw: Callable[[int], object], ours: Callable[[int], object], ops: int
) -> tuple[float, float, float]:
    """Client CPU per call of each, and the median of their ratios over alternating blocks.

    The server shares the machine's two cores, so the CPU time of one call
    drifts; blocks of 100 calls, raw and ours taking turns to go first, see
    the same drift.
    """
    ratios, raw_cpu, our_cpu = [], [], []
    for block in range(max(1, ops // 100)):
        order = [(raw, raw_cpu), (ours, our_cpu)]
        for action, into in order if block % 2 else order[::-1]:
            start = time.process_time()
            for i in range(100):
                action(i)
            into.append((time.process_time() - start) / 100)
        ratios.append(our_cpu[-1] / raw_cpu[-1])
    return statistics.median(raw_cpu), statistics.median(our_cpu), statistics.median(ratios)


def wall(action: Callable[[], object], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def section_cpu(endpoint: str, ops: int) -> None:
    print(
        f"\n1. client CPU per operation ({ops} ops each, medians of 100-call blocks;"
        " the server runs in another process)"
    )
    client = s3_client(endpoint)
    client.create_bucket(Bucket="cpu")
    ours = S3JsonBackend("cpu", client=client)
    keys = [f"k{i % 100}" for i in range(ops)]
    rows = {
        "PUT": (
            lambda i: ours.dump(keys[i], DOC),
            lambda i: client.put_object(
                Bucket="cpu", Key=keys[i], Body=json.dumps(DOC).encode(), ContentType="application/json"
            ),
        ),
        "GET": (
            lambda i: ours.load(keys[i]),
            lambda i: json.loads(client.get_object(Bucket="cpu", Key=keys[i])["Body"].read()),
        ),
        "HEAD": (lambda i: keys[i] in ours, lambda i: client.head_object(Bucket="cpu", Key=keys[i])),
    }
    for name, (mine, raw) in rows.items():
        raw_cpu, our_cpu, ratio = cpu_ratio(raw, mine, ops)
        print(
            f"   {name:5s} raw boto3 {raw_cpu * 1e6:7.0f} us   backends {our_cpu * 1e6:7.0f} us"
            f"   median ratio {ratio:.3f}"
        )


def raw_pool(client: Any, bucket: str, keys: list[str]) -> tuple[Callable[[], object], Callable[[], object]]:
    def load() -> object:
        with ThreadPoolExecutor(16) as pool:
            return dict(
                zip(
                    keys,
                    pool.map(
                        lambda k: json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()), keys
                    ),
                    strict=True,
                )
            )

    def dump() -> object:
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=BODY), keys))

    return load, dump


Pair = tuple[Callable[[], object], Callable[[], object]]


def peers(endpoint: str, bucket: str, keys: list[str]) -> dict[str, Pair]:
    found: dict[str, Pair] = {}
    try:
        import s3fs

        fs = s3fs.S3FileSystem(
            key=CREDENTIALS["aws_access_key_id"],
            secret=CREDENTIALS["aws_secret_access_key"],
            client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"},
        )
        mapper = fs.get_mapper(f"{bucket}/s3fs")
        if hasattr(mapper, "getitems"):
            found[f"s3fs {s3fs.__version__} getitems/setitems"] = (
                lambda: {k: json.loads(v) for k, v in mapper.getitems(keys).items()},
                lambda: mapper.setitems({k: BODY for k in keys}),
            )
        else:
            print(f"   (s3fs {s3fs.__version__} has no getitems: pip install -e '.[bench]' in a fresh venv)")
    except ImportError:
        print("   (s3fs not installed: pip install -e '.[bench]')")
    try:
        from minimalkv.net.boto3store import Boto3Store

        resource = __import__("boto3").resource(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        )
        store = Boto3Store(resource.Bucket(bucket), object_prefix="minimalkv/")
        found["minimalkv Boto3Store (a loop: no bulk API)"] = (
            lambda: {k: json.loads(store.get(k)) for k in keys},
            lambda: [store.put(k, BODY) for k in keys],
        )
    except ImportError:
        print("   (minimalkv not installed: pip install -e '.[bench]')")
    return found


def section_bulk(endpoint: str, count: int) -> None:
    print(f"\n2. bulk calls over {count} keys (wall time, best of 3)")
    client = s3_client(endpoint)
    client.create_bucket(Bucket="bulk")
    keys = [f"doc-{i:05d}" for i in range(count)]  # minimalkv takes no "/" in a key
    ours = S3JsonBackend("bulk", prefix="ours", client=client, max_workers=16)
    data = dict.fromkeys(keys, DOC)
    raw_load, raw_dump = raw_pool(client, "bulk", [f"raw/{k}" for k in keys])
    contenders: dict[str, Callable[[], object]] = {
        "raw boto3 16-thread pool: put": raw_dump,
        "backends dump_many": lambda: ours.dump_many(data),
        "raw boto3 16-thread pool: get": raw_load,
        "backends load_many": lambda: ours.load_many(keys),
        "backends items() (LIST + GETs)": lambda: dict(ours.items()),
    }
    # Interleaved rounds, best of three: the server's state drifts, not one contender's luck.
    rows = dict.fromkeys(contenders, float("inf"))
    for _ in range(3):
        for name, action in contenders.items():
            rows[name] = min(rows[name], wall(action, rounds=1))
    for name, (load, dump) in peers(endpoint, "bulk", keys).items():
        rows[f"{name}: put"] = wall(dump, rounds=1)
        rows[f"{name}: get"] = wall(load, rounds=1)
    for name, seconds in rows.items():
        print(f"   {name:48s} {seconds:6.2f} s  {count / seconds:7.0f} keys/s")
    ours.close()


def section_latency(endpoint: str, count: int, latency_ms: float) -> None:
    print(f"\n3. {latency_ms:.0f} ms added per request (a loopback proxy in its own process), {count} keys")
    s3_client(endpoint).create_bucket(Bucket="far")
    S3JsonBackend("far", client=s3_client(endpoint)).dump_many({f"k{i}": DOC for i in range(count)})
    with latency_proxy(endpoint, latency_ms / 1000) as far:
        backend = S3JsonBackend("far", client=s3_client(far), max_workers=16)
        keys = [f"k{i}" for i in range(count)]
        concurrent = wall(lambda: backend.load_many(keys), rounds=1)
        sequential = wall(lambda: [backend.load(k) for k in keys], rounds=1)
        print(f"   sequential loop of load   {sequential:6.2f} s")
        print(f"   load_many (16 threads)    {concurrent:6.2f} s   {sequential / concurrent:.1f}x faster")
        backend.close()


TRANSFER = """
import os, resource, sys, time
sys.path.insert(0, {tests!r})
from servers import s3_client
from backends import S3RawBackend
from backends.s3 import transfer_config
from boto3.s3.transfer import TransferConfig
endpoint, path, mode, kind = sys.argv[1:5]
client = s3_client(endpoint)
config = TransferConfig(preferred_transfer_client="classic") if mode == "boto3-default" else transfer_config()
backend = S3RawBackend("transfer", client=client, transfer=config)
# VmHWM: this process's own high-water mark (ru_maxrss survives exec: a big parent's shows)
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
base = rss()
start = time.perf_counter()
if kind == "path":
    backend.dump_file("big.bin", path)
else:
    with open(path, "rb") as source:
        backend.dump_file("big.bin", source)
up = time.perf_counter() - start
after_up = rss()
start = time.perf_counter()
if kind == "path":
    backend.load_file("big.bin", path + ".out")
else:
    with open(path + ".out", "wb") as target:
        backend.load_file("big.bin", target)
down = time.perf_counter() - start
print(base, after_up, rss(), up, down)
os.remove(path + ".out")
backend.close()
"""


def section_transfer(endpoint: str, mib: int) -> None:
    print(f"\n4. dump_file + load_file of {mib} MiB: peak RSS growth (a fresh process each)")
    s3_client(endpoint).create_bucket(Bucket="transfer")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "big.bin")
        with open(path, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(mib):
                f.write(chunk)
        script = TRANSFER.format(tests=str(HERE.parent / "tests"))
        for kind in ("path", "file object"):
            for mode in ("backends", "boto3-default"):
                out = subprocess.run(
                    [sys.executable, "-c", script, endpoint, str(path), mode, kind.split()[0]],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                base, after_up, peak, up, down = map(float, out)
                print(
                    f"   {kind:11s} {mode:14s} upload +{after_up - base:4.0f} MB ({mib / up:4.0f} MiB/s)"
                    f"   upload+download +{peak - base:4.0f} MB ({mib / down:4.0f} MiB/s down)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--transfer-mib", type=int, default=1024)
    parser.add_argument(
        "--transfer-server",
        choices=["seaweedfs", "moto"],
        default="seaweedfs",
        help="moto copies a whole object for every ranged GET: slow for 1 GiB",
    )
    parser.add_argument("--only", choices=["cpu", "bulk", "latency", "transfer"], action="append")
    args = parser.parse_args()
    chosen = set(args.only or ["cpu", "bulk", "latency", "transfer"])
    with moto_server() as endpoint:
        print(f"moto server {endpoint} (its own process)")
        if "cpu" in chosen:
            section_cpu(endpoint, args.ops)
        if "bulk" in chosen:
            section_bulk(endpoint, args.keys)
        if "latency" in chosen:
            section_latency(endpoint, args.keys, args.latency_ms)
    if "transfer" in chosen:
        if args.transfer_server == "seaweedfs":
            with seaweedfs() as endpoint:
                print(f"SeaweedFS {endpoint} (its own process)")
                section_transfer(endpoint, args.transfer_mib)
        else:
            with moto_server() as endpoint:
                section_transfer(endpoint, args.transfer_mib)


if __name__ == "__main__":
    main()
