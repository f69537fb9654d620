"""Attacks on the obstore engine's refreshable credentials (#29): edge expiries, rotations, secrets;
then, through the public API on moto's server: a failing credential source (the same error on
every engine, call and layer), close during a refresh, pressure on an expired credential, fork
and two event loops."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
import servers
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from conftest import LONG
from servers import Proxy, S3Target, chain

from backends import MemoryCache, PermissionDeniedError, S3JsonBackend, StoreError, TieredBackend, cached
from backends.s3.credentials import ClientCredentials


class Client:
    """boto3's client as the provider reads it: its resolved credentials (botocore's own objects)."""

    def __init__(self, found: Any) -> None:
        self.found = found

    def _get_credentials(self) -> Any:
        return self.found


class Rotating:
    """A refresh function handing out a new secret each time, with the expiry it is given."""

    def __init__(self, *expiries: datetime) -> None:
        self.expiries = list(expiries)
        self.calls = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        expiry = self.expiries[min(self.calls - 1, len(self.expiries) - 1)]
        return {
            "access_key": "AKIDEXAMPLE",
            "secret_key": f"SECRET-{self.calls}",
            "token": f"TOKEN-{self.calls}",
            "expiry_time": expiry.isoformat(),
        }


def refreshable(refresh: Rotating) -> RefreshableCredentials:
    return RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")


def test_none_is_botocores_no_credentials_error() -> None:
    with pytest.raises(NoCredentialsError):
        ClientCredentials(Client(None), NoCredentialsError)()


def test_static_credentials_never_expire_and_are_secrets() -> None:
    provider = ClientCredentials(Client(Credentials("AK", "S3CR3T", "T0K3N")), NoCredentialsError)
    got = provider()
    assert got["expires_at"] is None and {"S3CR3T", "T0K3N"} <= set(provider.secrets)
    assert "S3CR3T" not in repr(provider) and "T0K3N" not in repr(provider)


@pytest.mark.parametrize(
    "zone", [timezone.utc, timezone(timedelta(hours=5)), timezone(timedelta(hours=-9, minutes=-30))]
)
def test_an_expiry_in_any_zone_is_handed_over_in_utc_at_the_same_instant(zone: timezone) -> None:
    expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).astimezone(zone).replace(microsecond=0)
    got = ClientCredentials(Client(refreshable(Rotating(expiry))), NoCredentialsError)()
    assert got["expires_at"] is not None
    assert got["expires_at"].utcoffset() == timedelta(0) and got["expires_at"] == expiry


def test_an_expiry_in_the_past_is_refreshed_before_it_is_handed_over() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    refresh = Rotating(now - timedelta(hours=1), now + timedelta(hours=1))
    provider = ClientCredentials(Client(refreshable(refresh)), NoCredentialsError)
    got = provider()
    assert got["secret_access_key"] == "SECRET-2" and got["expires_at"] == now + timedelta(hours=1)


def test_secrets_of_a_rotated_credential_are_still_cleaned() -> None:
    """A request signed before a rotation may fail after it: its echoed token must still be scrubbed."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    refresh = Rotating(now + timedelta(minutes=20), now + timedelta(hours=1))
    found = refreshable(refresh)
    provider = ClientCredentials(Client(found), NoCredentialsError)
    first = provider()
    assert first["token"] == "TOKEN-1"
    found._expiry_time = now + timedelta(minutes=5)  # due: botocore refreshes at the next read
    second = provider()
    assert second["token"] == "TOKEN-2" and second["expires_at"] == now + timedelta(hours=1)
    assert {"SECRET-1", "TOKEN-1", "SECRET-2", "TOKEN-2"} <= set(provider.secrets)


def test_an_expiry_that_moves_backwards_is_handed_over_as_it_is() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    refresh = Rotating(now + timedelta(hours=2), now + timedelta(minutes=30))
    found = refreshable(refresh)
    provider = ClientCredentials(Client(found), NoCredentialsError)
    assert provider()["expires_at"] == now + timedelta(hours=2)
    found._expiry_time = now + timedelta(minutes=1)
    assert provider()["expires_at"] == now + timedelta(minutes=30)


