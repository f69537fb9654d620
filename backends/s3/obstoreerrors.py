"""obstore's errors as botocore raises them, for the obstore engine (:mod:`.engine`).

Built from obstore's text, which is never kept (its text holds the answer's
body, where S3 echoes a signed request, the session token included): only
S3's code and message, the method and URL, and what failed, with every
credential of the engine scrubbed out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

__all__ = ["OPERATION_NAMES", "ErrorReader"]

#: boto3's operation names of the requests the engine sends
OPERATION_NAMES: Final = {
    "get_object": "GetObject",
    "head_object": "HeadObject",
    "put_object": "PutObject",
}
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
#: our credential provider's CredentialRetrievalError (:mod:`.credentials`), as obstore shows it
_RETRIEVAL = re.compile(
    r"External AWS credential provider: (?:CredentialRetrievalError: )?"
    r"Error when retrieving credentials from (.{1,100}?): (.*)"
)
#: obstore could not read an answer's headers (boto3 can)
_UNREADABLE = re.compile(
    r"Unable to extract metadata from headers|contained non[ -](?:UTF-8|unicode)|"
    r"Invalid (?:last modified|content length)|Failed to parse value for"
)


class ErrorReader:
    """Reads obstore's errors into botocore's exceptions, scrubbed of ``secrets()``."""

    def __init__(
        self, obstore_errors: Any, bx: Any, endpoint_url: str, secrets: Callable[[], tuple[str, ...]]
    ) -> None:
        self._errors = obstore_errors
        self._bx = bx
        self._endpoint = endpoint_url
        self._secrets = secrets

    def as_botocore(self, exc: BaseException, operation: str) -> BaseException | None:
        """obstore's error as botocore raises it (a ClientError with S3's code, or the
        connection error botocore names the same failure with); None for what boto3
        must be asked instead (a redirect, headers obstore cannot read)."""
        errors = self._errors
        text = _readable(str(exc))
        if "Unable to locate credentials" in text:  # our credential provider's NoCredentialsError
            missing: BaseException = self._bx.NoCredentialsError()
            return missing
        if "External AWS credential provider" in text:  # our provider raised: no request was sent
            return self._credentials_error(text.split("\n", 1)[0])
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
            "Error": {"Code": code, "Message": self.scrubbed(message)},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retried},
        }
        failed: BaseException = self._bx.ClientError(response, OPERATION_NAMES[operation])
        return failed

    def _credentials_error(self, line: str) -> BaseException:
        """The CredentialRetrievalError our credential provider raised, as botocore raised it."""
        found = _RETRIEVAL.search(line)
        source, text = (found.group(1), found.group(2)) if found else ("the credential source", line)
        failed: BaseException = self._bx.CredentialRetrievalError(
            provider=source, error_msg=self.scrubbed(text)
        )
        return failed

    def _transport_error(self, text: str) -> BaseException:
        """A failure without an S3 answer, as botocore names it: a timeout, a closed
        connection, a cut body, a refused connection."""
        bx = self._bx
        found = _REQUEST.search(text)
        url = self.scrubbed(found.group(2)) if found else self._endpoint
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
        return self.scrubbed(line[:300])

    def scrubbed(self, text: str) -> str:
        """``text`` with every credential of the engine replaced by ``***``."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text


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
