"""S3Connection: the bucket, the client and the requests, under every S3 backend.

One boto3 client per backend, safe across threads; every request goes
through :meth:`S3Connection._call` (retries of cut answers, rewound bodies,
the bucket made on demand), and every native error through one table
(:func:`.errors.translate`).
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, TypeVar

from ..base import BaseBackend
from ..codecs.layers import CodecOption, Layered
from ..errors import BackendError, StoreError
from ..events import tell_retry
from ..keys import MAX_KEY_BYTES, check_key, is_valid_key
from .arguments import check_etag, check_put_options
from .client import client_config, import_boto3, make_client, safe_endpoint
from .engine import ENGINES, ObstoreEngine
from .errors import ABSENT, BUCKET_RULE, count_resends, error_code, forget_requests, translate

__all__ = [
    "ADDRESSING_STYLES",
    "CONFLICT_RETRIES",
    "COPY_LIMIT",
    "DEFAULT_GZIP",
    "DEFAULT_WORKERS",
    "DIRECTORY",
    "FOLDER_SUFFIX",
    "MAX_EXPIRES",
    "MD5_META",
    "PAGE",
    "SIZE_META",
    "TOKEN_META",
    "S3Connection",
    "batches",
    "is_marker",
]


V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")

DIRECTORY = "application/x-directory"
FOLDER_SUFFIX = "_$folder$"
PAGE = 1000  # S3's most keys per LIST page and per DeleteObjects
CONFLICT_RETRIES = 5  # 409 ConditionalRequestConflict: a racing conditional write; ask again
COPY_LIMIT = 5 * 1024**3  # the largest source of one CopyObject
#: user metadata of a gzipped object: the size of the value itself (S3 tells the compressed one)
SIZE_META = "backends-size"
#: ... and the MD5 of the value itself (S3's ETag is the gzipped bytes')
MD5_META = "backends-md5"
#: ... and of a conditional PUT, a random token of that one call: when a try sent again
#: finds the condition failed, a HEAD tells whether the object is the first try's (ours)
TOKEN_META = "backends-token"
#: the backend's own metadata and the longest value it writes under each (S3's 2 KB of
#: user metadata hold them and the caller's ``metadata=``)
OWN_METADATA = {SIZE_META: 20, MD5_META: 32, TOKEN_META: 32}

#: key extensions whose raw values are stored gzipped (Content-Encoding: gzip)
DEFAULT_GZIP = frozenset(
    {".js", ".mjs", ".css", ".html", ".htm", ".svg", ".json", ".xml", ".txt", ".csv", ".map"}
)


ADDRESSING_STYLES = (None, "auto", "path", "virtual")
#: threads of a bulk call when max_workers is not given: boto3's requests hold the
#: GIL for their client CPU (more threads add little); obstore's do not
DEFAULT_WORKERS = {"boto3": 16, "obstore": 64}
#: the longest life of a presigned URL: SigV4 signs at most 7 days
MAX_EXPIRES = 7 * 86_400


# Every name S3 ever took (legacy us-east-1 buckets: up to 255, uppercase and
# "_"; botocore's own check): a name outside it cannot be a bucket anywhere.
_BUCKET_CHARS = re.compile(r"[a-zA-Z0-9.\-_]{3,255}")


#: the conditional headers a caller's ETag goes into: the argument and the call that take it
_CONDITIONS = (("IfMatch", "if_match", "dump"), ("IfNoneMatch", "etag", "load_if_changed"))


def _check_options(*, retries: object, max_workers: object, timeout: object, style: object) -> None:
    """Raise ValueError naming an option botocore would refuse, and what it takes."""
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise ValueError(f"retries is a whole number from 0 to 100, not {retries!r}")
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not 1 <= max_workers <= 1000:
        raise ValueError(f"max_workers is a whole number from 1 to 1000, not {max_workers!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise ValueError(f"timeout is seconds above 0 and at most 3600, not {timeout!r}")
    if style not in ADDRESSING_STYLES:
        raise ValueError(f"addressing_style is 'path', 'virtual', 'auto' or None, not {style!r}")


def _own_client(config: Any, *, region: str | None, profile: str | None, **options: Any) -> Any:
    """The backend's own boto3 client; ValueError naming a region or profile botocore refuses."""
    from botocore import exceptions as bx

    try:
        return make_client(region=region, profile=profile, config=config, **options)
    except bx.InvalidRegionError:
        where = "region" if region else "the region in the environment or profile"
        given = f", not {region!r}" if region else ""
        raise ValueError(f"{where} is a name such as 'eu-west-3'{given}") from None
    except bx.ProfileNotFound as exc:
        where = f"profile={profile!r}" if profile else "AWS_PROFILE in the environment"
        raise ValueError(f"{where} names no profile in ~/.aws/config or ~/.aws/credentials ({exc})") from None