def test_a_provider_that_raises_leaks_no_secret_of_ours() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    calls = [0]

    def refresh() -> dict[str, str]:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError("metadata service down")
        return Rotating(now + timedelta(minutes=20))()

    found = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    provider = ClientCredentials(Client(found), NoCredentialsError)
    provider()
    found._expiry_time = now - timedelta(minutes=1)  # mandatory refresh: it fails
    with pytest.raises(Exception) as caught:
        provider()
    text = "".join(traceback.format_exception(caught.value))
    assert "SECRET-1" not in text and "TOKEN-1" not in text


# -- through the public API: a credential source we steer --------------------------------------

SECRET = "SECRETrefresh/" + "q" * 26
TOKEN = "TOKENrefresh" + "z" * 40
ENGINES = ["boto3", "obstore"]


class Source:
    """boto3's temporary credentials from one source: the first already expired (the first
    request refreshes them), each refresh doing ``refresh(n)`` (n counts the refreshes).
    ``refreshes`` counts every call; ``gate``, when set, makes each refresh wait for it."""

    def __init__(self, refresh: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.refresh = refresh or fresh
        self.refreshes = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def fetch(self) -> dict[str, Any]:
        with self._lock:
            self.refreshes += 1
            n = self.refreshes
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        return self.refresh(n)

    def client(self, target: S3Target) -> Any:
        source = self

        class Provider(CredentialProvider):  # type: ignore[misc]
            METHOD = "steered"

            def load(self) -> Any:
                return RefreshableCredentials.create_from_metadata(expired(0), source.fetch, self.METHOD)

        session = botocore.session.get_session()
        session.register_component("credential_provider", CredentialResolver([Provider()]))
        config = Config(
            s3={"addressing_style": "path"}, signature_version="s3v4", retries={"total_max_attempts": 1}
        )
        return boto3.Session(botocore_session=session, region_name="us-east-1").client(
            "s3", endpoint_url=target.endpoint_url, config=config
        )

    def backend(
        self, target: S3Target, engine: str = "obstore", prefix: str = "creds", **options: Any
    ) -> Any:
        return S3JsonBackend(
            target.bucket, prefix=prefix, client=self.client(target), engine=engine, retries=0, **options
        )


def metadata(n: int, life: timedelta, token: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {
        "access_key": "AKIDSTEERED",
        "secret_key": f"{SECRET}-{n}",
        "expiry_time": (datetime.now(timezone.utc) + life).isoformat(),
    }
    if token:
        found["token"] = f"{TOKEN}-{n}"
    return found


def fresh(n: int) -> dict[str, Any]:
    return metadata(n, timedelta(hours=1))


def expired(n: int) -> dict[str, Any]:
    return metadata(n, -timedelta(minutes=1))


def service_down(n: int) -> dict[str, Any]:
    raise OSError("the metadata service did not answer")


def echoes_the_token(n: int) -> dict[str, Any]:
    raise OSError(f"the broker refused session {TOKEN}-0 (key {SECRET}-0)")  # the expired ones


def sts_refuses(n: int) -> dict[str, Any]:
    error = {"Code": "ExpiredToken", "Message": "The security token included in the request is expired"}
    raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "AssumeRole")


def no_token(n: int) -> dict[str, Any]:
    return metadata(n, timedelta(hours=1), token=False)


CALLS: dict[str, Callable[[Any], Any]] = {
    "load": lambda store: store.load("k"),
    "contains": lambda store: store.contains("k") if hasattr(store, "contains") else "k" in store,
    "dump": lambda store: store.dump("k", 1),
    "dump_many": lambda store: store.dump_many({"a": 1, "b": 2}),
    "load_many": lambda store: store.load_many(["a", "b"]),
}


def failure_of(call: Callable[[], Any]) -> BaseException:
    try:
        result = call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception as exc:
        return exc
    raise AssertionError("the call did not fail")


def assert_credentials_error(exc: BaseException) -> None:
    """The one error of a failed credential source: PermissionDeniedError saying so, from
    botocore's own exception, with no secret of any credential anywhere in the chain."""
    assert type(exc) is PermissionDeniedError, repr(exc)
    assert "credentials" in str(exc), str(exc)
    assert isinstance(exc.__cause__, BotoCoreError), repr(exc.__cause__)
    assert "Forbidden" not in str(exc)  # no request was sent: S3 said nothing
    text = chain(exc)
    assert SECRET not in text and TOKEN not in text


FAILING = {
    "echoes_the_token": echoes_the_token,
    "service_down": service_down,
    "still_expired": expired,
    "sts_refuses": sts_refuses,
    "no_token": no_token,
}


@pytest.mark.parametrize("failing", FAILING)
def test_a_failing_credential_source_is_one_typed_error_everywhere(
    moto_server: S3Target, failing: str
) -> None:
    """Each call on each engine, the native twin, a tier and @cached: PermissionDeniedError
    naming the credentials, never botocore's RuntimeError, the source's OSError or
    obstore's "InvalidAccessKeyId: Forbidden" for a request it never sent."""
    source = Source(FAILING[failing])
    stores = {engine: source.backend(moto_server, engine) for engine in ENGINES}
    errors: dict[str, BaseException] = {}
    for engine, store in stores.items():
        for name, call in CALLS.items():
            errors[f"{engine} {name}"] = failure_of(lambda: call(store))  # noqa: B023 - called at once
    twin = stores["obstore"].aio()
    for name, call in CALLS.items():
        errors[f"twin {name}"] = failure_of(lambda: call(twin))  # noqa: B023
    tier = TieredBackend(MemoryCache(timeout=60), stores["obstore"])
    errors["tier load"] = failure_of(lambda: tier.load("k"))
    errors["tier dump"] = failure_of(lambda: tier.dump("k", 1))
    errors["cached"] = failure_of(cached(stores["boto3"])(lambda: 1))
    for engine, store in stores.items():  # signed locally, with the same credentials
        errors[f"{engine} url"] = failure_of(lambda: store.url("k", expires=60))  # noqa: B023
    errors["twin url"] = failure_of(lambda: twin.url("k", expires=60))
    for where, exc in errors.items():
        try:
            assert_credentials_error(exc)
        except AssertionError as failed:
            raise AssertionError(f"{where}: {failed}") from None
    assert len({type(exc.__cause__) for exc in errors.values()}) == 1, errors  # one botocore cause
    for store in stores.values():
        store.close()
        store.client.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_advisory_refresh_is_tried_once_per_request_and_the_old_credentials_serve(
    moto_server: S3Target, engine: str
) -> None:
    """12 minutes left: botocore's advisory window (15), not its mandatory one (10). A refresh that
    fails there is logged and the credentials still valid sign: botocore tries once per request
    (obstore, holding them until 5 minutes before expiry, once); the check that makes a failed
    mandatory refresh botocore's error must not make it twice."""
    source = Source(service_down)
    store = source.backend(moto_server, engine, prefix=f"advisory-{engine}")
    found = store.client._get_credentials()
    found._expiry_time = datetime.now(timezone.utc) + timedelta(minutes=12)  # no public name
    for _ in range(3):
        assert store.load("absent") is None
    assert source.refreshes == (3 if engine == "boto3" else 1)
    store.close()
    store.client.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_an_advisory_refresh_that_gives_expired_credentials_is_the_typed_error(
    moto_server: S3Target, engine: str
) -> None:
    """botocore raises its RuntimeError for refreshed credentials still expired in the advisory
    window too, where a failure of the source itself would only be logged."""
    source = Source(expired)
    store = source.backend(moto_server, engine, prefix=f"advisory-expired-{engine}")
    found = store.client._get_credentials()
    found._expiry_time = datetime.now(timezone.utc) + timedelta(minutes=12)  # no public name
    assert_credentials_error(failure_of(lambda: store.load("k")))
    assert source.refreshes == 1
    store.close()
    store.client.close()


# -- closing while a refresh waits -------------------------------------------------------------
# The request of a call that waits for its credentials is not sent yet: once close() lands it is
# never sent (before the fix it went out after close() had returned, on either engine).


@pytest.fixture
def wire(moto_server: S3Target) -> Any:
    with Proxy(moto_server.endpoint_url or "") as proxy:
        yield proxy, S3Target("wire", proxy.endpoint, moto_server.bucket, moto_server.client)


def assert_closed_error(exc: BaseException | None) -> None:
    assert type(exc) is StoreError and "closed" in str(exc), repr(exc)


def backend_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("backends-s3")]


