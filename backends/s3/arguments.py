"""The arguments of an S3 backend that become HTTP headers, checked before any I/O.

A header value with a CR or LF would split the request (botocore refuses it
mid-call as "Invalid header value"; obstore's signer panics in Rust), and a
non-ASCII one is sent differently by each engine (botocore refuses it in
metadata and sends Latin-1 elsewhere; obstore sends UTF-8). So each is
refused here with a ValueError naming the argument, the same on both
engines, before a request is made: the options at construction, an ETag at
the call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ..errors import shown

__all__ = [
    "CANNED_ACLS",
    "MAX_ETAG",
    "MAX_METADATA",
    "check_etag",
    "check_put_options",
]

#: S3's canned ACLs (``x-amz-acl``); anything else is refused by S3 after a round trip
CANNED_ACLS: Final = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
)
#: S3's limit on a PUT's user metadata: names and values together, in bytes
MAX_METADATA: Final = 2048
#: an ETag longer than this is no ETag any S3 gave (they are quoted hex digests)
MAX_ETAG: Final = 1024
#: printable ASCII, no space at either end: a header value that reads back as it was sent
_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
#: an HTTP token (RFC 9110): what a metadata name (``x-amz-meta-<name>``) may hold
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE_RULE: Final = "a str of printable ASCII without a space at either end"


def _value(name: str, value: object, rule: str = _VALUE_RULE) -> None:
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        raise ValueError(f"{name} is {rule}, not {shown(value)}")


def check_put_options(
    *,
    acl: object,
    storage_class: object,
    cache_control: object,
    content_type: object,
    metadata: object,
    reserved: Mapping[str, int],
) -> None:
    """Raise ValueError naming the first header-bound option that no engine can send as given.

    ``reserved``: the metadata names the backend writes itself (refused in ``metadata``),
    each with the longest value it writes there (room kept in S3's 2 KB).
    """
    # "" (like None) means none: a URL's empty ?acl=.
    if acl not in (None, "") and acl not in CANNED_ACLS:
        raise ValueError(f"acl is one of S3's canned ACLs ({', '.join(CANNED_ACLS)}), not {shown(acl)}")
    if storage_class not in (None, "") and (
        not isinstance(storage_class, str) or not _TOKEN.fullmatch(storage_class)
    ):
        raise ValueError(
            "storage_class is a name such as 'STANDARD_IA' (letters, digits, '_'), "
            f"not {shown(storage_class)}"
        )
    for name, value in (("cache_control", cache_control), ("content_type", content_type)):
        if value is not None:
            _value(name, value)
    if metadata is not None:
        _check_metadata(metadata, reserved)


def _check_metadata(metadata: object, reserved: Mapping[str, int]) -> None:
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata is a dict of str names to str values, not {type(metadata).__name__}")
    size = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            rule = "HTTP tokens (ASCII letters, digits and !#$%&'*+.^_`|~-)"
            raise ValueError(f"metadata names are {rule}, not {shown(name)}")
        if name.lower() in reserved:
            raise ValueError(
                f"metadata name {name!r} is the backend's own "
                "(it stores the value's size and MD5, and a conditional write's token)"
            )
        _value(f"metadata[{name!r}]", value)
        size += len(name) + len(value)
    own = sum(len(name) + longest for name, longest in reserved.items())
    if size > MAX_METADATA - own:
        raise ValueError(
            f"metadata holds {size} bytes of names and values; S3 takes at most {MAX_METADATA}, "
            f"of which the backend's own metadata may take {own}: at most {MAX_METADATA - own}"
        )


def check_etag(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` can be sent as an ETag header (``If-Match``, ``If-None-Match``)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ETAG or not _VALUE.fullmatch(value):
        raise ValueError(
            f"{name} is an ETag (as stat(key).etag gives it): {_VALUE_RULE}, "
            f"at most {MAX_ETAG} characters, not {shown(value)}"
        )
