"""The server-side scripts of the Redis store: every change of a value and of the indexes in one.

Each script is one round trip (``EVALSHA``; redis-py loads it again after a
``SCRIPT FLUSH``), so a value, the key index and the deadline index never
disagree, whatever the interleaving or wherever a client dies.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from .reads import FOLDERS, LEN, MANY, PAGE, READ
from .writes import DELETE, POP, PURGE, PUT, RENEW, WRITE

__all__ = ["LOADS", "SCRIPTS", "SHAS", "run_script", "run_script_async"]

# The sources: the pieces they share in .lua, the writes in .writes, the reads in .reads.

#: the scripts by name, as the store runs them
SCRIPTS: Final = {
    "write": WRITE,
    "put": PUT,
    "delete": DELETE,
    "pop": POP,
    "read": READ,
    "many": MANY,
    "renew": RENEW,
    "page": PAGE,
    "folders": FOLDERS,
    "len": LEN,
    "purge": PURGE,
}
#: their SHA-1s, what ``EVALSHA`` names them by
SHAS: Final = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}


#: how many times a call loads its script again when the server answers ``NOSCRIPT``: a server
#: may lose it again between the load and the ``EVALSHA`` (a restart or failover while redis-py
#: retried it, or a ``SCRIPT FLUSH``); a ``NOSCRIPT`` ran nothing, so asking again is safe
LOADS: Final = 3


def run_script(client: Any, noscript: type[Exception], name: str, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name`` in one ``EVALSHA``; a ``SCRIPT LOAD`` first if the server lost it.

    A server forgets its scripts when it restarts or on ``SCRIPT FLUSH``;
    it then answers ``NOSCRIPT`` (``noscript``, redis-py's NoScriptError),
    and the script is loaded again (up to :data:`LOADS` times).
    """
    sha = SHAS[name]
    for _ in range(LOADS):
        try:
            return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)  # evalsha(), 2 calls less
        except noscript:
            client.script_load(SCRIPTS[name])
    return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)


async def run_script_async(
    client: Any, noscript: type[Exception], name: str, keys: list[str], args: list[Any]
) -> Any:
    """:func:`run_script` on a ``redis.asyncio`` client."""
    sha = SHAS[name]
    for _ in range(LOADS):
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except noscript:
            await client.script_load(SCRIPTS[name])
    return await client.evalsha(sha, len(keys), *keys, *args)
