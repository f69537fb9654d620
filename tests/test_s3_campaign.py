"""Reliability II: an S3 fault campaign against a dict model, hostile values, and a secret scan.

The campaign drives every public call of an S3 raw backend through a
loopback proxy that injects 500s, 503 SlowDown, resets before and after
forwarding (the second: the server applied the request, the answer is
lost), bodies cut off (error bodies too) and stalls past the read timeout.
After every call the backend must agree with a plain dict, except for calls
that raised StoreUnavailableError (their keys are read back from the server
without faults, since they may or may not have been applied). Nothing else
may escape; a conditional write whose answer was lost still knows whether it
won. ``BACKENDS_LONG=1`` runs 10,000 operations instead of 300, on both
engines.
"""

from __future__ import annotations

import io
import logging
import os
import random
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import Faults, Proxy, S3Target

import backends
from backends import (
    BackendError,
    LockError,
    S3JsonBackend,
    S3RawBackend,
    S3TextBackend,
    SerializationError,
    StoreUnavailableError,
)
from backends.testing import strategies as s

LONG = os.environ.get("BACKENDS_LONG") == "1"
OPERATIONS = 10_000 if LONG else 300
KEYS = ["a", "a/b", "b", "c/d/e", "f.txt", "g"]


class Campaign:
    """One backend through the faulty proxy, one direct view of the same prefix, and the model."""

    def __init__(self, faulty: S3RawBackend, direct: S3RawBackend, seed: int, folder: Path) -> None:
        self.faulty, self.direct = faulty, direct
        self.rng = random.Random(seed)
        self.model: dict[str, bytes] = {}
        self.folder = folder
        self.counts: Counter[str] = Counter()

    def value(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 50, 3000]))

    def resync(self, keys: list[str]) -> None:
        """After a call that raised StoreUnavailableError: what the server has is the truth."""
        for key in keys:
            stored = self.direct.load(key)
            if stored is None:
                self.model.pop(key, None)
            else:
                self.model[key] = stored

    def step(self) -> None:
        name, keys, run = self.pick()
        self.counts["operations"] += 1
        self.counts[name] += 1
        try:
            run()
        except StoreUnavailableError:
            self.counts["unavailable"] += 1
            self.resync(keys)

    def pick(self) -> tuple[str, list[str], Callable[[], None]]:
        key = self.rng.choice(KEYS)
        other = self.rng.choice(KEYS)
        ops: dict[str, tuple[list[str], Callable[[], None]]] = {
            "dump": ([key], lambda: self.dump(key)),
            "dump_if_absent": ([key], lambda: self.dump_if_absent(key)),
            "dump_if_match": ([key], lambda: self.dump_if_match(key)),
            "load": ([key], lambda: self.expect(self.faulty.load(key), self.model.get(key))),
            "contains": ([key], lambda: self.expect(key in self.faulty, key in self.model)),
            "delete": ([key], lambda: self.delete(key)),
            "pop": ([key], lambda: self.pop(key)),
            "load_many": ([], lambda: self.load_many([key, other])),
            "dump_many": ([key, other], lambda: self.dump_many([key, other])),
            "delete_many": ([key, other], lambda: self.delete_many([key, other])),
            "keys": ([], lambda: self.expect(sorted(self.faulty), sorted(self.model))),
            "len": ([], lambda: self.expect(len(self.faulty), len(self.model))),
            "copy": ([other], lambda: self.copy(key, other)),
            "move": ([key, other], lambda: self.move(key, other)),
            "dump_file": ([key], lambda: self.dump_file(key)),
            "load_file": ([], lambda: self.load_file(key)),
            "lock": ([key], lambda: self.locked_write(key)),
        }
        name = self.rng.choice(sorted(ops))
        return name, *ops[name]

    def expect(self, got: Any, wanted: Any) -> None:
        assert got == wanted, f"{got!r} != model {wanted!r}"

    def dump(self, key: str) -> None:
        value = self.value()
        assert self.faulty.dump(key, value) is True
        self.model[key] = value

    def dump_if_absent(self, key: str) -> None:
        value = self.value()
        # A PUT applied with its answer lost still knows it won (its retry's 412, then a HEAD).
        self.expect(self.faulty.dump(key, value, if_absent=True), key not in self.model)
        self.model.setdefault(key, value)

    def dump_if_match(self, key: str) -> None:
        value = self.value()
        found = self.direct.stat(key)
        current = found.etag if found is not None and found.etag else None
        # The ETag of what is there, or one that matches nothing (a stale one, or for an absent key).
        etag = current if current and self.rng.random() < 0.7 else '"0123456789abcdef0123456789abcdef"'
        self.expect(self.faulty.dump(key, value, if_match=etag), etag == current)
        if etag == current:
            self.model[key] = value

    def delete(self, key: str) -> None:
        self.expect(self.faulty.delete(key), key in self.model)
        self.model.pop(key, None)

    def pop(self, key: str) -> None:
        self.expect(self.faulty.pop(key, None), self.model.pop(key, None))

    def load_many(self, keys: list[str]) -> None:
        self.expect(self.faulty.load_many(keys), {k: self.model[k] for k in keys if k in self.model})

    def dump_many(self, keys: list[str]) -> None:
        pairs = {key: self.value() for key in keys}
        self.faulty.dump_many(pairs)
        self.model.update(pairs)

    def delete_many(self, keys: list[str]) -> None:
        self.expect(self.faulty.delete_many(keys), len({k for k in keys if k in self.model}))
        for key in keys:
            self.model.pop(key, None)

    def copy(self, source: str, target: str) -> None:
        self.expect(self.faulty.copy(source, target), source in self.model)
        if source in self.model:
            self.model[target] = self.model[source]

    def move(self, source: str, target: str) -> None:
        self.expect(self.faulty.move(source, target), source in self.model)
        if source in self.model and source != target:
            self.model[target] = self.model.pop(source)

    def dump_file(self, key: str) -> None:
        value = self.value()
        stream = io.BytesIO(value)
        assert self.faulty.dump_file(key, stream) is True
        assert not stream.closed
        self.model[key] = value

    def load_file(self, key: str) -> None:
        target = self.folder / "target"
        target.write_bytes(b"before")
        try:
            found = self.faulty.load_file(key, target)
        except StoreUnavailableError:
            # A failed download never leaves a half-written target behind.
            assert target.read_bytes() in (b"before", self.model.get(key))
            raise
        self.expect(found, key in self.model)
        self.expect(target.read_bytes(), self.model.get(key, b"before"))

    def locked_write(self, key: str) -> None:
        value = self.value()
        try:
            # A lock whose release failed every retry frees itself after its ttl.
            with self.faulty.lock("campaign-lock", timeout=30, ttl=8):
                self.faulty.dump(key, value)
                self.model[key] = value
        except LockError as lost:
            raise AssertionError(f"a lock broke under faults: {lost}") from lost


