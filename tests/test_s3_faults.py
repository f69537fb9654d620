"""S3 over a faulty wire, and racing writers on real servers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from servers import Faults, Proxy, S3Target

import backends
from backends import S3JsonBackend, S3RawBackend

pytestmark = pytest.mark.slow


def through(proxy: Proxy, target: S3Target, cls: Any = S3JsonBackend, **options: Any) -> Any:
    return cls(target.bucket, **{**target.options(), **options, "endpoint_url": proxy.endpoint})


def test_every_operation_survives_slowdowns_resets_and_cut_bodies(moto_server: S3Target) -> None:
    faults = Faults(slowdown=0.06, reset=0.03, truncate=0.03, seed=3)
    with Proxy(moto_server.endpoint_url, faults) as proxy:
        backend = through(proxy, moto_server, prefix="faults", retries=8, max_workers=4)
        model = {f"doc/{i}": {"n": i, "pad": "x" * (i * 37 % 500)} for i in range(120)}
        backend.dump_many(model)
        for i in range(0, 120, 7):
            backend[f"doc/{i}"] = model[f"doc/{i}"] = {"n": -i}
        assert backend.load_many(model) == model
        assert all(backend[key] == value for key, value in list(model.items())[:40])
        assert backend.delete_many([f"doc/{i}" for i in range(100, 120)]) == 20
        for i in range(100, 120):
            del model[f"doc/{i}"]
        assert backend.delete("doc/99") is True
        del model["doc/99"]
        assert set(backend) == set(model)
        assert len(backend) == len(model)
        assert dict(backend.items()) == model
        backend.close()
    assert proxy.injected["slowdown"] > 5 and proxy.injected["reset"] > 2 and proxy.injected["truncate"] > 2
    # What S3 holds, read without the proxy: nothing lost, nothing torn.
    clean = S3JsonBackend(moto_server.bucket, prefix="faults", client=moto_server.client)
    assert dict(clean.items()) == model
    clean.clear()


def test_a_body_cut_mid_read_is_read_again(moto_server: S3Target) -> None:
    faults = Faults(truncate=1.0)
    with Proxy(moto_server.endpoint_url, Faults()) as proxy:
        backend = through(proxy, moto_server, cls=S3RawBackend, prefix="cut", retries=3)
        backend["k"] = b"0123456789" * 1000
        proxy.faults = faults  # from now on every body is cut in half, then the connection reset
        with pytest.raises(backends.StoreUnavailableError) as info:
            backend.load("k")
        assert info.value.__cause__ is not None
        gets = proxy.requests["GET"]
        assert gets == 4  # the first read and three retries of the cut body
        proxy.faults = Faults(truncate=0.5, seed=1)
        assert backend.load("k") == b"0123456789" * 1000
        backend.clear()
        backend.close()


def test_persistent_throttling_raises_store_unavailable_after_the_retries(moto_server: S3Target) -> None:
    with Proxy(moto_server.endpoint_url, Faults(slowdown=1.0)) as proxy:
        backend = through(proxy, moto_server, prefix="throttled", retries=2)
        with pytest.raises(backends.StoreUnavailableError, match="SlowDown"):
            backend.dump("k", 1)
        assert proxy.requests["PUT"] == 3
        backend.close()


# Not on moto's server: its create-only PUT reads, then stores, with no lock between the two
# steps across its request threads, so two racers can both get 200 (see test_locks.py). A
# server that makes If-None-Match atomic is what this test is about.
@pytest.mark.parametrize("server", ["seaweedfs"])
def test_if_absent_racing_threads_have_exactly_one_winner(
    server: str, request: pytest.FixtureRequest
) -> None:
    target: S3Target = request.getfixturevalue(server)
    backend = S3JsonBackend(target.bucket, prefix=f"race-{server}", client=target.client)
    barrier = threading.Barrier(6)
    won: list[list[str]] = [[] for _ in range(6)]

    def contend(index: int) -> None:
        barrier.wait()
        won[index] = [f"k{i}" for i in range(40) if backend.dump(f"k{i}", index, if_absent=True)]

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = sorted(key for keys in won for key in keys)
    assert winners == sorted(f"k{i}" for i in range(40))
    assert all(backend[key] == index for index, keys in enumerate(won) for key in keys)
    backend.clear()
