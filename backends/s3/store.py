"""S3Backend: one bucket (or a prefix of it) through one boto3 client.

Request budget (README.rst, "S3 request costs"): ``load`` = 1 GET (a missing
key too), ``in`` = 1 HEAD, ``dump`` = 1 PUT, ``delete`` = HEAD + DELETE,
listing = one LIST page per 1000 keys, streamed; ``clear``/``delete_many`` =
the LIST pages plus one DeleteObjects per 1000 keys.
"""

from __future__ import annotations

import gzip
import mimetypes
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import IO, Any, TypeVar

from ..base import MISSING, UNCHANGED, BaseBackend, Missing, Unchanged
from ..errors import BackendError, CorruptValueError, StoreError
from ..info import Stat
from ..keys import MAX_KEY_BYTES, check_key, is_valid_key
from ..locks import Lock, lock_name
from .client import client_config, import_boto3, make_client, object_url, safe_endpoint
from .errors import ABSENT, CONFLICT, NOT_MODIFIED, PRECONDITION_FAILED, error_code, translate
from .locks import LOCK_AREA, S3Lock

__all__ = ["DEFAULT_GZIP", "S3Backend"]

V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")

DIRECTORY = "application/x-directory"
FOLDER_SUFFIX = "_$folder$"
PAGE = 1000  # S3's most keys per LIST page and per DeleteObjects
CONFLICT_RETRIES = 5  # 409 ConditionalRequestConflict: a racing conditional write; ask again
COPY_LIMIT = 5 * 1024**3  # the largest source of one CopyObject

#: key extensions whose raw values are stored gzipped (Content-Encoding: gzip)
DEFAULT_GZIP = frozenset(
    {".js", ".mjs", ".css", ".html", ".htm", ".svg", ".json", ".xml", ".txt", ".csv", ".map"}
)


ADDRESSING_STYLES = (None, "auto", "path", "virtual")
#: the longest life of a presigned URL: SigV4 signs at most 7 days
MAX_EXPIRES = 7 * 86_400


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


def _is_marker(response: dict[str, Any]) -> bool:
    """Whether a HEAD or GET answer is another tool's folder marker: an empty application/x-directory."""
    return response.get("ContentType") == DIRECTORY and not response.get("ContentLength")


