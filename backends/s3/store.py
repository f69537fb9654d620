"""S3Backend: one bucket (or a prefix of it) through one boto3 client: the store hooks.

Request budget (README.rst, "S3 request costs"): ``load`` = 1 GET (a missing
key too), ``in`` = 1 HEAD, ``dump`` = 1 PUT (a conditional one whose
condition failed on a try sent again: + 1 HEAD), ``delete`` = HEAD + DELETE,
listing = one LIST page per 1000 keys, streamed; ``clear``/``delete_many`` =
the LIST pages plus one DeleteObjects per 1000 keys. The connection is
:mod:`.connection` (on the requests of :mod:`.transport`), the object extras :mod:`.objects`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from ..base import MISSING, UNCHANGED, Missing, Unchanged
from ..errors import BackendError, CorruptValueError, check_flag
from ..events import observed
from ..keys import is_valid_key, key_problem
from ..locks import Lock, lock_name
from .connection import (
    CONFLICT_RETRIES,
    DEFAULT_GZIP,
    DIRECTORY,
    FOLDER_SUFFIX,
    MD5_META,
    SIZE_META,
    TOKEN_META,
    is_marker,
)
from .engine import Loaded
from .errors import ABSENT, CONFLICT, NOT_MODIFIED, PRECONDITION_FAILED, error_code, resends
from .locks import LOCK_AREA, S3Lock
from .objects import S3Objects
from .transport import PAGE, batches

__all__ = ["DEFAULT_GZIP", "S3Backend", "stray_reason", "with_token"]

V = TypeVar("V")


def stray_reason(name: str, size: int) -> str | None:
    """Why the object ``name`` (below the prefix) of ``size`` bytes is no key, or None: a key or a marker."""
    if name.startswith(LOCK_AREA) or (size == 0 and name.endswith(("/", FOLDER_SUFFIX))):
        return None  # this library's lock objects; another tool's empty folder markers
    if name.endswith(FOLDER_SUFFIX):
        return f"named like a folder marker ('{FOLDER_SUFFIX}') but holds {size} bytes"
    if is_valid_key(name):
        return None
    for test, reason in _NOT_KEYS:
        if test(name):
            return reason
    return key_problem(name)


#: what makes an S3 name no key, in the words a user reads (first match wins)
_NOT_KEYS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda name: bool(re.search(r"[\x00-\x1f\x7f]", name)), "a control character in the name"),
    (lambda name: name.startswith("/"), "the name starts with '/'"),
    (lambda name: name.endswith("/"), "the name ends with '/' and the object holds data"),
    (lambda name: "//" in name, "an empty segment ('//') in the name"),
    (lambda name: name in (".", "..") or bool(re.search(r"(^|/)\.\.?(/|$)", name)), "a '.' or '..' segment"),
)


def with_token(params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A conditional PUT's parameters with a random token of this one call in its metadata,
    and the token (None, and the parameters as they are, for an unconditional PUT)."""
    if "IfNoneMatch" not in params and "IfMatch" not in params:
        return params, None
    token = os.urandom(16).hex()
    return {**params, "Metadata": {**params.get("Metadata", {}), TOKEN_META: token}}, token


