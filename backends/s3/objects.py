"""S3Objects: what an S3 object has besides its value: metadata, copies, URLs, ACLs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from ..info import Stat, utc
from .client import object_url
from .connection import COPY_LIMIT, MAX_EXPIRES, MD5_META, SIZE_META, TOKEN_META, S3Connection
from .errors import ABSENT, error_code

__all__ = ["S3Objects"]

V = TypeVar("V")


class S3Objects(S3Connection[V]):
    """``stat``, ``stat_many``, ``copy``, ``move``, ``url``, ``make_public``/``make_private``."""

    def stat(self, key: str) -> Stat | None:
        """Size, date, ETag, content type, storage class and metadata (1 HEAD); None if absent."""
        key = self._check(key, "stat")
        head = self._guarded("stat", key, lambda: self._head(key, every_header=True))
        if head is None:
            return None
        stored = int(head.get("ContentLength", 0))
        metadata = dict(head.get("Metadata", {}))
        size = metadata.pop(SIZE_META, None)  # the value's own size and MD5, where it is gzipped
        md5 = metadata.pop(MD5_META, None)
        metadata.pop(TOKEN_META, None)  # a conditional write's own, no metadata of the caller's
        return Stat(
            key=key,
            size=int(size) if size is not None and size.isdigit() else stored,
            stored_size=stored if size is not None else None,
            md5=md5,
            last_modified=utc(head.get("LastModified")),
            etag=head.get("ETag"),
            content_type=head.get("ContentType"),
            content_encoding=head.get("ContentEncoding"),
            storage_class=head.get("StorageClass", "STANDARD"),
            cache_control=head.get("CacheControl"),
            metadata=metadata,
        )

    def stat_many(self, prefix: str = "") -> Iterator[Stat]:
        """Stat of every key under ``prefix`` from the LIST pages alone (no content type or metadata).

        A value this backend gzips (``.js``, ``.css``... in a raw backend) costs
        one HEAD more: the LIST tells only the compressed size.
        """
        with self._translating("stat_many", prefix):
            for page in self._pages(prefix):
                for entry in page.get("Contents", ()):
                    name = self._name_of(entry)
                    if name is not None and self._gzipped(name) and (found := self.stat(name)) is not None:
                        yield found
                    elif name is not None:
                        yield Stat(
                            key=name,
                            size=int(entry.get("Size", 0)),
                            last_modified=utc(entry.get("LastModified")),
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
            # Signed locally, yet with the credentials: a failed refresh is the typed error.
            with self._translating("url", key):
                params = {"Bucket": self.bucket, "Key": object_key}
                sign = self.client.generate_presigned_url
                signed = sign("get_object", Params=params, ExpiresIn=int(expires))
                return str(signed)
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