@pytest.mark.parametrize("call", ["load", "contains", "dump", "dump_many"])
@pytest.mark.parametrize("engine", ENGINES)
def test_close_while_a_refresh_waits_sends_nothing_after_it(wire: Any, engine: str, call: str) -> None:
    proxy, target = wire
    source = Source()
    source.gate = threading.Event()
    store = source.backend(target, engine, prefix=f"close-{engine}-{call}")
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            CALLS[call](store)
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    caller = threading.Thread(target=run)
    caller.start()
    assert source.entered.wait(10)  # the call's refresh waits at the gate
    closer = threading.Thread(target=store.close)
    closer.start()
    while not store.closed:  # close() landed (its pool may wait for the call: it ends below)
        closer.join(0.005)
    sent = proxy.requests.total()
    source.gate.set()
    caller.join(10)
    closer.join(10)
    assert not caller.is_alive() and not closer.is_alive()
    assert_closed_error(outcome[0])
    assert proxy.requests.total() == sent  # nothing sent once close() landed
    for name, later in CALLS.items():  # every call after close, and close again
        try:
            later(store)
        except StoreError as exc:
            assert_closed_error(exc)
        else:
            raise AssertionError(f"{name} after close did not fail")
    store.close()
    assert proxy.requests.total() == sent
    assert not backend_threads()
    store.client.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_closing_one_backend_leaves_another_on_the_same_client_serving(wire: Any, engine: str) -> None:
    """The refusal after a refresh is the closed backend's own: one client, two backends."""
    proxy, target = wire
    source = Source()
    client = source.client(target)
    closed, open_ = (S3JsonBackend(target.bucket, prefix=p, client=client, engine=engine) for p in ("a", "b"))
    closed.close()
    open_["k"] = 1
    assert open_["k"] == 1 and "k" in open_ and open_.load_many(["k"]) == {"k": 1}
    assert source.refreshes == 1
    sent = proxy.requests.total()
    with pytest.raises(StoreError, match="closed"):
        closed["k"] = 1
    assert proxy.requests.total() == sent
    open_.clear()
    client.close()


