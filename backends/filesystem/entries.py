"""How a cache entry keeps its deadline and its origin's ETag in the file's own metadata.

The deadline is the file's mtime (nanoseconds on the cache's clock; below
the first second of 1970 means never), the ETag an extended attribute:
both travel with the file through the rename that places it, so neither can
ever belong to another value.
"""

from __future__ import annotations

import errno
import os
import random
import re
import time
from typing import Final

__all__ = [
    "DAY_NS",
    "NEVER_BELOW",
    "TAG_ATTRIBUTE",
    "deadline_of",
    "file_identity",
    "get_tag",
    "set_deadline",
    "set_tag",
]

#: an mtime below this (the first second of 1970) means "never expires"
NEVER_BELOW: Final = 1_000_000_000
TAG_ATTRIBUTE: Final = "user.backends.etag"  # the origin's ETag, kept by a tier for revalidation
DAY_NS: Final = 86_400 * 10**9
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA, errno.E2BIG, errno.ERANGE}
#: a tag that can be sent as If-None-Match: visible ASCII, no space or control
#: character (RFC 9110 ETags are a subset); anything else in the attribute
#: (another tool's, or damaged) is ignored
_TAG = re.compile(rb"[\x21-\x7e]{1,1024}")


def deadline_of(mtime_ns: int) -> float | None:
    """The deadline an entry's mtime stands for: seconds, or None for never."""
    return None if mtime_ns < NEVER_BELOW else mtime_ns / 1e9


def file_identity(status: os.stat_result) -> tuple[int, ...]:
    """What tells a file from any other, even one written later in a reused inode."""
    return (
        status.st_ino,
        status.st_dev,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
        status.st_atime_ns,
    )


def set_deadline(fd: int, deadline: int) -> None:
    """Give the open file the deadline ``deadline`` (nanoseconds) as its mtime."""
    # The atime is set past both the mtime and the coming rename's ctime, so
    # that reads under "relatime" (the Linux default) leave the inode alone
    # instead of writing a new atime on every cache hit. Its random
    # nanoseconds tell this file from any other (file_identity): deadlines
    # stay exact, and two may be equal.
    # (The random module's generator: no system call; reseeded in a forked child.)
    atime = max(deadline, time.time_ns()) + DAY_NS + random.getrandbits(30)
    os.utime(fd, ns=(atime, deadline))


def set_tag(fd: int, tag: str) -> None:
    """Keep the origin's ETag with the open file (nothing, without extended attributes)."""
    # Extended attributes travel with the file through the rename, so the
    # tag can never belong to another value. Without them (some
    # filesystems), entries are simply fetched again instead of revalidated.
    try:
        os.setxattr(fd, TAG_ATTRIBUTE, tag.encode("utf-8"))
    except OSError as exc:
        if exc.errno not in _NO_XATTR:
            raise


def get_tag(fd: int) -> str | None:
    """The ETag kept with an entry, or None: none kept, or one that is not a valid ETag."""
    try:
        raw = os.getxattr(fd, TAG_ATTRIBUTE)
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return None
        raise
    # A damaged or foreign tag (CR/LF, non-ASCII, oversized) could not be
    # sent as If-None-Match: the entry is then refreshed by a plain load.
    return raw.decode("ascii") if _TAG.fullmatch(raw) else None
