"""The obstore engine: an S3 backend's per-object requests on obstore's Rust core.

``S3Backend(..., engine="obstore")`` sends the GET, HEAD and PUT of one
object through `obstore <https://developmentseed.org/obstore/>`_ (its HTTP
client and signing run in Rust without holding the GIL) and everything else
through the backend's boto3 client: LIST, DELETE (obstore sends a single
delete as a DeleteObjects POST), CopyObject, ACLs, bucket creation,
presigned URLs, streaming transfers, and a lock's objects (their names hold
a control character obstore refuses), and ``stat``'s HEAD (obstore does not
tell the storage class). Each call sends the same requests as with boto3,
method for method.

Answers come back in boto3's shapes and errors as the botocore exceptions
boto3 would raise for the same failure (``ClientError`` with S3's code,
``ConnectionClosedError``, ``ReadTimeoutError``, ``ResponseStreamingError``,
``EndpointConnectionError``), built from obstore's text and never chained to
obstore's own error (its text holds the answer's body, where S3 echoes a
signed request), so every backend above runs unchanged on either engine.
What obstore cannot answer is asked through boto3: a redirect (boto3 names
the region), an answer whose headers obstore cannot read, a conditional PUT
whose answer was lost (obstore does not send it again; boto3's answer then
counts obstore's try among its ``RetryAttempts``), every request of a
process forked after obstore's first one. ``timeout`` bounds the connect and
each read, never the whole transfer. Credentials are the boto3 client's
(its chain, refreshed when they expire: :mod:`.credentials`).

The async twin (:mod:`.aio`) sends the same requests through obstore's
async API (``get_async``, ``put_async``): an awaited request holds no thread,
and what must be asked through boto3 instead runs in the twin's threads.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final, TypeAlias

from ..errors import StoreError
from .credentials import REFUSED as _REFUSED
from .credentials import ClientCredentials
from .errors import count_resends
from .obstoreerrors import ErrorReader

__all__ = [
    "ENGINES",
    "OBJECT_OPERATIONS",
    "OBSTORE_EXTRA",
    "InThread",
    "Loaded",
    "ObstoreEngine",
    "import_obstore",
]

ENGINES: Final = ("boto3", "obstore")
OBSTORE_EXTRA: Final = "engine='obstore' needs obstore: pip install 'backends[obstore]'"
#: the requests the obstore engine sends itself (the rest go to boto3)
OBJECT_OPERATIONS: Final = frozenset({"get_object", "head_object", "put_object"})
#: attributes obstore names apart from user metadata, and boto3's names for them
_ATTRIBUTES: Final = {
    "Content-Type": "ContentType",
    "Content-Encoding": "ContentEncoding",
    "Cache-Control": "CacheControl",
    "Content-Disposition": "ContentDisposition",
    "Content-Language": "ContentLanguage",
    "Storage-Class": "StorageClass",
}
_PUT_ATTRIBUTES: Final = {boto: name for name, boto in _ATTRIBUTES.items()}
_ATTRIBUTE_NAMES: Final = frozenset(name.lower() for name in _ATTRIBUTES)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: a load's answer: the body, its Content-Type and its Content-Encoding
Loaded: TypeAlias = tuple[bytes, str | None, str | None]
#: runs a blocking function in a thread, for the async calls: ``await in_thread(function)``
InThread: TypeAlias = Callable[[Callable[[], Any]], Awaitable[Any]]
_HEAD: Final = {"head": True}


#: the parameters of a conditional PUT
_CONDITIONAL: Final = frozenset({"IfMatch", "IfNoneMatch"})
#: "no limit" for obstore's whole-request timeout and retry deadline (a year)
_UNBOUNDED: Final = timedelta(days=365)


#: whether this process sent a request through obstore, and whether it is a child forked
#: after that (obstore's tokio runtime is then gone: its calls would never return)
_RUNTIME = {"started": False, "lost": False}


def _forked() -> None:
    _RUNTIME["lost"] = _RUNTIME["started"]


os.register_at_fork(after_in_child=_forked)


def import_obstore() -> Any:
    """Import obstore, or raise ImportError naming the extra to install."""
    try:
        import obstore
    except ImportError as exc:
        raise ImportError(OBSTORE_EXTRA) from exc
    return obstore


class _Body:
    """A GET's body, read as boto3's is: whole (``read()``) or ``size`` bytes at a time
    (``gzip.GzipFile`` reads a gzipped object's header that way)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._data)
        data, self._data = bytes(self._data[:size]), self._data[size:]
        return data

    def close(self) -> None:
        self._data = memoryview(b"")


class ObstoreEngine:
    """GET, HEAD and PUT of one object through an obstore ``S3Store``, answered as boto3 does."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        retries: int,
        timeout: float,
        pool: int,
        refuse: Callable[[], None] = lambda: None,
    ) -> None:
        self._obstore = import_obstore()
        #: raises the backend's StoreError once it is closed
        self._refuse = refuse
        from botocore import exceptions as bx

        self._bx = bx
        self._client = client
        self.bucket = bucket
        self._settings = {"retries": retries, "timeout": timeout, "pool": pool}
        self._store: Any = None
        self._lock = threading.Lock()
        self._credentials = ClientCredentials(client, bx.NoCredentialsError)
        endpoint = client.meta.endpoint_url
        self._errors = ErrorReader(self._obstore.exceptions, bx, endpoint, lambda: self._credentials.secrets)

    # -- the store, made at the first request ------------------------------------------

    def _s3_store(self) -> Any:
        store = self._store
        if store is None:
            with self._lock:
                if self._credentials.closed:
                    self._refuse()  # closed: no new store (a request that passed the check is not sent)
                if self._store is None:
                    self._store = self._make_store()
                store = self._store
        return store

    def _make_store(self) -> Any:
        from obstore.store import S3Store

        meta = self._client.meta
        endpoint: str = meta.endpoint_url
        style = (meta.config.s3 or {}).get("addressing_style")
        on_aws = endpoint.endswith(".amazonaws.com")
        config: Any = {"region": meta.region_name or "us-east-1"}
        if not on_aws:
            config["endpoint"] = endpoint
        config["virtual_hosted_style_request"] = style == "virtual" or (on_aws and style != "path")
        # timeout= bounds the connect and each read, as botocore's connect and
        # read timeouts do; obstore's own "timeout" (the whole request, body
        # included) would fail any transfer longer than it: it is left unbounded.
        timeout = timedelta(seconds=self._settings["timeout"])
        client_options: Any = {
            "allow_http": endpoint.startswith("http:"),
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "timeout": _UNBOUNDED,
            "pool_max_idle_per_host": str(self._settings["pool"]),
        }
        # Only the number of retries bounds them, as in botocore.
        retry: Any = {"max_retries": self._settings["retries"], "retry_timeout": _UNBOUNDED}
        return S3Store(
            self.bucket,
            config=config,
            client_options=client_options,
            retry_config=retry,
            credential_provider=self._credentials,
        )

    def close(self) -> None:
        """Let go of the obstore store and its connections (a request sent finishes; one still
        waiting for its credentials is not sent: the backend's StoreError)."""
        self._credentials.closed = True
        with self._lock:
            self._store = None

    def _failure(self, exc: BaseException, operation: str) -> BaseException | None:
        """obstore's error as botocore's (:meth:`.ErrorReader.as_botocore`); the backend's
        StoreError for a request refused once closed (by the credential provider, or for want
        of a store); a request sent before close is answered as it is."""
        if self._credentials.closed and (isinstance(exc, StoreError) or _REFUSED in str(exc)):
            try:
                self._refuse()
            except Exception as refused:  # the backend's own StoreError
                refused.__context__ = None  # raised here, in the except block of obstore's error
                return refused
        return self._errors.as_botocore(exc, operation)

    # -- the requests ------------------------------------------------------------------------

    def call(self, operation: str, params: dict[str, Any]) -> Any:
        """Send ``operation`` (one that :meth:`sends`; boto3's name and parameters, without
        ``Bucket``); boto3's answer, or botocore's exception for the failure.

        The exception is raised from no other: obstore's own holds the answer's
        whole body, where S3 echoes a signed request (the session token
        included), so it never enters the chain. A redirect (a wrong region)
        is asked again through boto3, which reads the region from the answer's
        headers (on AWS it follows it), and so is an answer whose headers
        obstore cannot read (another tool's object with non-UTF-8 metadata).
        In a process forked after obstore's first request, every request goes
        through boto3: obstore's tokio runtime does not survive a fork (its
        requests would wait forever).
        """
        if _RUNTIME["lost"]:
            return self._through_boto3(operation, params)
        _RUNTIME["started"] = True
        try:
            return self._send(operation, params)
        except (self._obstore.exceptions.BaseError, OSError) as exc:  # not found: FileNotFoundError
            failure = self._failure(exc, operation)
        if failure is None or self._lost_condition(failure, operation, params):
            return self._through_boto3(operation, params, resent=True)
        raise failure  # outside the except block: no __context__ either

    async def call_async(self, operation: str, params: dict[str, Any], in_thread: InThread) -> Any:
        """:meth:`call` through obstore's async API: no thread waits for the answer. What is
        asked through boto3 instead runs as ``await in_thread(function)``."""
        if _RUNTIME["lost"]:
            return await in_thread(lambda: self._through_boto3(operation, params))
        _RUNTIME["started"] = True
        try:
            return await self._send_async(operation, params)
        except (self._obstore.exceptions.BaseError, OSError) as exc:
            failure = self._failure(exc, operation)
        if failure is None or self._lost_condition(failure, operation, params):
            return await in_thread(lambda: self._through_boto3(operation, params, resent=True))
        raise failure

    def load(self, key: str) -> Loaded:
        """One GET of ``key``, as :meth:`call` sends it, shaped only as a load reads it:
        ``(body, Content-Type, Content-Encoding)`` (no boto3 answer is built: the
        client CPU of a load is obstore's, and little more)."""
        if _RUNTIME["lost"]:
            return self._load_through_boto3(key, resent=False)
        _RUNTIME["started"] = True
        try:
            result = self._obstore.get(self._store or self._s3_store(), key)
            data = result.bytes()
        except (self._obstore.exceptions.BaseError, OSError) as exc:
            failure = self._failure(exc, "get_object")
        else:
            attributes = result.attributes
            return bytes(data), attributes.get("Content-Type"), attributes.get("Content-Encoding")
        if failure is None:
            return self._load_through_boto3(key, resent=True)
        raise failure

    async def load_async(self, key: str, in_thread: InThread) -> Loaded:
        """:meth:`load` through obstore's async API."""
        if _RUNTIME["lost"]:
            return await in_thread(lambda: self._load_through_boto3(key, resent=False))  # type: ignore[no-any-return]
        _RUNTIME["started"] = True
        try:
            result = await self._obstore.get_async(self._s3_store(), key)
            data = await result.bytes_async()
        except (self._obstore.exceptions.BaseError, OSError) as exc:
            failure = self._failure(exc, "get_object")
        else:
            attributes = result.attributes
            return bytes(data), attributes.get("Content-Type"), attributes.get("Content-Encoding")
        if failure is None:
            return await in_thread(lambda: self._load_through_boto3(key, resent=True))  # type: ignore[no-any-return]
        raise failure

    def _lost_condition(self, failure: BaseException, operation: str, params: dict[str, Any]) -> bool:
        # obstore does not send a conditional PUT again after a lost answer; botocore
        # does (and may then find the condition failed by the first try): asked as boto3
        # asks, obstore's try counted among the answer's resends (the backend's HEAD then
        # tells whether that first try was applied).
        return (
            operation == "put_object"
            and not _CONDITIONAL.isdisjoint(params)
            and isinstance(failure, (self._bx.ConnectionError, self._bx.HTTPClientError))
        )

    def _through_boto3(self, operation: str, params: dict[str, Any], *, resent: bool = False) -> Any:
        try:
            answer = getattr(self._client, operation)(Bucket=self.bucket, **params)
        except self._bx.ClientError as exc:
            if resent:
                count_resends(exc.response, 1)
            raise
        if resent:
            count_resends(answer, 1)
        return answer

    def _load_through_boto3(self, key: str, *, resent: bool) -> Loaded:
        answer = self._through_boto3("get_object", {"Key": key}, resent=resent)
        try:
            data: bytes = answer["Body"].read()
        except (self._bx.IncompleteReadError, self._bx.ReadTimeoutError) as exc:
            raise self._bx.ResponseStreamingError(error=exc) from exc  # a cut body: asked again
        return data, answer.get("ContentType"), answer.get("ContentEncoding")

    def _send(self, operation: str, params: dict[str, Any]) -> Any:
        if operation == "get_object":
            return self._get(params)
        store, key = self._s3_store(), params["Key"]
        if operation == "head_object":
            result = self._obstore.get(store, key, options=_HEAD)
            return _answer(result.meta, result.attributes)
        body, attributes, mode = _put_arguments(params)
        done = self._obstore.put(store, key, body, attributes=attributes, mode=mode, use_multipart=False)
        return {"ETag": done["e_tag"]}

    async def _send_async(self, operation: str, params: dict[str, Any]) -> Any:
        store, key = self._s3_store(), params["Key"]
        if operation == "get_object":
            options = {"if_none_match": params["IfNoneMatch"]} if "IfNoneMatch" in params else None
            result = await self._obstore.get_async(store, key, options=options)
            data = bytes(await result.bytes_async())
            return {"Body": _Body(data), **_answer(result.meta, result.attributes)}
        if operation == "head_object":
            result = await self._obstore.get_async(store, key, options=_HEAD)
            return _answer(result.meta, result.attributes)
        body, attributes, mode = _put_arguments(params)
        put = self._obstore.put_async
        done = await put(store, key, body, attributes=attributes, mode=mode, use_multipart=False)
        return {"ETag": done["e_tag"]}

    @staticmethod
    def sends(operation: str, params: dict[str, Any]) -> bool:
        """Whether this engine sends the request itself (else boto3 does)."""
        if operation not in OBJECT_OPERATIONS or _CONTROL.search(params["Key"]):
            return False  # obstore refuses a control character in a path: a lock's ("\x7flocks/...")
        # A PUT with an ACL, or of a file body (a stream, rewound for retries): boto3's. So is
        # one whose metadata has a name obstore takes for an attribute ("Content-Type": the
        # object's type, not x-amz-meta-content-type).
        return operation != "put_object" or (
            "ACL" not in params
            and isinstance(params.get("Body"), (bytes, bytearray))
            and not any(name.lower() in _ATTRIBUTE_NAMES for name in params.get("Metadata", ()))
        )

    @staticmethod
    def reads(key: str) -> bool:
        """Whether this engine sends a GET of ``key`` itself (:meth:`load`)."""
        return _CONTROL.search(key) is None

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        options = {"if_none_match": params["IfNoneMatch"]} if "IfNoneMatch" in params else None
        result = self._obstore.get(self._s3_store(), params["Key"], options=options)
        data = bytes(result.bytes())
        return {"Body": _Body(data), **_answer(result.meta, result.attributes)}


def _put_arguments(params: dict[str, Any]) -> tuple[Any, dict[str, str], Any]:
    """A PUT's body, obstore attributes and mode, from boto3's parameters."""
    attributes = {name: params[boto] for boto, name in _PUT_ATTRIBUTES.items() if params.get(boto)}
    attributes.update(params.get("Metadata") or {})
    mode: Any = "overwrite"
    if params.get("IfNoneMatch") == "*":
        mode = "create"
    elif "IfMatch" in params:
        mode = {"e_tag": params["IfMatch"]}
    return params["Body"], attributes, mode


def _answer(meta: Any, attributes: dict[str, str]) -> dict[str, Any]:
    """The fields of a GET or HEAD answer, named as boto3 names them."""
    answer: dict[str, Any] = {
        "ContentLength": meta["size"],
        "ETag": meta["e_tag"],
        "LastModified": meta["last_modified"],
        "Metadata": {name: value for name, value in attributes.items() if name not in _ATTRIBUTES},
    }
    for name, boto in _ATTRIBUTES.items():
        if name in attributes:
            answer[boto] = attributes[name]
    return answer