def is_marker(response: dict[str, Any]) -> bool:
    """Whether a HEAD or GET answer is another tool's folder marker: an empty application/x-directory."""
    return response.get("ContentType") == DIRECTORY and not response.get("ContentLength")


def _retry_teller(backend: Callable[[], Any]) -> Callable[..., None]:
    """A botocore ``request-created`` handler: a request made again is a ``retried`` event of ``backend``."""

    def tell(request: Any, operation_name: str = "", **_: Any) -> None:
        attempt = getattr(request, "context", {}).get("retries", {}).get("attempt", 1)
        if attempt > 1:
            tell_retry(backend(), attempt, operation_name)

    return tell


def _normal_prefix(prefix: str) -> str:
    if not prefix:
        return ""
    check_key(prefix.rstrip("/"), operation="prefix")
    return prefix.rstrip("/") + "/"


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class S3Connection(BaseBackend[V, bytes]):
    """The bucket, client and request plumbing of :class:`~backends.s3.S3Backend` (see there)."""

    def __init__(
        self,
        bucket: str,
        region: str | None = None,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        create_bucket: bool = False,
        acl: str | None = None,
        storage_class: str | None = None,
        cache_control: str | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        gzip_extensions: Iterable[str] | None = None,
        retries: int = 4,
        max_workers: int | None = None,
        timeout: float = 60.0,
        addressing_style: str | None = None,
        engine: str = "boto3",
        codec: CodecOption[V] = None,
    ) -> None:
        self._check_codec(codec)
        if engine not in ENGINES:
            raise ValueError(f"engine is one of {', '.join(map(repr, ENGINES))}, not {engine!r}")
        if max_workers is None:
            max_workers = DEFAULT_WORKERS[engine]
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("bucket is a non-empty str")
        if endpoint_url and safe_endpoint(endpoint_url) != endpoint_url.rstrip("?#"):
            raise ValueError(
                "endpoint_url must not carry credentials or a query: pass access_key/secret_key, "
                "or use the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile"
            )
        if not _BUCKET_CHARS.fullmatch(bucket):
            raise ValueError(f"bucket name {bucket[:70]!r} is not valid: {BUCKET_RULE}")
        _check_options(retries=retries, max_workers=max_workers, timeout=timeout, style=addressing_style)
        check_put_options(
            acl=acl,
            storage_class=storage_class,
            cache_control=cache_control,
            content_type=content_type,
            metadata=metadata,
            reserved=OWN_METADATA,
        )
        import_boto3()
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
        self.prefix = _normal_prefix(prefix)
        self._max_key_bytes = MAX_KEY_BYTES - len(self.prefix.encode("utf-8"))
        self.max_workers = max_workers
        self._owns_client = client is None
        if client is None:
            keys = {"access_key": access_key, "secret_key": secret_key, "session_token": session_token}
            config = client_config(
                retries=retries, pool=max_workers, addressing_style=addressing_style, timeout=timeout
            )
            client = _own_client(config, region=region, endpoint_url=endpoint_url, profile=profile, **keys)
        self.client = client
        #: who sends each object's GET, HEAD, PUT and DELETE ("boto3" or "obstore")
        self.engine = engine
        self._engine = (
            ObstoreEngine(client, bucket, retries=retries, timeout=timeout, pool=max_workers)
            if engine == "obstore"
            else None
        )
        # Each retry botocore makes is an event ("request retried") of this backend.
        client.meta.events.register(
            "request-created.s3", _retry_teller(weakref.ref(self)), unique_id=f"backends-retries-{id(self)}"
        )
        self.region: str | None = client.meta.region_name
        self._endpoint: str = client.meta.endpoint_url
        self._retries = retries
        self._create_missing = create_bucket
        self._content_type = content_type
        self._gzip = frozenset(
            ext.lower() for ext in (self.default_gzip if gzip_extensions is None else gzip_extensions)
        )
        self._put_args: dict[str, Any] = {
            name: value
            for name, value in (
                ("ACL", acl),
                ("StorageClass", storage_class),
                ("CacheControl", cache_control),
                ("Metadata", metadata),
            )
            if value
        }
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()
        self._bucket_lock = threading.Lock()
        self._buckets_made = 0

    #: extensions gzipped when ``gzip_extensions`` is not given
    default_gzip: frozenset[str] = frozenset()

    # -- plumbing -----------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        return self.prefix + key

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
        for header, argument, call in (
            ("IfMatch", "if_match", "dump"),
            ("IfNoneMatch", "etag", "load_if_changed"),
        ):
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

    def _with_bucket(self, action: Callable[[], R]) -> R:
        """Run ``action``; with ``create_bucket``, create a missing bucket and run it again."""
        self._check_open()
        generation = self._buckets_made
        try:
            return action()
        except self._client_error as exc:
            if not self._bucket_missing(exc):
                raise
        self._make_bucket_since(generation)
        return action()

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

    def _guess_type(self, key: str) -> str:
        if self._content_type:
            return self._content_type
        if self.codec.content_type:
            return self.codec.content_type
        return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"

    def _gzipped(self, key: str) -> bool:
        # Through layers the body is a frame of ours: compressed already (never gzipped twice),
        # or ciphertext, which gzip cannot shrink.
        if isinstance(self.codec, Layered):
            return False
        return bool(self._gzip) and os.path.splitext(key)[1].lower() in self._gzip

    def _head(self, key: str, *, every_header: bool = False) -> dict[str, Any] | None:
        """One HEAD; None for an absent key or a folder marker.

        ``every_header``: through boto3 on either engine, for what obstore
        does not tell (the storage class): still one HEAD.
        """
        params = {"Key": self._object_key(key)}
        try:
            if every_header and self._engine is not None:
                send = self._sender("head_object", params)
                response: dict[str, Any] = self._again_if_cut(lambda: self._with_bucket(send))
            else:
                response = self._call("head_object", **params)
        except self._client_error as exc:
            if error_code(exc) in ABSENT:
                return None
            raise
        return None if is_marker(response) else response

    # -- listing pages ----------------------------------------------------------------

    def _pages(self, prefix: str, **params: Any) -> Iterator[dict[str, Any]]:
        """LIST pages under ``self.prefix + prefix``, one request each, lazily."""
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page: dict[str, Any] = self._call(
                "list_objects_v2", Prefix=self.prefix + prefix, MaxKeys=PAGE, **params, **extra
            )
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def _name_of(self, entry: dict[str, Any]) -> str | None:
        """The key of a listed object, or None for a folder marker or a foreign name."""
        name: str = entry["Key"][len(self.prefix) :]
        if name.endswith(FOLDER_SUFFIX) or not is_valid_key(name):
            return None  # "folder/" and "folder_$folder$" markers, and names no key can have
        if entry.get("Size") == 0 and self._head(name) is None:
            return None  # a zero-byte object of type application/x-directory
        return name  # a value (an empty JSON object is one too: corrupt, as on disk)

    # -- errors, identity, lifetime ------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        forget_requests(exc)  # the error raised from it keeps it as __cause__
        return translate(exc, self.bucket, self.region, self.retries)

    def _describe(self) -> str:
        parts = [f"bucket={self.bucket!r}"]
        if self.prefix:
            parts.append(f"prefix={self.prefix!r}")
        if not self._endpoint.split("/")[2].endswith("amazonaws.com"):
            parts.append(f"endpoint_url={safe_endpoint(self._endpoint)!r}")
        if self.engine != "boto3":
            parts.append(f"engine={self.engine!r}")
        return ", ".join(parts)

    def _identity(self) -> tuple[object, ...]:
        return (safe_endpoint(self._endpoint), self.bucket, self.prefix, self.codec.identity())

    def __reduce__(self) -> Any:
        # A boto3 client (and its credentials) cannot cross processes.
        raise TypeError(f"{self!r} cannot be pickled: S3 backends hold a client; build one per process")

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
        if pool is not None:
            pool.shutdown(wait=True)
        if self._engine is not None:
            self._engine.close()
        if self._owns_client:
            self.client.close()