@pytest.mark.parametrize("call", ["load", "contains", "dump", "dump_many", "load_many"])
def test_aclose_while_a_twins_refresh_waits_sends_nothing_after_it(wire: Any, call: str) -> None:
    proxy, target = wire
    source = Source()
    source.gate = threading.Event()
    store = source.backend(target, "obstore", prefix=f"aclose-{call}")

    async def main() -> None:
        twin = store.aio()
        task = asyncio.ensure_future(CALLS[call](twin))
        while not source.entered.is_set():  # the refresh is on obstore's thread: the loop turns
            await asyncio.sleep(0)
        await twin.aclose()
        sent = proxy.requests.total()
        source.gate.set()
        with pytest.raises(StoreError) as info:
            await task
        assert_closed_error(info.value)
        for later in CALLS.values():
            with pytest.raises(StoreError):
                await later(twin)
        await twin.aclose()  # twice: nothing
        assert proxy.requests.total() == sent

    asyncio.run(main())
    assert not backend_threads()
    store.client.close()


def test_a_refresh_that_ends_after_its_loop_closed_raises_into_nothing(wire: Any) -> None:
    """The twin's refresh runs on obstore's thread; the loop that awaited it is gone when it ends:
    no unraisable error, no thread error, no request."""
    proxy, target = wire
    source = Source()
    source.gate = threading.Event()
    store = source.backend(target, "obstore", prefix="gone")
    seen: list[object] = []
    unraisable, excepthook = __import__("sys").unraisablehook, threading.excepthook
    __import__("sys").unraisablehook = seen.append
    threading.excepthook = seen.append

    async def main() -> None:
        twin = store.aio()
        pending = asyncio.ensure_future(twin.load("k"))  # left pending: asyncio.run cancels it
        while not source.entered.is_set():
            await asyncio.sleep(0)
        await twin.aclose()
        assert not pending.done()  # still at the gate when its loop ends

    try:
        asyncio.run(main())
        sent = proxy.requests.total()
        source.gate.set()
        # the refresh returns on obstore's thread: a request through it shows that thread is done
        assert S3JsonBackend(target.bucket, engine="obstore", **target.options()).load("absent") is None
        assert proxy.requests.total() == sent + 1
    finally:
        __import__("sys").unraisablehook, threading.excepthook = unraisable, excepthook
    assert seen == []
    store.client.close()


