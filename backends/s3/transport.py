"""S3Transport: how each request of an S3 backend reaches S3 and comes back.

The layer under :class:`~backends.s3.connection.S3Connection`: one boto3
client (and, on engine="obstore", the obstore engine) per backend, safe
across threads. Every request goes through :meth:`S3Transport._call`:
retries of cut answers, file bodies rewound, the bucket made on demand.
Bulk calls run on the backend's pool (:meth:`S3Transport._map`); every native
error is read through one table (:func:`.errors.translate`); ``close`` ends
the pool, the engine and the client.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from ..base import BaseBackend
from ..errors import BackendError, StoreError
from ..events import tell_retry
from ..forkgate import new_locks_in_child
from .arguments import check_etag
from .credentials import SENDING, guard_signing
from .engine import ObstoreEngine
from .errors import count_resends, error_code, forget_requests, translate

__all__ = ["PAGE", "S3Transport", "batches"]

V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")

PAGE = 1000  # S3's most keys per LIST page and per DeleteObjects

#: the conditional headers a caller's ETag goes into: the argument and the call that take it
_CONDITIONS = (("IfMatch", "if_match", "dump"), ("IfNoneMatch", "etag", "load_if_changed"))


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _retry_teller(backend: Callable[[], Any]) -> Callable[..., None]:
    """A botocore ``request-created`` handler: a request made again is a ``retried`` event of ``backend``."""

    def tell(request: Any, operation_name: str = "", **_: Any) -> None:
        attempt = getattr(request, "context", {}).get("retries", {}).get("attempt", 1)
        if attempt > 1:
            tell_retry(backend(), attempt, operation_name)

    return tell


class S3Transport(BaseBackend[V, bytes]):
    """The requests of :class:`~backends.s3.connection.S3Connection`, on options it checked."""

    def __init__(
        self,
        client: Any,
        *,
        owns_client: bool,
        bucket: str,
        prefix: str,
        engine: str,
        retries: int,
        timeout: float,
        max_workers: int,
        create_bucket: bool,
    ) -> None:
        from botocore import exceptions as bx

        # A raw urllib3 error from an action that could not be run again (a
        # stream read once, given to s3transfer) is translated all the same.
        from urllib3.exceptions import HTTPError

        self._native_errors = (bx.ClientError, bx.BotoCoreError, HTTPError)
        #: an error S3 answered (its code tells which): the one the control flow looks at
        self._client_error = bx.ClientError
        # A body cut off mid-read: botocore retries requests, not bodies.
        self._cut_body = (bx.ResponseStreamingError, bx.IncompleteReadError, bx.ReadTimeoutError)
        # A response body botocore reads itself (an error's XML, a listing)
        # cut off mid-read escapes botocore as a raw urllib3 error, unretried.
        self._cut_response: tuple[type[BaseException], ...] = (HTTPError,)
        # obstore reads a GET's body inside the call: a cut one comes out of it.
        self._engine_cut = (HTTPError, bx.ResponseStreamingError)
        self._streaming_error = bx.ResponseStreamingError
        self.bucket = bucket
        self.retries = retries
        self._retries = retries
        self.prefix = prefix
        self.max_workers = max_workers
        self.client = client
        self._owns_client = owns_client
        #: who sends each object's GET, HEAD, PUT and DELETE ("boto3" or "obstore")
        self.engine = engine
        self._engine = (
            ObstoreEngine(
                client, bucket, retries=retries, timeout=timeout, pool=max_workers, refuse=self._check_open
            )
            if engine == "obstore"
            else None
        )
        # Each retry botocore makes is an event ("request retried") of this backend.
        client.meta.events.register(
            "request-created.s3", _retry_teller(weakref.ref(self)), unique_id=f"backends-retries-{id(self)}"
        )
        guard_signing(client)  # a failed refresh: botocore's exception, never its own RuntimeError
        self.region: str | None = client.meta.region_name
        self._endpoint: str = client.meta.endpoint_url
        self._create_missing = create_bucket
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self._bucket_lock = threading.Lock()
        # Held by a bulk call submitting its batch, or a request making a missing bucket: new in a
        # forked child (another thread of the parent may have held one at the fork).
        new_locks_in_child(self, "_lock", "_bucket_lock")
        self._buckets_made = 0

    def _object_key(self, key: str) -> str:
        return self.prefix + key

    # -- one request ----------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> Any:
        """One S3 request (botocore retries it); creates a missing bucket if asked to.

        A file body is sent again from where it started when the request is
        run again after creating the bucket (botocore rewinds it for its own
        retries, but not for ours). An ETag the caller gave that no header
        can carry raises ValueError first, on either engine.
        """
        if "IfMatch" in params or "IfNoneMatch" in params:
            self._check_conditions(operation, params)
        if self._engine is not None and self._engine.sends(operation, params):
            engine = self._engine
            action = lambda: self._with_bucket(lambda: engine.call(operation, params))  # noqa: E731
            return self._again_if_cut(action, self._engine_cut)
        return self._again_if_cut(lambda: self._with_bucket(self._sender(operation, params)))

    def _sender(self, operation: str, params: dict[str, Any]) -> Callable[[], Any]:
        """The request through the boto3 client (whichever the engine), its file body rewound each time."""
        method = getattr(self.client, operation)
        body: Any = params.get("Body")
        start = None if body is None or isinstance(body, (bytes, bytearray)) else body.tell()

        def send() -> Any:
            if start is not None:
                body.seek(start)
            return method(Bucket=self.bucket, **params)

        return send

    def _check_conditions(self, operation: str, params: dict[str, Any]) -> None:
        """Raise ValueError (naming backend, call, key, argument) for an ETag no header can carry."""
        for header, argument, call in _CONDITIONS:
            value = params.get(header, "*")
            if value != "*":  # If-None-Match: * is the backend's own (if_absent)
                try:
                    check_etag(argument, value)
                except ValueError as exc:
                    key = str(params.get("Key", ""))[len(self.prefix) :]
                    raise ValueError(f"{self!r}: {call} {key!r}: {exc}") from None

    def _again_if_cut(
        self, action: Callable[[], R], cut: tuple[type[BaseException], ...] | None = None, *, tried: int = 0
    ) -> R:
        """Run ``action`` again when an answer botocore reads itself was cut off; at most ``retries`` times.

        Only for an action that can run again from the start (a request, a
        path, a file rewound first); then ResponseStreamingError, which is
        StoreUnavailableError. An error answered to a try sent again here
        counts it among its resends (:func:`.errors.resends`). ``tried``: the
        tries already cut off before this call.
        """
        cut = cut or self._cut_response
        for attempt in range(tried, self._retries + 1):
            try:
                return action()
            except cut as exc:
                if attempt == self._retries:
                    raise self._streaming_error(error=exc) from exc
            except self._client_error as exc:
                if attempt:
                    count_resends(exc.response, attempt)
                raise
        raise AssertionError("unreachable")

    # -- the bucket made on demand ------------------------------------------------------

    def _with_bucket(self, action: Callable[[], R]) -> R:
        """Run ``action``; with ``create_bucket``, create a missing bucket and run it again.

        A request through boto3 whose credentials' refresh waited while the backend was
        closed is not sent: StoreError (:data:`.credentials.SENDING`).
        """
        self._check_open()
        generation = self._buckets_made
        outer, SENDING.refuse = getattr(SENDING, "refuse", None), self._check_open
        try:
            try:
                return action()
            except self._client_error as exc:
                if not self._bucket_missing(exc):
                    raise
            self._make_bucket_since(generation)
            return action()
        finally:
            SENDING.refuse = outer

    def _bucket_missing(self, exc: Any) -> bool:
        """Whether ``exc`` says the bucket is missing and this backend creates it (``create_bucket``)."""
        return self._create_missing and error_code(exc) == "NoSuchBucket"

    def _make_bucket_since(self, generation: int) -> None:
        """Create the bucket unless it was made since ``generation`` (``_buckets_made``)."""
        # The threads of one dump_many all meet the missing bucket: the first
        # creates it, the others see it was made since they tried.
        with self._bucket_lock:
            if self._buckets_made == generation:
                self._make_bucket()
                self._buckets_made += 1

    def _ensure_bucket(self) -> None:
        """With ``create_bucket``, make the bucket now unless this backend already did.

        For a write that cannot be run again (a stream read once): it must
        not meet a missing bucket half-way.
        """
        if not self._create_missing:
            return
        with self._bucket_lock:
            if self._buckets_made == 0:
                self._make_bucket()
                self._buckets_made += 1

    def _make_bucket(self) -> None:
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**params)
        except self._client_error as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                raise  # BucketAlreadyExists: someone else's; translated with a clear reason

    # -- many requests ------------------------------------------------------------------

    def _map(self, function: Callable[[T], R], items: list[T]) -> list[R]:
        """``function`` over ``items`` on the backend's pool, in order; the first error raises."""
        if len(items) <= 1 or self.max_workers <= 1:
            return [function(item) for item in items]
        results: list[R] = []
        for batch in batches(items, PAGE):
            # close() takes the lock too: a batch is submitted whole before it, or not at
            # all after it (StoreError, never the shut pool's RuntimeError). Of a batch
            # submitted, the requests not yet started when close() lands raise StoreError.
            with self._lock:
                self._check_open()
                if self._pool is None or self._pool_pid != os.getpid():
                    # A forked child has none of its parent's threads, which the
                    # parent's pool would count as idle and queue every request for.
                    self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="backends-s3")
                    self._pool_pid = os.getpid()
                answers = self._pool.map(function, batch)
            results.extend(answers)
        return results

    # -- errors and lifetime ----------------------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        forget_requests(exc)  # the error raised from it keeps it as __cause__
        return translate(exc, self.bucket, self.region, self.retries)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: every call then raises StoreError."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the backend is closed (close() was called); make a new one", backend=repr(self))

    def close(self) -> None:
        """Stop the worker threads and close the client's connections (if the backend made it).

        Every later call raises StoreError.
        """
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if self._engine is not None:
            self._engine.close()  # first: a pool's request still waiting for credentials is not sent
        if pool is not None:
            pool.shutdown(wait=True)
        if self._owns_client:
            self.client.close()
