"""Building the one boto3 client of an S3 backend, and its public URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["client_config", "import_boto3", "make_client", "object_url", "safe_endpoint"]

S3_EXTRA = "S3 backends need boto3: pip install 'backends[s3]'"


def import_boto3() -> Any:
    """Import boto3, or raise ImportError naming the extra to install."""
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(S3_EXTRA) from exc
    return boto3


def client_config(*, retries: int, pool: int, addressing_style: str | None, timeout: float) -> Any:
    """botocore Config: standard retries, a pool sized to the backend, SigV4."""
    from botocore.config import Config

    s3: dict[str, Any] = {}
    if addressing_style:
        s3["addressing_style"] = addressing_style
    return Config(
        # Standard mode retries throttling (SlowDown, 503), 5xx, connection
        # resets and read timeouts with backoff; total_max_attempts counts
        # the first try too.
        retries={"mode": "standard", "total_max_attempts": retries + 1},
        max_pool_connections=pool,
        signature_version="s3v4",  # botocore would presign with SigV2 otherwise
        connect_timeout=timeout,
        read_timeout=timeout,
        s3=s3 or None,
        # Checksums only where S3 requires them: a CRC32 on every PUT of a
        # small value is client CPU for nothing, and older S3-compatible
        # stores reject the trailer.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def make_client(
    *,
    region: str | None,
    endpoint_url: str | None,
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
    profile: str | None,
    config: Any,
) -> Any:
    """A new S3 client from boto3's credential chain (or the given keys); no request."""
    boto3 = import_boto3()
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        region_name=region,
        profile_name=profile,
    )
    # endpoint_url=None lets botocore honour AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def safe_endpoint(url: str | None) -> str | None:
    """The endpoint without any user:password part, for messages and repr."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def object_url(endpoint: str, region: str, bucket: str, object_key: str, path_style: bool) -> str:
    """The public URL of an object: virtual-hosted on AWS, path-style elsewhere."""
    encoded = quote(object_key, safe="/~")
    parts = urlsplit(endpoint)
    host = parts.netloc
    if host.endswith("amazonaws.com"):
        if path_style or "." in bucket:
            return f"https://s3.{region}.amazonaws.com/{bucket}/{encoded}"
        return f"https://{bucket}.s3.{region}.amazonaws.com/{encoded}"
    base = f"{parts.scheme}://{host}{parts.path.rstrip('/')}"
    if path_style:
        return f"{base}/{bucket}/{encoded}"
    return f"{parts.scheme}://{bucket}.{host}{parts.path.rstrip('/')}/{encoded}"
