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
(its chain, refreshed when they expire).
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, Final

from .errors import count_resends

__all__ = ["ENGINES", "OBJECT_OPERATIONS", "OBSTORE_EXTRA", "ObstoreEngine", "import_obstore"]

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
_CODE = re.compile(r"<Code>([^<]{1,64})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{0,300})</Message>")
_STATUS = re.compile(r"\b(?:status(?: code)?:?|Received)\s+(\d{3})\b", re.IGNORECASE)
_REDIRECT = re.compile(r"status(?: code)?:?\s+30[1278]\b", re.IGNORECASE)
#: "Error performing GET http://host/bucket/key in 3ms": the request that failed
_REQUEST = re.compile(r"Error performing ([A-Z]+) (\S+)")
#: a status error's text goes on with the answer's body: where S3 echoes a signed request
_BODY = re.compile(r"(status code: \d{3}[^:]*):.*")
#: what obstore's text says when the connection closed before an answer came
_CLOSED: Final = (
    "ConnectionReset",
    "ConnectionAborted",
    "IncompleteMessage",
    "SendRequest",
    "BrokenPipe",
    "closed",
)
#: reqwest's error while connecting (not "kind: ConnectionReset", a connection that was made)
_CONNECTING = re.compile(r"kind: Connect\b|ConnectError")
#: an answer's body that was not UTF-8, as obstore shows it: "FromUtf8Error { bytes: [60, 63, ..."
_UNDECODED = re.compile(r"FromUtf8Error \{\s*bytes: \[([\d,\s]*)\]")
#: obstore's text of a request it sent again: "... in 124ms, after 1 retries, max_retries: 4"
_RETRIES = re.compile(r"\bafter (\d+) retries\b")
#: the parameters of a conditional PUT
_CONDITIONAL: Final = frozenset({"IfMatch", "IfNoneMatch"})
#: obstore could not read an answer's headers (boto3 can)
_UNREADABLE = re.compile(
    r"Unable to extract metadata from headers|contained non[ -](?:UTF-8|unicode)|"
    r"Invalid (?:last modified|content length)|Failed to parse value for"
)
#: "no limit" for obstore's whole-request timeout and retry deadline (a year)
_UNBOUNDED: Final = timedelta(days=365)
#: how long a refreshable credential is used before boto3 is asked again
_CREDENTIAL_LIFE: Final = timedelta(minutes=5)


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

    def __init__(self, client: Any, bucket: str, *, retries: int, timeout: float, pool: int) -> None:
        self._obstore = import_obstore()
        from botocore import exceptions as bx

        self._bx = bx
        self._client = client
        self.bucket = bucket
        self._settings = {"retries": retries, "timeout": timeout, "pool": pool}
        self._store: Any = None
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    # -- the store, made at the first request ------------------------------------------

    def _s3_store(self) -> Any:
        store = self._store
        if store is None:
            with self._lock:
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
        """Let go of the obstore store and its connections (a call in flight finishes)."""
        with self._lock:
            self._store = None

    def _credentials(self) -> Any:  # obstore's S3Credential
        """The boto3 client's credentials now (obstore asks again when they expire)."""
        found = self._client._get_credentials()  # botocore's resolved chain
        if found is None:
            raise self._bx.NoCredentialsError()
        frozen = found.get_frozen_credentials()
        # What an error's text is cleaned of (S3 echoes a signed request's token).
        self._secrets = tuple(secret for secret in (frozen.secret_key, frozen.token) if secret)
        refreshes = hasattr(found, "refresh_needed")
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(timezone.utc) + _CREDENTIAL_LIFE if refreshes else None,
        }

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
            failure = self._as_botocore(exc, operation)
        if failure is None or (
            operation == "put_object"
            and not _CONDITIONAL.isdisjoint(params)
            and isinstance(failure, (self._bx.ConnectionError, self._bx.HTTPClientError))
        ):
            # obstore does not send a conditional PUT again after a lost answer; botocore
            # does (and may then find the condition failed by the first try): asked as boto3
            # asks, obstore's try counted among the answer's resends (the backend's HEAD then
            # tells whether that first try was applied).
            return self._through_boto3(operation, params, resent=True)
        raise failure  # outside the except block: no __context__ either

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

    def _send(self, operation: str, params: dict[str, Any]) -> Any:
        if operation == "get_object":
            return self._get(params)
        if operation == "head_object":
            return self._head(params)
        return self._put(params)

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

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        options = {"if_none_match": params["IfNoneMatch"]} if "IfNoneMatch" in params else None
        result = self._obstore.get(self._s3_store(), params["Key"], options=options)
        data = bytes(result.bytes())
        return {"Body": _Body(data), **_answer(result.meta, result.attributes)}

    def _head(self, params: dict[str, Any]) -> dict[str, Any]:
        result = self._obstore.get(self._s3_store(), params["Key"], options={"head": True})
        return _answer(result.meta, result.attributes)

    def _put(self, params: dict[str, Any]) -> dict[str, Any]:
        attributes = {name: params[boto] for boto, name in _PUT_ATTRIBUTES.items() if params.get(boto)}
        attributes.update(params.get("Metadata") or {})
        mode: Any = "overwrite"
        if params.get("IfNoneMatch") == "*":
            mode = "create"
        elif "IfMatch" in params:
            mode = {"e_tag": params["IfMatch"]}
        store, key, body = self._s3_store(), params["Key"], params["Body"]
        done = self._obstore.put(store, key, body, attributes=attributes, mode=mode, use_multipart=False)
        return {"ETag": done["e_tag"]}

    # -- errors ------------------------------------------------------------------------------

    def _as_botocore(self, exc: BaseException, operation: str) -> BaseException | None:
        """obstore's error as botocore raises it (a ClientError with S3's code, or the
        connection error botocore names the same failure with); None for a redirect.

        Built from obstore's text, which is never kept: only S3's code and
        message, the method and URL, and what failed.
        """
        errors = self._obstore.exceptions
        text = _readable(str(exc))
        if "Unable to locate credentials" in text:  # our credential provider's NoCredentialsError
            missing: BaseException = self._bx.NoCredentialsError()
            return missing
        if isinstance(exc, (errors.NotFoundError, FileNotFoundError)):
            code, status = _code(text) or "404", 404
        elif isinstance(exc, errors.NotModifiedError):
            code, status = "304", 304
        elif isinstance(exc, (errors.PreconditionError, errors.AlreadyExistsError)):
            code, status = "PreconditionFailed", 412
        elif isinstance(exc, (errors.PermissionDeniedError, PermissionError)):
            code, status = _code(text) or "403", 403
        elif isinstance(exc, errors.UnauthenticatedError):
            code, status = _code(text) or "InvalidAccessKeyId", 403
        elif "BareRedirect" in text or _REDIRECT.search(text) or _UNREADABLE.search(text):
            return None
        elif (found := _code(text)) is not None or _STATUS.search(text):
            status = int(match.group(1)) if (match := _STATUS.search(text)) else 0
            code = found or str(status)
        else:
            return self._transport_error(text)
        # A HEAD's error has no body: boto3 then gives the status and its phrase ("403: Forbidden").
        message = match.group(1) if (match := _MESSAGE.search(text)) else _phrase(status)
        # "after 2 retries": obstore sent it again (botocore's RetryAttempts)
        retried = int(match.group(1)) if (match := _RETRIES.search(text.split("\n", 1)[0])) else 0
        response = {
            "Error": {"Code": code, "Message": self._scrubbed(message)},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retried},
        }
        failed: BaseException = self._bx.ClientError(response, _OPERATION_NAMES[operation])
        return failed

    def _transport_error(self, text: str) -> BaseException:
        """A failure without an S3 answer, as botocore names it: a timeout, a closed
        connection, a cut body, a refused connection."""
        bx = self._bx
        found = _REQUEST.search(text)
        url = self._scrubbed(found.group(2)) if found else self._client.meta.endpoint_url
        kind: Any = bx.HTTPClientError
        if "TimedOut" in text or "kind: Timeout" in text:
            kind = bx.ConnectTimeoutError if _CONNECTING.search(text) else bx.ReadTimeoutError
        elif "kind: Body" in text or "kind: Decode" in text:
            kind = bx.ResponseStreamingError
        elif "ConnectionRefused" in text or _CONNECTING.search(text) or "dns error" in text:
            kind = bx.EndpointConnectionError
        elif any(sign in text for sign in _CLOSED):
            kind = bx.ConnectionClosedError
        failed: BaseException = kind(endpoint_url=url, error=self._summary(text))
        return failed

    def _summary(self, text: str) -> str:
        """obstore's first line, without an answer's body, the debug dump or a credential."""
        line = text.split("\n", 1)[0]
        line = _BODY.sub(r"\1", line)
        return self._scrubbed(line[:300])

    def _scrubbed(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


_OPERATION_NAMES: Final = {
    "get_object": "GetObject",
    "head_object": "HeadObject",
    "put_object": "PutObject",
}


def _readable(text: str) -> str:
    """obstore's text, with an answer's body it could not decode as UTF-8 (which it shows as a
    list of byte values) appended decoded, so that S3's code in it is found."""
    found = _UNDECODED.search(text)
    if found is None:
        return text
    values = [int(value) for value in found.group(1).split(",") if value.strip()]
    body = bytes(value for value in values if value < 256).decode("utf-8", errors="replace")
    return f"{text}\n{body}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _code(text: str) -> str | None:
    match = _CODE.search(text)
    return match.group(1) if match else None


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