@pytest.fixture
def proxy(moto_server: S3Target) -> Iterator[tuple[Proxy, Faults]]:
    faults = Faults(seed=11)
    with Proxy(moto_server.endpoint_url or "", faults) as running:
        yield running, faults


@pytest.mark.parametrize("engine", ["boto3", "obstore"] if LONG else ["boto3"])
def test_every_call_agrees_with_a_dict_under_faults(
    moto_server: S3Target, proxy: tuple[Proxy, Faults], tmp_path: Path, engine: str
) -> None:
    running, faults = proxy
    prefix = f"campaign-{engine}-{os.getpid()}"
    # A read timeout well above a loaded moto server's slowest answer: a request
    # still on its way when the client gives up would land after the retry (a
    # delayed duplicate, README), which no client can order. Stalls exceed it.
    options = {
        **moto_server.options(),
        "endpoint_url": running.endpoint,
        "retries": 5,
        "timeout": 3.0,
        "engine": engine,
    }
    faulty = S3RawBackend(moto_server.bucket, prefix=prefix, **options)
    direct = S3RawBackend(moto_server.bucket, prefix=prefix, client=moto_server.client)
    campaign = Campaign(faulty, direct, seed=5, folder=tmp_path)
    # 20% of requests go wrong; stalls (each over a second) are kept rare.
    shares = {
        "slowdown": 0.05,
        "error500": 0.03,
        "cut500": 0.01,
        "reset": 0.04,
        "lose": 0.04,
        "truncate": 0.025,
    }
    for name, share in shares.items():
        setattr(faults, name, share)
    faults.stall, faults.stall_seconds = 0.001 if LONG else 0.003, 3.2
    for done in range(1, OPERATIONS + 1):
        campaign.step()
        if LONG and done % 1000 == 0:
            print(f"  {done} operations, {dict(campaign.counts)}", flush=True)
    for name in (*shares, "stall"):
        setattr(faults, name, 0.0)
    stored = {key: direct[key] for key in direct}
    assert stored == campaign.model
    injected = sum(running.injected.values())
    requests = sum(running.requests.values())
    print(
        f"S3 campaign: {campaign.counts['operations']} operations, {requests} requests, "
        f"{injected} faults injected ({dict(running.injected)}), "
        f"{campaign.counts['unavailable']} calls raised StoreUnavailableError, 0 mismatches"
    )
    assert injected > OPERATIONS * 0.2
    direct.clear()


