"""``backends demo``: the library's main job, on a fresh machine with no AWS account.

JSON documents go to an ``S3JsonBackend``; a ``JsonCache`` on local disk in
front of it (a ``TieredBackend``) serves them back. Without an endpoint (the
``--endpoint-url`` option or ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``) it
starts moto's S3 server in this process on 127.0.0.1, so nothing leaves the
machine; AWS credentials in the environment alone never send the demo to AWS.
Everything it made is removed at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..filesystem import JsonCache
from ..s3 import S3JsonBackend
from ..tier import TieredBackend
from .terminal import printable

__all__ = ["DemoClock", "moto_server", "run_demo"]

BUCKET = "backends-demo"
TIMEOUT = 60.0


class DemoClock:
    """The demo's wall clock: real time plus the seconds it skipped ahead."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in a thread of this process, on 127.0.0.1 and a free port."""
    try:
        import logging

        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ImportError("the demo's in-process S3 server needs moto: pip install 'backends[demo]'") from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _document(n: int) -> dict[str, Any]:
    return {"id": n, "name": f"user {n}", "email": f"user{n}@example.org", "tags": ["demo", str(n % 7)]}


def _median_ns(action: Any, keys: list[str], passes: int) -> float:
    """The median time of one call, after a first pass that is not timed."""
    samples = []
    for key in keys:
        action(key)
    for _ in range(passes):
        for key in keys:
            start = time.perf_counter_ns()
            action(key)
            samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def run_demo(
    keys: int = 100, endpoint_url: str | None = None, as_json: bool = False, keep: bool = False
) -> int:
    """Run the demo and print what happened (while its files still exist); return 0.

    With ``keep``, the cache folder (and, on a server of your own, the S3
    objects) are left in place for you to look at.
    """
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    with ExitStack() as stack:
        credentials: dict[str, Any] = {}
        if endpoint is None:
            endpoint = stack.enter_context(moto_server())
            where = f"in-process moto server at {endpoint} (no AWS account used)"
            credentials = {"access_key": "demo", "secret_key": "demo-secret", "region": "us-east-1"}
        else:
            where = f"{endpoint} (credentials from the environment)"
        if keep:
            folder = Path(tempfile.mkdtemp(prefix="backends-demo-"))
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="backends-demo-")))
        prefix = f"demo-{uuid.uuid4().hex[:8]}"
        origin = S3JsonBackend(
            BUCKET, prefix=prefix, endpoint_url=endpoint, create_bucket=True, **credentials
        )
        stack.callback(origin.close)
        if not keep:
            stack.callback(origin.clear)  # the demo's objects, and nothing else
        requests: Counter[str] = Counter()
        origin.client.meta.events.register(
            "before-send.s3", lambda event_name, **_: requests.update([event_name.rsplit(".", 1)[-1]])
        )
        clock = DemoClock()
        tier = TieredBackend(JsonCache(folder / "cache", timeout=TIMEOUT, clock=clock), origin)
        report = _run(tier, origin, requests, clock, [f"users/{n}" for n in range(keys)])
        report.update(s3=where, bucket=BUCKET, prefix=prefix + "/", cache=str(folder / "cache"))
        if not as_json:
            _print(report)  # while the files it names exist
    report["cleaned_up"] = not keep
    if as_json:
        print(json.dumps(report, indent=2))
    elif keep:
        gone = "; the S3 objects went with the in-process server" if credentials else ""
        print(printable(f"kept: the cache folder {folder / 'cache'}, the S3 objects under {prefix}/{gone}"))
    else:
        print("cleaned up: the demo's S3 objects deleted, the cache folder removed, the server stopped")
    return 0


def _run(
    tier: TieredBackend, origin: S3JsonBackend, requests: Counter[str], clock: DemoClock, keys: list[str]
) -> dict[str, Any]:
    report: dict[str, Any] = {"keys": len(keys)}
    bool(origin)  # one LIST, which creates the bucket if needed: setup, not counted

    def step(name: str, action: Any) -> None:
        requests.clear()
        before = tier.stats
        action()
        after = tier.stats
        report[name] = {
            "requests": dict(requests),
            "hits": after.hits - before.hits,
            "misses": after.misses - before.misses,
            "revalidations": after.revalidations - before.revalidations,
        }

    step("write", lambda: origin.dump_many({key: _document(n) for n, key in enumerate(keys)}))
    step("cold_read", lambda: [tier[key] for key in keys])
    step("warm_read", lambda: [tier[key] for key in keys])
    clock.skipped += TIMEOUT + 1
    step("expired_read", lambda: [tier[key] for key in keys])
    sample = keys[: min(len(keys), 50)]
    report["hit_us"] = _median_ns(tier.load, sample, passes=5) / 1000
    report["s3_get_us"] = _median_ns(origin.load, sample, passes=1) / 1000
    files = sorted(path for path in (Path(tier.cache.root)).rglob("*") if path.is_file())  # type: ignore[attr-defined]
    files = [path for path in files if "~" not in path.name and "~locks" not in path.parts]
    report["files"] = {"count": len(files), "bytes": sum(path.stat().st_size for path in files)}
    report["examples"] = [f"{path} ({path.stat().st_size} bytes)" for path in files[:3]]
    return report


def _print(report: dict[str, Any]) -> None:
    def requests(step: dict[str, Any]) -> str:
        counted = step["requests"]
        return ", ".join(f"{count} {name}" for name, count in sorted(counted.items())) or "no S3 requests"

    keys = report["keys"]
    lines = [
        "backends demo: a JsonCache on local disk in front of S3",
        f"  S3:    {report['s3']}, bucket {report['bucket']}, prefix {report['prefix']}",
        f"  cache: {report['cache']} (entries expire after {TIMEOUT:g} s)",
        "",
        f"1. wrote {keys} JSON documents to S3: {requests(report['write'])}",
        f"2. read them through the cache, cold: {report['cold_read']['misses']} misses, "
        f"{requests(report['cold_read'])}",
        f"3. read them again, warm: {report['warm_read']['hits']} hits, {requests(report['warm_read'])}",
        f"4. {TIMEOUT + 1:g} s later (the demo's clock skips ahead), expired: "
        f"{report['expired_read']['revalidations']} revalidations, {requests(report['expired_read'])} "
        "answered 304 Not Modified, no bodies",
        f"5. a cache hit takes {report['hit_us']:.0f} µs, an S3 GET {report['s3_get_us']:.0f} µs: "
        f"{report['s3_get_us'] / report['hit_us']:.0f}x faster",
        f"6. on disk: {report['files']['count']} files, {report['files']['bytes']:,} bytes, e.g.",
        *(f"     {example}" for example in report["examples"]),
        "",
    ]
    print("\n".join(map(printable, lines)))  # the endpoint and paths are the user's: escaped