def _normal_prefix(prefix: str) -> str:
    if not prefix:
        return ""
    check_key(prefix.rstrip("/"), operation="prefix")
    return prefix.rstrip("/") + "/"


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class S3Backend(BaseBackend[V, bytes]):
    """A bucket, or one prefix ("folder") of it, on S3 or any S3-compatible store.

    Constructing it sends no request. Credentials come from boto3's chain
    (environment, profile, instance role; ``AWS_ENDPOINT_URL_S3`` honoured)
    unless ``access_key``/``secret_key`` are given; neither ever appears in a
    repr, a message or a log line. One client, safe across threads, with a
    connection pool of ``max_workers``, which also bounds the concurrency of
    ``load_many``/``dump_many``/``items()``.
    """

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
        max_workers: int = 16,
        timeout: float = 60.0,
        addressing_style: str | None = None,
    ) -> None:
        self._check_codec()
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("bucket is a non-empty str")
        if endpoint_url and safe_endpoint(endpoint_url) != endpoint_url.rstrip("?#"):
            raise ValueError(
                "endpoint_url must not carry credentials or a query: pass access_key/secret_key, "
                "or use the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile"
            )
        _check_options(retries=retries, max_workers=max_workers, timeout=timeout, style=addressing_style)
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
        self._streaming_error = bx.ResponseStreamingError
        self.bucket = bucket
        self.prefix = _normal_prefix(prefix)
        self._max_key_bytes = MAX_KEY_BYTES - len(self.prefix.encode("utf-8"))
        self.max_workers = max_workers
        self._owns_client = client is None
        if client is None:
            config = client_config(
                retries=retries, pool=max_workers, addressing_style=addressing_style, timeout=timeout
            )
            try:
                client = make_client(
                    region=region,
                    endpoint_url=endpoint_url,
                    access_key=access_key,
                    secret_key=secret_key,
                    session_token=session_token,
                    profile=profile,
                    config=config,
                )
            except bx.ProfileNotFound as exc:
                where = f"profile={profile!r}" if profile else "AWS_PROFILE in the environment"
                raise ValueError(
                    f"{where} names no profile in ~/.aws/config or ~/.aws/credentials ({exc})"
                ) from None
        self.client = client
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
        retries, but not for ours).
        """
        method = getattr(self.client, operation)
        body: Any = params.get("Body")
        start = None if body is None or isinstance(body, (bytes, bytearray)) else body.tell()

        def send() -> Any:
            if start is not None:
                body.seek(start)
            return method(Bucket=self.bucket, **params)

        return self._again_if_cut(lambda: self._with_bucket(send))

    def _again_if_cut(self, action: Callable[[], R]) -> R:
        """Run ``action`` again when an answer botocore reads itself was cut off; at most ``retries`` times.

        Only for an action that can run again from the start (a request, a
        path, a file rewound first); then ResponseStreamingError, which is
        StoreUnavailableError.
        """
        for attempt in range(self._retries + 1):
            try:
                return action()
            except self._cut_response as exc:
                if attempt == self._retries:
                    raise self._streaming_error(error=exc) from exc
        raise AssertionError("unreachable")

    def _with_bucket(self, action: Callable[[], R]) -> R:
        """Run ``action``; with ``create_bucket``, create a missing bucket and run it again."""
        self._check_open()
        generation = self._buckets_made
        try:
            return action()
        except self._client_error as exc:
            if not (self._create_missing and error_code(exc) == "NoSuchBucket"):
                raise
        # The threads of one dump_many all meet the missing bucket: the first
        # creates it, the others see it was made since they tried.
        with self._bucket_lock:
            if self._buckets_made == generation:
                self._make_bucket()
                self._buckets_made += 1
        return action()

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
        self._check_open()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="backends-s3")
            pool = self._pool
        results: list[R] = []
        for batch in _batches(items, PAGE):
            results.extend(pool.map(function, batch))
        return results

    def _guess_type(self, key: str) -> str:
        if self._content_type:
            return self._content_type
        if self.codec.content_type:
            return self.codec.content_type
        return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"

    def _gzipped(self, key: str) -> bool:
        return bool(self._gzip) and os.path.splitext(key)[1].lower() in self._gzip

    # -- reading ------------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        loaded = self._get(key, {})
        return loaded if loaded is MISSING else loaded[0]

    def _load_tagged(self, key: str, tag: str | None) -> tuple[bytes, str | None] | Missing | Unchanged:
        try:
            return self._get(key, {"IfNoneMatch": tag} if tag else {})
        except self._client_error as exc:
            if error_code(exc) in NOT_MODIFIED:
                return UNCHANGED  # Not Modified: no body was sent
            raise

    def _get(self, key: str, params: dict[str, str]) -> tuple[bytes, str | None] | Missing:
        """One GET (again if the body is cut off); the value and its ETag, or MISSING."""
        for attempt in range(self._retries + 1):
            try:
                response = self._call("get_object", Key=self._object_key(key), **params)
            except self._client_error as exc:
                if error_code(exc) in ABSENT:
                    return MISSING
                raise
            if _is_marker(response):
                response["Body"].close()
                return MISSING
            try:
                body: bytes = response["Body"].read()
            except self._cut_body:
                if attempt == self._retries:
                    raise
                continue
            return self._decoded(key, body, response.get("ContentEncoding")), response.get("ETag")
        raise AssertionError("unreachable")

    def _decoded(self, key: str, body: bytes, encoding: str | None) -> bytes:
        if encoding != "gzip":
            return body
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptValueError(
                f"stored gzip data is broken: {exc}", backend=repr(self), operation="load", key=key
            ) from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self._call("head_object", Key=self._object_key(key))
        except self._client_error as exc:
            if error_code(exc) in ABSENT:
                return None
            raise
        return None if _is_marker(response) else response

    def _contains(self, key: str) -> bool:
        return self._head(key) is not None

    # -- writing ------------------------------------------------------------------

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._put(key, data, if_absent=if_absent)

    def _put(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> bool:
        params: dict[str, Any] = {**self._put_args, "ContentType": self._guess_type(key)}
        if self._gzipped(key):
            data = gzip.compress(data, mtime=0)
            params["ContentEncoding"] = "gzip"
        if if_absent:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        return self._put_object(key, data, params)

    def _put_object(self, key: str, body: bytes | IO[bytes], params: dict[str, Any]) -> bool:
        """One PUT; False when its condition (If-None-Match / If-Match) fails."""
        start = body.tell() if not isinstance(body, bytes) else 0
        for attempt in range(CONFLICT_RETRIES):
            if not isinstance(body, bytes):
                body.seek(start)  # a file body is read again when the PUT is asked again
            try:
                self._call("put_object", Key=self._object_key(key), Body=body, **params)
                return True
            except self._client_error as exc:
                code = error_code(exc)
                if code in PRECONDITION_FAILED or ("IfMatch" in params and code in ABSENT):
                    return False
                if code not in CONFLICT or attempt == CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def dump(self, key: str, value: V, *, if_absent: bool = False, if_match: str | None = None) -> bool:
        """Store ``value`` under ``key`` with one PUT and return True.

        ``if_absent=True`` sends ``If-None-Match: *`` and ``if_match=etag``
        sends ``If-Match``: a failed precondition (or, for ``if_match``, an
        absent key) returns False and changes nothing.
        """
        if if_absent and if_match is not None:
            raise TypeError("if_absent and if_match are exclusive")
        return self._write_value(
            key, value, "dump", lambda key, data: self._put(key, data, if_absent=if_absent, if_match=if_match)
        )

    # -- deleting -----------------------------------------------------------------

    def _delete(self, key: str) -> bool:
        # DeleteObject answers 204 whether or not the key existed: a HEAD
        # first tells which.
        if self._head(key) is None:
            return False
        self._call("delete_object", Key=self._object_key(key))
        return True

    def _delete_many(self, keys: list[str]) -> int:
        if not keys:
            return 0
        # Only the keys found: a folder marker at a key's name is no key, and stays.
        present = self._present(keys)
        self._delete_objects(sorted(present))
        return len(present)

    def _present(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` exist, from the LIST pages between the smallest and largest."""
        wanted = set(keys)
        last = max(keys)  # str order is code point order, which is S3's UTF-8 byte order
        # A proper prefix of the smallest key sorts just before it: start there.
        start = {"StartAfter": self.prefix + min(keys)[:-1]} if len(min(keys)) > 1 else {}
        found: set[str] = set()
        for page in self._pages(os.path.commonprefix(keys), **start):  # noqa: RUF071 - a str prefix is meant
            for entry in page.get("Contents", ()):
                name = entry["Key"][len(self.prefix) :]
                if name > last:
                    return found
                if name in wanted and self._name_of(entry) is not None:
                    found.add(name)
        return found

    def _delete_objects(self, keys: list[str]) -> None:
        for batch in _batches(keys, PAGE):
            objects = [{"Key": self._object_key(key)} for key in batch]
            response = self._call("delete_objects", Delete={"Objects": objects, "Quiet": True})
            if response.get("Errors"):
                raise self._batch_error(response["Errors"], len(batch))

    def _batch_error(self, errors: list[dict[str, str]], size: int) -> BackendError:
        from botocore.exceptions import ClientError

        first = errors[0]
        shown = ", ".join(f"{e.get('Key', '')[len(self.prefix) :]!r} ({e.get('Code')})" for e in errors[:5])
        cause = ClientError(
            {"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")}}, "DeleteObjects"
        )
        cls, reason = self._translate(cause)
        error = cls(
            f"{len(errors)} of {size} keys not deleted: {shown}; {reason}",
            backend=repr(self),
            operation="delete_many",
        )
        error.__cause__ = cause
        return error

    def _clear(self) -> None:
        # Each LIST page is deleted as it comes: continuation tokens are
        # positions, so deleting listed keys does not disturb the listing.
        for page in self._pages(""):
            names = [name for name in map(self._name_of, page.get("Contents", ())) if name is not None]
            self._delete_objects(names)

    # -- listing ------------------------------------------------------------------

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

    def _iter_keys(self) -> Iterator[str]:
        for page in self._pages(""):
            for entry in page.get("Contents", ()):
                name = self._name_of(entry)
                if name is not None:
                    yield name

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        seen: set[str] = set()
        # No Delimiter parameter at all for "": an empty one is not "none" everywhere.
        for page in self._pages(prefix, **({"Delimiter": delimiter} if delimiter else {})):
            for common in page.get("CommonPrefixes", ()):
                folder = common["Prefix"][len(self.prefix) :]
                # A folder no key can be in: lock objects ("\x7flocks/"), "a//".
                if folder not in seen and is_valid_key(folder + "x"):
                    seen.add(folder)
                    yield folder
            for entry in page.get("Contents", ()):
                name: str = entry["Key"][len(self.prefix) :]
                folder = name[: -len(FOLDER_SUFFIX)] + delimiter if name.endswith(FOLDER_SUFFIX) else None
                if folder is None and delimiter and name.endswith(delimiter):
                    folder = name
                if folder is not None and delimiter:
                    if folder != prefix and folder not in seen:
                        seen.add(folder)
                        yield folder
                elif self._name_of(entry) is not None:
                    yield name

    # -- bulk ---------------------------------------------------------------------

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        loaded = self._map(self._load, keys)
        return {key: data for key, data in zip(keys, loaded, strict=True) if data is not MISSING}

    def _dump_many(self, items: list[tuple[str, bytes]]) -> None:
        self._map(lambda item: self._put(*item), items)

    # -- locks ----------------------------------------------------------------------

    def _make_lock(self, key: str, timeout: float | None, ttl: float) -> Lock:
        return S3Lock(
            key,
            timeout,
            ttl,
            self.prefix + LOCK_AREA + lock_name(key),
            call=self._call,
            client_error=self._client_error,
            **self._lock_context(),
        )

    # -- metadata, copies, URLs ------------------------------------------------------

    def stat(self, key: str) -> Stat | None:
        """Size, date, ETag, content type, storage class and metadata (1 HEAD); None if absent."""
        key = self._check(key, "stat")
        head = self._guarded("stat", key, lambda: self._head(key))
        if head is None:
            return None
        return Stat(
            key=key,
            size=int(head.get("ContentLength", 0)),
            last_modified=head.get("LastModified"),
            etag=head.get("ETag"),
            content_type=head.get("ContentType"),
            content_encoding=head.get("ContentEncoding"),
            storage_class=head.get("StorageClass", "STANDARD"),
            cache_control=head.get("CacheControl"),
            metadata=dict(head.get("Metadata", {})),
        )

    def stat_many(self, prefix: str = "") -> Iterator[Stat]:
        """Stat of every key under ``prefix`` from the LIST pages alone (no content type or metadata)."""
        with self._translating("stat_many", prefix):
            for page in self._pages(prefix):
                for entry in page.get("Contents", ()):
                    name = self._name_of(entry)
                    if name is not None:
                        yield Stat(
                            key=name,
                            size=int(entry.get("Size", 0)),
                            last_modified=entry.get("LastModified"),
                            etag=entry.get("ETag"),
                            storage_class=entry.get("StorageClass", "STANDARD"),
                        )

    def copy(self, source: str, target: str) -> bool:
        """Copy a value on the server (1 CopyObject); False if ``source`` is absent.

        A copy onto itself changes nothing (1 HEAD, to say whether it exists).
        """
        source, target = self._check(source, "copy"), self._check(target, "copy")
        return self._guarded("copy", source, lambda: self._copy(source, target))

    def _copy(self, source: str, target: str) -> bool:
        if source == target:
            return self._head(source) is not None
        copy_source = {"Bucket": self.bucket, "Key": self._object_key(source)}
        extra = {name: self._put_args[name] for name in ("ACL", "StorageClass") if name in self._put_args}
        try:
            self._call("copy_object", Key=self._object_key(target), CopySource=copy_source, **extra)
        except self._client_error as exc:
            code = error_code(exc)
            if code in ABSENT:
                return False
            if code != "InvalidRequest" or not self._too_big_to_copy(source):
                raise
            # Past 5 GB one CopyObject is refused: s3transfer copies in parts.
            self.client.copy(copy_source, self.bucket, self._object_key(target), ExtraArgs=extra or None)
        return True

    def _too_big_to_copy(self, source: str) -> bool:
        """Whether CopyObject refused ``source`` for its size (over 5 GiB), not for another reason."""
        head = self._head(source)
        return head is not None and int(head.get("ContentLength", 0)) > COPY_LIMIT

    def move(self, source: str, target: str) -> bool:
        """Copy on the server, then delete ``source`` (2 requests); False if absent.

        A move onto itself changes nothing (1 HEAD).
        """
        source, target = self._check(source, "move"), self._check(target, "move")

        def move() -> bool:
            if not self._copy(source, target):
                return False
            if source == target:
                return True
            self._call("delete_object", Key=self._object_key(source))
            return True

        return self._guarded("move", source, move)

    def url(self, key: str, expires: float | None = None) -> str:
        """The object's URL; with ``expires`` (seconds), a presigned GET URL. No request."""
        key = self._check(key, "url")
        object_key = self._object_key(key)
        if expires is not None:
            if (
                isinstance(expires, bool)
                or not isinstance(expires, (int, float))
                or not 1 <= expires <= MAX_EXPIRES
            ):
                raise ValueError(
                    f"expires is seconds from 1 to {MAX_EXPIRES} (7 days, SigV4), not {expires!r}"
                )
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=int(expires)
                )
            )
        style = (self.client.meta.config.s3 or {}).get("addressing_style")
        aws = self._endpoint.split("/")[2].endswith("amazonaws.com")
        path_style = style == "path" or (style != "virtual" and not aws)
        return object_url(self._endpoint, self.region or "us-east-1", self.bucket, object_key, path_style)

    def make_public(self, key: str) -> bool:
        """Set the canned ACL ``public-read`` (1 request); False if absent.

        Raises StoreError on a bucket with ACLs disabled, naming the way out (a bucket policy).
        """
        return self._set_acl(key, "public-read", "make_public")

    def make_private(self, key: str) -> bool:
        """Set the canned ACL ``private`` (1 request); False if absent."""
        return self._set_acl(key, "private", "make_private")

    def _set_acl(self, key: str, acl: str, operation: str) -> bool:
        key = self._check(key, operation)
        try:
            self._call("put_object_acl", Key=self._object_key(key), ACL=acl)
        except self._native_errors as exc:
            if error_code(exc) in ABSENT:
                return False
            self._reraise(exc, operation, key)
        return True

    # -- errors, identity, lifetime ------------------------------------------------

    def _translate(self, exc: BaseException) -> tuple[type[BackendError], str]:
        return translate(exc, self.bucket, self.region)

    def _describe(self) -> str:
        parts = [f"bucket={self.bucket!r}"]
        if self.prefix:
            parts.append(f"prefix={self.prefix!r}")
        if not self._endpoint.split("/")[2].endswith("amazonaws.com"):
            parts.append(f"endpoint_url={safe_endpoint(self._endpoint)!r}")
        return ", ".join(parts)

    def _identity(self) -> tuple[object, ...]:
        return (safe_endpoint(self._endpoint), self.bucket, self.prefix, type(self.codec))

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
        if self._owns_client:
            self.client.close()