# -- pressure: every request at once on an expired credential -----------------------------------

THREADS = 64
TWIN_LOADS = 5000 if LONG else 500  # moto answers about 300 a second


@pytest.mark.parametrize("engine", ENGINES)
def test_threads_meeting_an_expired_credential_refresh_it_once(moto_server: S3Target, engine: str) -> None:
    source = Source()
    source.gate = threading.Event()  # every thread is waiting before the one refresh ends
    store = source.backend(moto_server, engine, prefix=f"stampede-{engine}", max_workers=THREADS)
    moto_server.client.put_object(Bucket=moto_server.bucket, Key=f"stampede-{engine}/k", Body=b"7")
    start = threading.Barrier(THREADS + 1)
    results: list[Any] = []

    def load() -> None:
        start.wait()
        results.append(store.load("k"))

    threads = [threading.Thread(target=load) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    assert source.entered.wait(10)
    source.gate.set()
    for thread in threads:
        thread.join(30)
    assert results == [7] * THREADS
    assert source.refreshes == 1
    store.close()
    store.client.close()


def test_a_crowd_of_twin_loads_on_an_expired_credential_refreshes_it_once(moto_server: S3Target) -> None:
    source = Source()
    source.gate = threading.Event()
    store = source.backend(moto_server, "obstore", prefix="stampede-twin")
    moto_server.client.put_object(Bucket=moto_server.bucket, Key="stampede-twin/k", Body=b"7")

    async def main() -> list[Any]:
        async with store.aio() as twin:
            loads = asyncio.gather(*(twin.load("k") for _ in range(TWIN_LOADS)))
            while not source.entered.is_set():  # the first refresh waits; the other loads pile up
                await asyncio.sleep(0)
            for _ in range(100):
                await asyncio.sleep(0)
            source.gate.set()
            return await loads

    assert asyncio.run(main()) == [7] * TWIN_LOADS
    assert source.refreshes == 1
    store.client.close()


@pytest.mark.parametrize("failing", ["service_down", "still_expired"])
def test_a_crowd_of_twin_loads_on_a_failing_source_each_get_the_typed_error(
    moto_server: S3Target, failing: str
) -> None:
    source = Source(FAILING[failing])
    store = source.backend(moto_server, "obstore", prefix="crowd-failing")

    async def main() -> list[Any]:
        async with store.aio() as twin:
            return await asyncio.gather(*(twin.load(f"k{i}") for i in range(200)), return_exceptions=True)

    for result in asyncio.run(main()):
        assert_credentials_error(result)
    assert 1 <= source.refreshes <= 200  # a failed refresh is asked again, at most once a request
    store.client.close()


def test_the_secrets_kept_to_clean_errors_stay_bounded_through_many_rotations(moto_server: S3Target) -> None:
    source = Source(lambda n: metadata(n, timedelta(minutes=4)))  # under every threshold: each ask refreshes
    store = source.backend(moto_server, "obstore", prefix="rotations")
    provider = store._engine._credentials  # what obstore asks; read, not steered
    for _ in range(100):
        provider()
    assert source.refreshes >= 100
    assert len(provider.secrets) <= 16
    assert f"{TOKEN}-{source.refreshes}" in provider.secrets  # the newest are the ones kept
    store.client.close()


# -- processes and loops -----------------------------------------------------------------------


def _load_in_child(store: Any, source: Source, results: Any) -> None:
    try:
        source.gate = None  # the child's own refresh is not held (the parent's still is)
        results.put(("ok", store.load("k"), store.load_many(["k"]), "k" in store))
    except BaseException as exc:  # reported to the parent
        results.put(("error", type(exc).__name__, str(exc)))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_child_forked_while_a_refresh_is_under_way_gets_credentials(
    moto_server: S3Target, engine: str
) -> None:
    """The fork copies botocore's refresh lock held by the parent's refreshing thread: before
    the fix the child's first request waited for it forever (the obstore engine's child sends
    through boto3, so both engines)."""
    source = Source()
    source.gate = threading.Event()
    store = source.backend(moto_server, engine, prefix=f"fork-{engine}")
    moto_server.client.put_object(Bucket=moto_server.bucket, Key=f"fork-{engine}/k", Body=b"5")
    parent = threading.Thread(target=lambda: store.load("k"))
    parent.start()  # its first request: obstore's runtime is started, the refresh waits at the gate
    assert source.entered.wait(10)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_load_in_child, args=(store, source, results))
    child.start()
    child.join(20)
    alive = child.is_alive()
    if alive:
        child.kill()
        child.join()
    source.gate.set()
    parent.join(10)
    assert not alive, "the forked child's call never returned"
    assert results.get(timeout=5) == ("ok", 5, {"k": 5}, True)
    assert store.load("k") == 5 and source.refreshes == 1  # the parent's one refresh, its own
    store.close()
    store.client.close()


