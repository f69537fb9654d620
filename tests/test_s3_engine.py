"""The obstore engine (``engine="obstore"``): the same requests as boto3's, counted at the server.

The shared suites (contract, parity, locks, keys, the async twin) run on it
through its conftest cases on moto's HTTP server and SeaweedFS.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials
from servers import CREDENTIALS, Faults, Proxy, S3Target

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


# -- refreshable credentials ------------------------------------------------------------------
# obstore keeps a credential until 5 minutes before the expiry the engine hands it with, and
# within that asks again at most every 100 ms. The engine once handed every refreshable
# credential "now + 5 minutes": always within, so boto3's chain was read ten times a second.


class CountingCredentials:
    """A boto3 client whose one credential provider's temporary credentials are counted:
    ``asked`` (each read of them, as a signer reads them) and ``refreshed`` (each fetch)."""

    def __init__(self, lives: list[float]) -> None:
        self.lives = lives  # the seconds each fetched credential lives, in order (the last repeats)
        self.asked = 0
        self.refreshed = 0

    def fetch(self) -> dict[str, Any]:
        life = self.lives[min(self.refreshed, len(self.lives) - 1)]
        self.refreshed += 1
        expiry = datetime.now(timezone.utc) + timedelta(seconds=life)
        keys = {
            "access_key": CREDENTIALS["aws_access_key_id"],
            "secret_key": CREDENTIALS["aws_secret_access_key"],
        }
        return {**keys, "token": None, "expiry_time": expiry.isoformat()}

    def client(self, target: S3Target) -> Any:
        counter = self

        class Counted(RefreshableCredentials):  # type: ignore[misc]
            def get_frozen_credentials(self) -> Any:
                counter.asked += 1
                return super().get_frozen_credentials()

        class Provider(CredentialProvider):  # type: ignore[misc]
            METHOD = "counted"

            def load(self) -> Any:
                return Counted.create_from_metadata(counter.fetch(), counter.fetch, self.METHOD)

        session = botocore.session.get_session()
        session.register_component("credential_provider", CredentialResolver([Provider()]))
        config = Config(s3={"addressing_style": "path"}, signature_version="s3v4")
        return boto3.Session(botocore_session=session, region_name="us-east-1").client(
            "s3", endpoint_url=target.endpoint_url, config=config
        )

    def backend(self, target: S3Target) -> Any:
        """An obstore-engine backend on this client, and its one object ``k``."""
        target.client.put_object(Bucket=target.bucket, Key="creds/k", Body=b'{"n": 1}')
        return S3JsonBackend(target.bucket, prefix="creds", client=self.client(target), engine="obstore")


def load_for(backend: Any, seconds: float) -> None:
    """Load ``k`` again and again for ``seconds`` of wall time, at least 3 times (obstore's
    credential cache reads the wall clock, which no test can steer)."""
    loads, end = 0, time.monotonic() + seconds
    while time.monotonic() < end or loads < 3:
        assert backend.load("k") == {"n": 1}
        loads += 1


def test_refreshable_credentials_far_from_expiry_are_read_once(moto_server: S3Target) -> None:
    counted = CountingCredentials(lives=[3600])
    backend = counted.backend(moto_server)
    assert backend.load("k") == {"n": 1}
    assert (counted.asked, counted.refreshed) == (1, 1)  # obstore's first request read them
    load_for(backend, 0.4)  # four of obstore's 100 ms back-offs
    assert (counted.asked, counted.refreshed) == (1, 1)  # before the fix: 5 reads
    backend.close()
    backend.client.close()


def test_credentials_near_expiry_are_refreshed_once_then_held(moto_server: S3Target) -> None:
    # 12 minutes of life: within botocore's 15-minute advisory window, so the engine's first
    # read refreshes them; the new ones live an hour and are held.
    counted = CountingCredentials(lives=[720, 3600])
    backend = counted.backend(moto_server)
    assert backend.load("k") == {"n": 1}
    asked = counted.asked
    assert counted.refreshed == 2
    load_for(backend, 0.4)
    assert (counted.asked, counted.refreshed) == (asked, 2)  # before the fix: 4 more reads
    backend.close()
    backend.client.close()


def test_credentials_living_under_obstores_threshold_are_asked_for_again(moto_server: S3Target) -> None:
    # 4 minutes of life: under obstore's 5-minute threshold and botocore's 10-minute mandatory
    # refresh, so obstore asks again after each back-off and each ask refreshes them (as boto3
    # refreshes them at each request): never signed with a credential about to expire.
    counted = CountingCredentials(lives=[240])
    backend = counted.backend(moto_server)
    assert backend.load("k") == {"n": 1}
    refreshed = counted.refreshed
    load_for(backend, 0.4)
    assert counted.refreshed > refreshed
    backend.close()
    backend.client.close()
