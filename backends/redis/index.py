"""Walking a Redis store's index: pages of live keys, folders, the strays another program added.

Each page is one script (``page`` or ``folders`` of :mod:`.scripts`) run
by ``run(name, keys, args)``, the store's; the strays and the keys to
clear come from the index's raw members, ``members(low)`` (a
``ZRANGEBYLEX`` page). Sorted by UTF-8 bytes, as S3 lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..keys import key_problem
from .plans import PAGE, Names

__all__ = ["keys_in_pages", "listed", "strays"]

#: runs a script of the store: ``run(name, keys, args)``
Run = Callable[[str, list[str], list[Any]], Any]
#: a page of the index's members from ``low`` (``b"-"``, or ``b"(" + member``)
Members = Callable[[bytes], list[bytes]]


def _page(run: Run, at: Names, low: str | bytes, high: str | bytes) -> tuple[bytes, list[str]]:
    """One page of the index from ``low`` to ``high``, and the live keys in it.

    The first is where the next page starts, or ``b""`` when this page was the last.
    """
    last, seen, *live = run("page", at.structures, [at.prefix, at.tags, low, high, PAGE])
    return (last if int(seen) == PAGE else b""), [raw.decode("utf-8") for raw in live]


def listed(run: Run, at: Names, prefix: str, delimiter: str) -> Iterator[str]:
    """The live keys that start with ``prefix``, with ``delimiter`` each folder once (a key cut after it)."""
    try:
        encoded = prefix.encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate: no key (valid UTF-8) starts with it
    low: bytes = b"[" + encoded if prefix else b"-"
    high = b"(" + _after(encoded) if prefix else b"+"
    if not delimiter:
        while True:
            last, keys = _page(run, at, low, high)
            yield from keys
            if not last:
                return
            low = b"(" + last
    # With a delimiter the server yields each folder once and jumps past
    # everything below it: a folder costs no page sent to the client.
    try:
        delimiter.encode("utf-8")
    except UnicodeEncodeError:
        delimiter = "\x00"  # no key holds this one (a control character): no folder is cut
    args = [high, len(encoded) + 1, delimiter, PAGE]
    where = [at.prefix, at.tags]
    while True:
        low, *entries = run("folders", at.structures, [*where, low, *args])
        yield from (raw.decode("utf-8") for raw in entries)
        if not low:
            return


def strays(members: Members, prefix: str) -> Iterator[tuple[str, str]]:
    """The index members from ``prefix`` on that are no key: ``(name escaped, reason)``."""
    try:
        start = prefix.encode("utf-8")
    except UnicodeEncodeError:
        start = prefix.encode("utf-8", "surrogatepass")  # a stray can start so
    low: bytes = b"[" + start if start else b"-"
    while batch := members(low):
        for raw in batch:
            if not raw.startswith(start):
                return
            if (problem := _not_a_key(raw)) is not None:
                yield _escaped(raw), problem
        if len(batch) < PAGE:
            return
        low = b"(" + batch[-1]


def keys_in_pages(members: Members) -> Iterator[list[str]]:
    """Every key of the index, a page at a time past a cursor (the strays left out, and left there)."""
    low: bytes = b"-"
    while batch := members(low):
        yield [raw.decode("utf-8") for raw in batch if _not_a_key(raw) is None]
        if len(batch) < PAGE:
            return
        low = b"(" + batch[-1]


def _after(prefix: bytes) -> bytes:
    """The first bytes past every UTF-8 string that starts with ``prefix`` (its last byte moved up).

    The last byte of UTF-8 is never 0xFF, so it always can be.
    """
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _not_a_key(raw: bytes) -> str | None:
    """Why an index member is no key (the rule the scripts' ``valid`` applies), or None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return key_problem(text)


def _escaped(raw: bytes) -> str:
    """Bytes as one printable line: invalid UTF-8 and control characters as escapes."""
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
