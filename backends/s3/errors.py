"""The one table that maps botocore's errors to the tree of backends.errors.

Most specific first: an S3 error code, then the HTTP status, then the class
of a botocore exception. A reason never holds a credential: it is built from
the error code, S3's own message and the bucket, never from a request.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ..errors import (
    BackendError,
    BucketNotFoundError,
    InvalidKeyError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "ABSENT",
    "BUCKET_RULE",
    "CONFLICT",
    "CREATE_HINT",
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "count_resends",
    "error_code",
    "forget_requests",
    "resends",
    "translate",
]

# Codes that steer a call rather than fail it, beside the table they are not in.
#: the key (or lock object) is not there: absent, not an error
ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})
#: a conditional request's condition failed: the write returns False
PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
#: a racing conditional write: asked again
CONFLICT = frozenset({"ConditionalRequestConflict", "409"})
#: a conditional GET found the value unchanged
NOT_MODIFIED = frozenset({"304", "NotModified"})

_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "InvalidSecurity",
    "RequestTimeTooSkewed",
    "403",
}
_UNAVAILABLE = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "500",
    "502",
    "503",
    "504",
}
_WRONG_REGION = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "301",
}


#: the parts of an S3 error answer kept on a ClientError; the others (StringToSign,
#: CanonicalRequest, SignatureProvided...) echo the signed request
_SAFE_ERROR_PARTS: Final = frozenset(
    {"Code", "Message", "Region", "BucketName", "Bucket", "Endpoint", "Key", "Condition"}
    | {"RequestId", "HostId", "Resource", "ArgumentName"}
)

#: how to have the bucket made, said in an error (the command says ?create_bucket=true)
CREATE_HINT: Final = "pass create_bucket=True"
#: the rule for new bucket names, said in one line where a name is refused
BUCKET_RULE: Final = (
    "a bucket name has 3-63 characters: lowercase letters, digits, dots and hyphens, "
    "starting and ending with a letter or digit"
)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ClientError ("NoSuchKey", "404", ...), or ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


#: what a message must not carry to a terminal or a log line as it is
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _one_line(text: str) -> str:
    """S3's message (any server's text) on one line, control characters escaped: ``\\x1b``."""
    return _UNPRINTABLE.sub(lambda found: repr(found.group())[1:-1], text.strip())


def _status(exc: BaseException) -> int:
    response: Any = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def resends(exc: BaseException) -> int:
    """How often the request of an answered error was sent again before this answer came.

    botocore's ``RetryAttempts``, to which the obstore engine and the backend
    add the tries they made themselves (:func:`count_resends`): a try before
    the last may have been applied, its answer lost.
    """
    response: Any = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)


def count_resends(response: dict[str, Any], more: int) -> None:
    """Add ``more`` tries to an answer's ``RetryAttempts`` (an error's ``response`` too)."""
    meta = response.setdefault("ResponseMetadata", {})
    meta["RetryAttempts"] = int(meta.get("RetryAttempts", 0) or 0) + more


def _real_region(exc: BaseException) -> str | None:
    response: Any = getattr(exc, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get("x-amz-bucket-region") or response.get("Error", {}).get("Region")
    return str(region) if region else None


def _after(retries: int) -> str:
    return "with retries=0 (no retry)" if retries == 0 else f"after {retries} retries"


def _client_error(  # noqa: PLR0911 - one branch per row of the table
    exc: BaseException, bucket: str, region: str | None, retries: int
) -> tuple[type[BackendError], str]:
    code = error_code(exc)
    message = _one_line(str((getattr(exc, "response", None) or {}).get("Error", {}).get("Message", "")))
    detail = f"{code}: {message}" if message else code
    if code == "KeyTooLongError":
        # Valid by the key rule, refused by this store (SeaweedFS: a segment over 255 bytes).
        return InvalidKeyError, f"the store refuses this key as too long ({detail})"
    if code == "InvalidBucketName":
        return StoreError, f"bucket name {bucket[:70]!r} is not valid: {BUCKET_RULE} ({detail})"
    if code == "NoSuchBucket":
        return (
            BucketNotFoundError,
            f"bucket {bucket!r} does not exist (create it, or {CREATE_HINT})",
        )
    if code in ("BucketAlreadyExists",):
        return PermissionDeniedError, f"bucket {bucket!r} already exists and belongs to another account"
    if code == "AccessControlListNotSupported":
        return StoreError, (
            f"bucket {bucket!r} has ACLs disabled (Object Ownership 'bucket owner enforced', the default "
            "for new buckets): canned ACLs cannot make objects public or private there; "
            "use a bucket policy instead"
        )
    if code in _WRONG_REGION or _status(exc) == 301:
        real = _real_region(exc)
        where = f"region {real!r}" if real else "another region"
        return StoreError, f"bucket {bucket!r} is in {where}, not {region!r}: pass region={real!r} ({detail})"
    if code in _DENIED or _status(exc) == 403:
        return PermissionDeniedError, f"access denied ({detail})"
    if code in _UNAVAILABLE or _status(exc) >= 500:
        return StoreUnavailableError, f"S3 kept failing {_after(retries)} ({detail})"
    return StoreError, detail or str(exc)


def forget_requests(exc: BaseException) -> None:
    """Drop from every link of the chain what echoes a signed request: the request botocore
    keeps on a connection error (``exc.request``: its headers hold X-Amz-Security-Token), and
    the parts of an S3 error beyond the safe ones (a SignatureDoesNotMatch answer's
    CanonicalRequest holds the session token)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if getattr(link, "request", None) is not None:
            link.request = None  # type: ignore[attr-defined]
        kwargs = getattr(link, "kwargs", None)
        if isinstance(kwargs, dict):
            kwargs.pop("request", None)
        error = (getattr(link, "response", None) or {}).get("Error") if hasattr(link, "response") else None
        if isinstance(error, dict):
            for name in [name for name in error if name not in _SAFE_ERROR_PARTS]:
                del error[name]
        link = link.__cause__ or link.__context__


def translate(
    exc: BaseException, bucket: str, region: str | None, retries: int = 4
) -> tuple[type[BackendError], str]:
    """Map a botocore exception to an error class and a plain reason."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        return _client_error(exc, bucket, region, retries)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return PermissionDeniedError, (
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "use a profile (AWS_PROFILE), or run where an instance role is available"
        )
    if isinstance(exc, bx.CredentialRetrievalError):
        # The source of temporary credentials failed (a refresh that raised, or gave credentials
        # already expired or without a token): no request was sent; S3 said nothing.
        return PermissionDeniedError, f"the AWS credentials could not be obtained ({exc})"
    from urllib3.exceptions import HTTPError

    unavailable = (
        bx.ConnectionError,  # EndpointConnectionError, ConnectionClosedError, timeouts
        bx.HTTPClientError,
        bx.ResponseStreamingError,
        bx.IncompleteReadError,
        HTTPError,  # an answer cut off where botocore reads it (raised by s3transfer's own calls)
    )
    if isinstance(exc, unavailable):
        reason = f"{type(exc).__name__}: {exc}"
        return StoreUnavailableError, f"S3 endpoint unreachable {_after(retries)} ({reason})"
    return StoreError, f"{type(exc).__name__}: {exc}"