# -- hostile values through every value family ---------------------------------------------------


HOSTILE = st.one_of(
    s.invalid_json,
    s.invalid_text,
    s.invalid_raw,
    s.json_values,
    s.text_values,
    st.sampled_from([float("nan"), b"\xff", bytearray(b"x"), memoryview(b"y"), 1 << 70]),
)


@settings(max_examples=300 if LONG else 60, suppress_health_check=list(HealthCheck), deadline=None)
@given(family=st.sampled_from(["json", "text", "raw"]), value=HOSTILE, bulk=st.booleans())
def test_hostile_values_write_nothing_or_store_exactly(
    moto: S3Target, family: str, value: Any, bulk: bool
) -> None:
    cls = {"json": S3JsonBackend, "text": S3TextBackend, "raw": S3RawBackend}[family]
    backend = cls(moto.bucket, prefix=f"hostile-{family}", client=moto.client)
    try:
        if bulk:
            backend.dump_many({"ok": value if family != "raw" else b"", "k": value})
        else:
            backend.dump("k", value)
    except (SerializationError, TypeError):
        listed = moto.client.list_objects_v2(Bucket=moto.bucket, Prefix=f"hostile-{family}/")
        assert listed.get("KeyCount", 0) == 0  # nothing written, the good pair of a batch neither
        return
    assert "k" in backend
    backend.clear()


# -- secrets ---------------------------------------------------------------------------------------

SECRET = "SECRETkey/" + "q" * 30
TOKEN = "TOKENsession" + "z" * 40


def secret_paths(
    moto_server: S3Target, running: Proxy, faults: Faults
) -> Iterator[tuple[str, Callable[[], Any]]]:
    """Calls that fail in every way we know, each with the planted secret key and token."""
    keys = {"access_key": "AKIAPLANTED", "secret_key": SECRET, "session_token": TOKEN, "retries": 1}
    down = S3JsonBackend("bucket", endpoint_url="http://127.0.0.1:9", timeout=1, **keys)
    via_proxy = S3JsonBackend(moto_server.bucket, prefix="secrets", endpoint_url=running.endpoint, **keys)
    yield "repr", lambda: repr(down) + str(down) + repr(via_proxy)
    yield "unreachable load", lambda: down.load("k")
    yield "unreachable dump", lambda: down.dump("k", 1)
    yield "unreachable lock", lambda: down.lock("k", timeout=0).acquire()
    yield "unreachable list", lambda: list(down)
    yield "bad value", lambda: via_proxy.dump("k", {1: 2})
    yield "bad key", lambda: via_proxy.load("")

    def under(kind: str, call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            setattr(faults, kind, 1.0)
            try:
                return call()
            finally:
                setattr(faults, kind, 0.0)

        return run

    for kind in ("slowdown", "error500", "reset", "lose", "truncate"):
        yield f"{kind} load", under(kind, lambda: via_proxy.load("k"))
        yield f"{kind} dump", under(kind, lambda: via_proxy.dump("k", 1))
        yield f"{kind} dump_many", under(kind, lambda: via_proxy.dump_many({"a": 1, "b": 2}))
        yield f"{kind} url", under(kind, lambda: via_proxy.url("k", expires=60))
    yield "url with the secret", lambda: backends.open(f"s3://bucket?secret_key={SECRET}")
    yield "closed", lambda: (via_proxy.close(), via_proxy.load("k"))


def test_no_secret_reaches_a_message_repr_chain_or_log(
    moto_server: S3Target, proxy: tuple[Proxy, Faults], caplog: pytest.LogCaptureFixture
) -> None:
    running, faults = proxy
    caplog.set_level(logging.DEBUG, logger="backends")
    seen: list[str] = []
    paths = 0
    for name, call in secret_paths(moto_server, running, faults):
        paths += 1
        try:
            result = call()
        except (BackendError, ValueError, TypeError) as exc:
            seen.append(f"{name}: " + "".join(traceback.format_exception(exc)) + repr(exc) + str(exc))
            for linked in (exc.__cause__, exc.__context__):
                if linked is not None:
                    seen.append(repr(linked) + str(linked))
        else:
            if name == "repr":
                seen.append(result)  # a presigned URL carries a session token by design: not scanned
    seen.extend(record.getMessage() + repr(record.args) for record in caplog.records)
    text = "\n".join(seen)
    found = text.count(SECRET) + text.count(TOKEN)
    print(f"secret scan: {paths} paths, {len(text)} characters of messages, reprs and logs, {found} secrets")
    assert found == 0
    assert len(seen) > paths  # every path left something to scan