def test_one_twin_in_two_loops_while_the_credentials_rotate(moto_server: S3Target) -> None:
    # 4 minutes of life: under obstore's threshold, so it asks again after each 100 ms back-off
    # and each ask refreshes: the credentials rotate under both loops' requests.
    source = Source(lambda n: metadata(n, timedelta(minutes=4)))
    store = source.backend(moto_server, "obstore", prefix="two-loops")
    twin = store.aio()
    errors: list[BaseException] = []
    rounds: dict[int, int] = {}
    barrier = threading.Barrier(2)

    def in_own_loop(index: int) -> None:
        async def main() -> int:
            done = 0
            while source.refreshes < 4 and done < 2000:  # at least 3 rotations (bounded)
                await twin.dump(f"{index}/{done}", done)
                pair = await asyncio.gather(twin.load(f"{index}/{done}"), twin.contains(f"{index}/{done}"))
                assert pair == [done, True]
                done += 1
            return done

        barrier.wait()
        try:
            rounds[index] = asyncio.run(main())
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=in_own_loop, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert source.refreshes >= 4, rounds
    assert store.load_many([f"{i}/0" for i in range(2)]) == {"0/0": 0, "1/0": 0}
    assert len(store._engine._credentials.secrets) <= 16
    asyncio.run(twin.aclose())
    store.client.close()


# -- where credentials matter: SeaweedFS checking every signature -----------------------------------
# moto signs nothing off; SeaweedFS given identities refuses a request signed with a key it does not
# know (InvalidAccessKeyId) or with the wrong secret (SignatureDoesNotMatch). Each refresh hands out
# the other of two identities it knows: a request signed with a torn or stale pair fails.

ROTATING = [("AKIDROTATE0", f"{SECRET}-even"), ("AKIDROTATE1", f"{SECRET}-odd")]


