"""S3Connection: the options checked, the client made, and what S3 objects look like, under every S3 backend.

Every option is checked before a client exists; the backend's own client is
made from them. The object marks (another tool's folder markers, the
backend's own metadata, the gzipped extensions), the HEAD of one object and
the LIST pages are here; the requests themselves (retries, rewinds, the
bucket made on demand, the pool, ``close``) are :mod:`.transport`'s.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from ..codecs.layers import CodecOption, Layered
from ..keys import MAX_KEY_BYTES, check_key, is_valid_key
from .arguments import check_put_options
from .client import client_config, import_boto3, make_client, safe_endpoint
from .engine import ENGINES
from .errors import ABSENT, BUCKET_RULE, error_code
from .transport import PAGE, S3Transport

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
    "SIZE_META",
    "TOKEN_META",
    "S3Connection",
    "is_marker",
]


V = TypeVar("V")

DIRECTORY = "application/x-directory"
FOLDER_SUFFIX = "_$folder$"
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


def _normal_prefix(prefix: str) -> str:
    if not prefix:
        return ""
    check_key(prefix.rstrip("/"), operation="prefix")
    return prefix.rstrip("/") + "/"


class S3Connection(S3Transport[V]):
    """The bucket, client and object plumbing of :class:`~backends.s3.S3Backend` (see there)."""

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
        prefix = _normal_prefix(prefix)
        import_boto3()
        owns_client = client is None
        if client is None:
            keys = {"access_key": access_key, "secret_key": secret_key, "session_token": session_token}
            config = client_config(
                retries=retries, pool=max_workers, addressing_style=addressing_style, timeout=timeout
            )
            client = _own_client(config, region=region, endpoint_url=endpoint_url, profile=profile, **keys)
        super().__init__(
            client,
            owns_client=owns_client,
            bucket=bucket,
            prefix=prefix,
            engine=engine,
            retries=retries,
            timeout=timeout,
            max_workers=max_workers,
            create_bucket=create_bucket,
        )
        self._max_key_bytes = MAX_KEY_BYTES - len(self.prefix.encode("utf-8"))
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

    #: extensions gzipped when ``gzip_extensions`` is not given
    default_gzip: frozenset[str] = frozenset()

    # -- objects ------------------------------------------------------------------------

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

    # -- identity ---------------------------------------------------------------------

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
