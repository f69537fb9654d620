"""The obstore engine (``engine="obstore"``): the same requests as boto3's, counted at the server.

The shared suites (contract, parity, locks, keys, the async twin) run on it
through its conftest cases on moto's HTTP server and SeaweedFS.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from servers import Faults, Proxy, S3Target

import backends
from backends import S3JsonBackend, S3RawBackend, StoreUnavailableError


def through(proxy: Proxy, target: S3Target, engine: str, **options: Any) -> Any:
    opts = {**target.options(), "endpoint_url": proxy.endpoint, "engine": engine, **options}
    return S3JsonBackend(target.bucket, **opts)


def workload(backend: Any) -> None:
    """Every kind of call once or a few times, the same on each engine."""
    backend.dump("a", {"n": 1})
    assert backend.dump("a", {"n": 2}, if_absent=True) is False
    assert backend.load("a") == {"n": 1} and "a" in backend and "zz" not in backend
    versioned = backend.load_if_changed("a")
    assert backend.load_if_changed("a", versioned.etag) is backends.UNCHANGED
    assert backend.dump("a", {"n": 3}, if_match=versioned.etag) is True
    assert backend.dump("a", {"n": 4}, if_match=versioned.etag) is False
    backend.dump_many({f"many/{i}": i for i in range(20)})
    assert backend.load_many([f"many/{i}" for i in range(25)]) == {f"many/{i}": i for i in range(20)}
    assert len(backend) == 21 and list(backend.list("")) == ["a", "many/"]
    assert backend.stat("a") is not None and backend.stat("zz") is None
    with backend.lock("a", ttl=30):
        assert backend.pop("a") == {"n": 3}
    assert backend.delete("a") is False and backend.delete_many([f"many/{i}" for i in range(25)]) == 20


def test_the_obstore_engine_sends_exactly_the_requests_of_boto3(moto_server: S3Target) -> None:
    sent: dict[str, Counter[str]] = {}
    for engine in ("boto3", "obstore"):
        with Proxy(moto_server.endpoint_url or "") as proxy:
            backend = through(proxy, moto_server, engine, prefix=f"budget-{engine}")
            workload(backend)
            backend.close()
        sent[engine] = proxy.requests
    assert sent["obstore"] == sent["boto3"]
    # GET: 3 loads, 25 of load_many, pop's load, 3 LISTs (len, list, delete_many's); PUT: 4 dumps,
    # 20 of dump_many, the lock; HEAD: 2 "in", 2 stat, 2 deletes; DELETE: pop's, the lock's release.
    assert sent["boto3"] == Counter({"GET": 32, "PUT": 25, "HEAD": 6, "DELETE": 2, "POST": 1})


def test_the_obstore_engine_rides_out_slowdowns_and_resets(moto_server: S3Target) -> None:
    faults = Faults(slowdown=0.08, reset=0.04, error500=0.04, seed=5)
    with Proxy(moto_server.endpoint_url or "", faults) as proxy:
        backend = through(proxy, moto_server, "obstore", prefix="engine-faults", retries=8)
        model = {f"doc/{i}": {"n": i, "pad": "x" * (i * 37 % 500)} for i in range(80)}
        backend.dump_many(model)
        assert backend.load_many(model) == model
        assert all(backend[key] == value for key, value in list(model.items())[:30])
        backend.close()
    assert proxy.injected["slowdown"] > 3 and proxy.injected["reset"] > 1
    clean = S3JsonBackend(moto_server.bucket, prefix="engine-faults", client=moto_server.client)
    assert dict(clean.items()) == model
    clean.clear()


def test_a_store_that_keeps_failing_is_unavailable_and_says_nothing_secret(moto_server: S3Target) -> None:
    with Proxy(moto_server.endpoint_url or "", Faults(slowdown=1.0)) as proxy:
        backend = through(proxy, moto_server, "obstore", prefix="engine-down", retries=1)
        with pytest.raises(StoreUnavailableError) as info:
            backend.load("k")
        assert proxy.requests["GET"] == 2  # the request and one retry
    message = str(info.value)
    assert "SlowDown" in message and moto_server.options()["secret_key"] not in message


def test_the_engine_is_chosen_per_backend_and_by_url(moto_server: S3Target) -> None:
    url = f"s3://{moto_server.bucket}/by-url?endpoint_url={moto_server.endpoint_url}&engine=obstore"
    backend = backends.open(url, **{k: v for k, v in moto_server.options().items() if k.endswith("key")})
    assert backend.engine == "obstore" and "engine='obstore'" in repr(backend)
    assert backend.max_workers == 64  # its requests leave the GIL: more of them at once
    assert S3RawBackend(moto_server.bucket, client=moto_server.client).max_workers == 16
    with pytest.raises(ValueError, match="engine is one of 'boto3', 'obstore'"):
        S3JsonBackend(moto_server.bucket, client=moto_server.client, engine="curl")
    backend["k"] = [1]
    assert S3JsonBackend(moto_server.bucket, prefix="by-url", client=moto_server.client)["k"] == [1]
    backend.clear()


def test_what_obstore_cannot_send_goes_through_boto3(moto_server: S3Target) -> None:
    backend = S3RawBackend(
        moto_server.bucket, prefix="acl", client=moto_server.client, engine="obstore", acl="public-read"
    )
    backend["page.html"] = b"<p>hi</p>"  # a PUT with an ACL: boto3's
    grants = moto_server.client.get_object_acl(Bucket=moto_server.bucket, Key="acl/page.html")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    assert backend.stat("page.html").content_encoding == "gzip"  # metadata read back through obstore
    assert backend["page.html"] == b"<p>hi</p>"
    backend.clear()