@pytest.fixture(scope="module")
def guarded() -> Iterator[S3Target]:
    data = Path(tempfile.mkdtemp(prefix="backends-weed-guarded-"))
    known = [
        (servers.CREDENTIALS["aws_access_key_id"], servers.CREDENTIALS["aws_secret_access_key"]),
        *ROTATING,
    ]
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    identities = [
        {"name": f"user{i}", "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}
        for i, (key, secret) in enumerate(known)
    ]
    (data / "s3.json").write_text(json.dumps({"identities": identities}))
    ports = {name: servers.free_port() for name in servers.WEED_PORTS}
    args = [servers.weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += ["-admin.ui=false", f"-s3.config={data / 's3.json'}"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    args += [f"-{name}=0" for name in servers.weed_optional_listeners()]
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=servers._die_with_parent)  # noqa: PLW1509
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        servers._wait_ready(endpoint, proc, data / "weed.log")
        target = S3Target("guarded", endpoint, "backends-guarded", servers.s3_client(endpoint))
        target.client.create_bucket(Bucket=target.bucket)
        yield target
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def rotating(n: int, life: timedelta = timedelta(minutes=4)) -> dict[str, Any]:
    """The other known identity at each refresh (no token: SeaweedFS would look for its STS session)."""
    key, secret = ROTATING[n % 2]
    expiry = (datetime.now(timezone.utc) + life).isoformat()
    return {"access_key": key, "secret_key": secret, "token": None, "expiry_time": expiry}


@pytest.mark.parametrize("engine", ENGINES)
def test_threads_on_a_checking_server_while_the_credentials_rotate(guarded: S3Target, engine: str) -> None:
    source = Source(rotating)  # 4 minutes of life: each of obstore's asks (and boto3's) refreshes
    store = source.backend(guarded, engine, prefix=f"rotate-{engine}", max_workers=16)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for round_ in range(40):
                if source.refreshes >= 6 and round_ >= 3:
                    return
                key = f"{index}/{round_}"
                store[key] = round_
                assert store[key] == round_ and key in store
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert source.refreshes >= 3  # rotated under the requests
    assert store.load_many([f"{i}/0" for i in range(16)]) == {f"{i}/0": 0 for i in range(16)}
    store.close()
    store.client.close()


def test_the_twin_on_a_checking_server_in_two_loops_while_the_credentials_rotate(guarded: S3Target) -> None:
    source = Source(rotating)
    store = source.backend(guarded, "obstore", prefix="rotate-twin")
    twin = store.aio()
    errors: list[BaseException] = []

    def in_own_loop(index: int) -> None:
        async def main() -> None:
            for done in range(300):
                if source.refreshes >= 4 and done >= 3:
                    return
                await twin.dump_many({f"{index}/{done}/{j}": j for j in range(8)})
                loaded = await twin.load_many([f"{index}/{done}/{j}" for j in range(8)])
                assert loaded == {f"{index}/{done}/{j}": j for j in range(8)}

        try:
            asyncio.run(main())
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=in_own_loop, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert source.refreshes >= 3
    asyncio.run(twin.aclose())
    store.client.close()


def test_a_refresh_to_a_revoked_key_is_the_same_denial_on_both_engines(guarded: S3Target) -> None:
    def revoked(n: int) -> dict[str, Any]:
        expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        return {
            "access_key": "AKIDREVOKED",
            "secret_key": f"{SECRET}-revoked",
            "token": None,
            "expiry_time": expiry,
        }

    source = Source(revoked)
    errors: dict[str, BaseException] = {}
    for engine in ENGINES:
        store = source.backend(guarded, engine, prefix="revoked")
        for name, call in CALLS.items():
            errors[f"{engine} {name}"] = failure_of(lambda: call(store))  # noqa: B023 - called at once
        if engine == "obstore":
            twin = store.aio()
            for name, call in CALLS.items():
                errors[f"twin {name}"] = failure_of(lambda: call(twin))  # noqa: B023
        store.client.close()
    for where, exc in errors.items():
        assert type(exc) is PermissionDeniedError, (where, exc)
        assert SECRET not in chain(exc), where
    for name in CALLS:  # the same words on each engine and the twin (a HEAD's 403 has no body)
        said = {str(errors[f"{where} {name}"]).split("): ", 1)[1] for where in ("boto3", "obstore", "twin")}
        assert len(said) == 1, said
        assert name == "contains" or "InvalidAccessKeyId" in said.pop()