class S3Backend(S3Objects[V]):
    """A bucket, or one prefix ("folder") of it, on S3 or any S3-compatible store.

    Constructing it sends no request. Credentials come from boto3's chain
    (environment, profile, instance role; ``AWS_ENDPOINT_URL_S3`` honoured)
    unless ``access_key``/``secret_key`` are given; neither ever appears in a
    repr, a message or a log line. One client, safe across threads, with a
    connection pool of ``max_workers``, which also bounds the concurrency of
    ``load_many``/``dump_many``/``items()``.
    """

    # -- reading ------------------------------------------------------------------

    def _load(self, key: str) -> bytes | Missing:
        engine = self._engine
        if engine is None or self._closed:
            loaded = self._get(key, {})  # closed: _with_bucket raises StoreError
            return loaded if loaded is MISSING else loaded[0]
        # The obstore engine's GET, shaped only as a load reads it, with no layer around it
        # (each costs client CPU: #29); what fails is asked again as _get would. A valid key
        # and prefix hold no control character: obstore takes every such name.
        name, generation = self.prefix + key, self._buckets_made
        try:
            data, kind, encoding = engine.load(name)
        except self._client_error as exc:
            if error_code(exc) in ABSENT:
                return MISSING
            if not self._bucket_missing(exc):
                raise
            self._make_bucket_since(generation)
            return self._load_again(key, lambda: engine.load(name), 0)
        except self._engine_cut as exc:
            if not self._retries:
                raise self._streaming_error(error=exc) from exc
            return self._load_again(key, lambda: self._with_bucket(lambda: engine.load(name)), 1)
        if encoding is None and kind != DIRECTORY:
            return data
        return self._loaded(key, data, kind, encoding)

    def _load_again(self, key: str, send: Callable[[], Loaded], tried: int) -> bytes | Missing:
        """The obstore engine's GET of ``key`` again: ``tried`` tries were cut off, or the bucket was made."""
        try:
            data, kind, encoding = self._again_if_cut(send, self._engine_cut, tried=tried)
        except self._client_error as exc:
            if error_code(exc) in ABSENT:
                return MISSING
            raise
        return self._loaded(key, data, kind, encoding)

    def _loaded(self, key: str, data: bytes, kind: str | None, encoding: str | None) -> bytes | Missing:
        """A GET's body as a stored value: MISSING for a folder marker, ungzipped if gzipped."""
        if kind == DIRECTORY and not data:
            return MISSING  # another tool's folder marker, an empty application/x-directory
        return self._decoded(key, data, encoding)

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
            if is_marker(response):
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

    def _contains(self, key: str) -> bool:
        return self._head(key) is not None

    # -- writing ------------------------------------------------------------------

    def _dump(self, key: str, data: bytes, if_absent: bool) -> bool:
        return self._put(key, data, if_absent=if_absent)

    def _put(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> bool:
        return self._put_object(key, *self._put_request(key, data, if_absent, if_match))

    def _put_request(
        self, key: str, data: bytes, if_absent: bool, if_match: str | None
    ) -> tuple[bytes, dict[str, Any]]:
        """The body and parameters of the PUT of ``data`` (gzipped for a gzip extension)."""
        params: dict[str, Any] = {**self._put_args, "ContentType": self._guess_type(key)}
        if self._gzipped(key):
            own = {SIZE_META: str(len(data)), MD5_META: hashlib.md5(data, usedforsecurity=False).hexdigest()}
            params["Metadata"] = {**params.get("Metadata", {}), **own}
            data = gzip.compress(data, mtime=0)
            params["ContentEncoding"] = "gzip"
        if if_absent:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        return data, params

    def _put_object(self, key: str, body: bytes | IO[bytes], params: dict[str, Any]) -> bool:
        """One PUT; False when its condition (If-None-Match / If-Match) fails.

        A conditional PUT carries a random token of this call in its metadata.
        When its condition fails on a try sent again (botocore's retry, the
        obstore engine's, ours), an earlier try may have been applied with its
        answer lost: one HEAD then reads the object's token, and our own means
        the write is ours (True). A condition that fails at the first try
        costs no request more.
        """
        params, token = with_token(params)
        start = body.tell() if not isinstance(body, bytes) else 0
        resent = False
        for attempt in range(CONFLICT_RETRIES):
            if not isinstance(body, bytes):
                body.seek(start)  # a file body is read again when the PUT is asked again
            try:
                self._call("put_object", Key=self._object_key(key), Body=body, **params)
                return True
            except self._client_error as exc:
                code = error_code(exc)
                resent = resent or resends(exc) > 0
                if code in PRECONDITION_FAILED or ("IfMatch" in params and code in ABSENT):
                    return resent and token is not None and self._holds_token(key, token)
                if code not in CONFLICT or attempt == CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _holds_token(self, key: str, token: str) -> bool:
        """Whether ``key``'s object is the one a PUT carrying ``token`` wrote (1 HEAD)."""
        head = self._head(key)
        return head is not None and head.get("Metadata", {}).get(TOKEN_META) == token

    @observed("dump")
    def dump(self, key: str, value: V, *, if_absent: bool = False, if_match: str | None = None) -> bool:
        """Store ``value`` under ``key`` with one PUT and return True.

        ``if_absent=True`` sends ``If-None-Match: *`` and ``if_match=etag``
        sends ``If-Match``: a failed precondition (or, for ``if_match``, an
        absent key) returns False and changes nothing.
        """
        if check_flag(if_absent, "if_absent") and if_match is not None:
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
        for batch in batches(keys, PAGE):
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

    def _iter_keys(self) -> Iterator[str]:
        for page in self._pages(""):
            for entry in page.get("Contents", ()):
                name = self._name_of(entry)
                if name is not None:
                    yield name

    def strays(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """Yield each object below ``prefix`` whose name is no key here: ``(name, why)``, streaming.

        The names S3 takes and keys cannot be (``logs//x``, ``/lead``,
        ``a/./b``, ``notes/`` holding data, a control character, more than
        1024 bytes) are reported, never dropped silently: ``backends ls`` and
        ``cp`` name each one. Folder markers (an empty ``name/``, an empty
        ``name_$folder$``, an empty ``application/x-directory`` object) and this
        library's lock objects are no strays. Names are below the backend's
        prefix. Costs the LIST pages of ``prefix``, as a listing does.
        """
        if not isinstance(prefix, str):
            raise TypeError("prefix is a str")
        with self._translating("strays", None):
            for page in self._pages(prefix):
                for entry in page.get("Contents", ()):
                    name: str = entry["Key"][len(self.prefix) :]
                    reason = stray_reason(name, int(entry.get("Size", 0)))
                    if reason is not None:
                        yield name, reason

    def _list(self, prefix: str, delimiter: str) -> Iterator[str]:
        # S3 sends a page's folders apart from its keys; each page covers the
        # next range of names, so sorting one page at a time sorts them all.
        for page in self._list_pages(prefix, delimiter):
            yield from sorted(page)

    def _list_pages(self, prefix: str, delimiter: str) -> Iterator[list[str]]:
        seen: set[str] = set()
        # No Delimiter parameter at all for "": an empty one is not "none" everywhere.
        for page in self._pages(prefix, **({"Delimiter": delimiter} if delimiter else {})):
            entries: list[str] = []
            for common in page.get("CommonPrefixes", ()):
                folder = common["Prefix"][len(self.prefix) :]
                # A folder no key can be in: lock objects ("\x7flocks/"), "a//".
                if folder not in seen and is_valid_key(folder + "x"):
                    seen.add(folder)
                    entries.append(folder)
            for entry in page.get("Contents", ()):
                name: str = entry["Key"][len(self.prefix) :]
                folder = name[: -len(FOLDER_SUFFIX)] + delimiter if name.endswith(FOLDER_SUFFIX) else None
                if folder is None and delimiter and name.endswith(delimiter):
                    folder = name
                if folder is not None and delimiter:
                    if folder != prefix and folder not in seen:
                        seen.add(folder)
                        entries.append(folder)
                elif self._name_of(entry) is not None:
                    entries.append(name)
            yield entries

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
