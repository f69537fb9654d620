"""The Redis store's calls as plans: what to send and what to make of the answers, with no I/O.

A plan is a generator: it yields a request (:class:`Script` or :class:`Command`),
is sent the server's answer, and returns the call's result. The blocking
store (:mod:`.store`) runs plans with redis-py's client, the async twin
(:mod:`.aio`) with ``redis.asyncio``: one copy of the semantics, two drivers.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final, NamedTuple, TypeVar

from ..base import MISSING, Missing

__all__ = [
    "PAGE",
    "Command",
    "Names",
    "Plan",
    "Script",
    "contains",
    "delete_many",
    "drive",
    "drive_async",
    "length",
    "load",
    "load_many",
    "pop",
    "purge",
    "put",
    "put_request",
    "write",
]

T = TypeVar("T")

#: keys per MGET, per write script and per listing page
PAGE: Final = 1000
#: index entries per round trip of ``len``
COUNT: Final = 5000


class Script(NamedTuple):
    """Run a script of :mod:`.scripts` (the clock argument is added by the driver)."""

    name: str
    keys: list[str]
    args: list[Any]


class Command(NamedTuple):
    """Send a plain command: ``GET``, ``EXISTS`` or ``MGET``."""

    name: str
    args: list[Any]


Request = Script | Command
#: a call: yields requests, is sent their answers, returns the result
Plan = Generator[Request, Any, T]


class Names(NamedTuple):
    """Where a store's data is: its prefix, its structures (index, deadlines), its ETag prefix,
    the prefix of its token keys, and how long (ms) a token key keeps a call's answer."""

    prefix: str
    structures: list[str]
    tags: str
    takes: str
    take_ms: int

    def of(self, keys: list[str], token: str) -> list[str]:
        """The KEYS of a write script: the structures, the token key, then each key's value and ETag key."""
        names = [*self.structures, self.takes + token]
        for key in keys:
            names += [self.prefix + key, self.tags + key]
        return names

    def entries(self, key: str) -> list[str]:
        """The KEYS of a script of one whole entry: the structures, the value key, the ETag key."""
        return [*self.structures, self.prefix + key, self.tags + key]

    def token(self) -> str:
        """A fresh token for one request: its repeat by redis-py after a lost reply sends the same."""
        return os.urandom(12).hex()


def drive(plan: Plan[T], send: Callable[[Request], Any]) -> T:
    """Run ``plan``, answering each request with ``send``."""
    try:
        request = next(plan)
        while True:
            request = plan.send(send(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def drive_async(plan: Plan[T], send: Callable[[Request], Awaitable[Any]]) -> T:
    """Run ``plan``, answering each request with the awaited ``send``."""
    try:
        request = next(plan)
        while True:
            request = plan.send(await send(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


# -- reading -------------------------------------------------------------------------------


# Every read is a script, though GET, EXISTS and MGET would answer in the
# same one round trip: only a script sees whether a value key is ours (in
# the index) and a string, so that a key another client wrote, retyped or
# evicted gets one answer from every call (see .scripts).


def load(at: Names, key: str) -> Plan[bytes | Missing]:
    data = yield Script("read", [*at.structures, at.prefix + key], [key, "data"])
    return MISSING if data is None else data


def contains(at: Names, key: str) -> Plan[bool]:
    return bool((yield Script("read", [*at.structures, at.prefix + key], [key, "in"])))


def load_many(at: Names, keys: list[str]) -> Plan[dict[str, bytes]]:
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), PAGE):
        batch = keys[start : start + PAGE]
        names = [at.prefix + key for key in batch]
        # The keys go once, as value keys: the script cuts the prefix off (its length from the index's name).
        values = yield Script("many", [*at.structures, *names], [])
        found.update((key, data) for key, data in zip(batch, values, strict=True) if data is not None)
    return found


def length(at: Names) -> Plan[int]:
    """Count the index in pages of :data:`COUNT`, each entry checked (and dropped if its value is gone)."""
    total, low = 0, "-"
    while True:
        low, counted = yield Script("len", at.structures, [at.prefix, at.tags, low, COUNT])
        total += int(counted)
        if not low:
            return total


# -- writing -------------------------------------------------------------------------------


def write(
    at: Names,
    mode: str,
    pairs: list[tuple[str, bytes]],
    ttl: int,
    *,
    keep: int,
    etag: str = "",
    origin: str = "",
) -> Plan[bool]:
    """Write ``pairs`` (``mode``: set, nx, match, fill) in scripts of :data:`PAGE` pairs; whether any was."""
    written = False
    for start in range(0, len(pairs), PAGE):
        batch = pairs[start : start + PAGE]
        args: list[Any] = [mode, ttl, keep, etag, origin]
        for key, data in batch:
            args += [key, data]
        # "set" answers the same when repeated; "nx" and "match" keep their answer under a token.
        take = 0 if mode == "set" else at.take_ms
        request = Script("write", at.of([key for key, _ in batch], at.token()), [take, *args])
        written |= int((yield request)) > 0
    return written


def put_request(at: Names, key: str, data: bytes, ttl: int, keep: int) -> Script:
    """The one request of :func:`put`: the blocking store sends it without a plan (a dump's hot path)."""
    return Script("put", [at.structures[0], at.prefix + key], [ttl, keep, data])


def put(at: Names, key: str, data: bytes, ttl: int, *, keep: int) -> Plan[bool]:
    """A plain dump of one key: :func:`write` in mode "set" for one pair with no origin ETag,
    in one script of few arguments. True: it was written (a repeat after a lost reply writes the same)."""
    yield put_request(at, key, data, ttl, keep)
    return True


def purge(at: Names) -> Plan[int]:
    """Remove the expired keys, :data:`PAGE` a script (each under a token: its repeat answers the
    same); then drop the entries whose value is gone, as :func:`length` does. How many expired."""
    removed, args = 0, [at.prefix, at.tags, PAGE, at.take_ms]
    while batch := int((yield Script("purge", [*at.structures, at.takes + at.token()], args))):
        removed += batch
    # And the entries whose value another client deleted or retyped, or Redis evicted.
    yield from length(at)
    return removed


def delete_many(at: Names, keys: list[str]) -> Plan[int]:
    existed = 0
    for start in range(0, len(keys), PAGE):
        batch = keys[start : start + PAGE]
        existed += int((yield Script("delete", at.of(batch, at.token()), [at.take_ms, *batch])))
    return existed


def pop(at: Names, key: str) -> Plan[bytes | Missing]:
    data = yield Script("pop", at.of([key], at.token()), [at.take_ms, key])
    return MISSING if data is None else data
