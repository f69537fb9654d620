"""RedisLock: a lease held as a Redis string, taken with ``SET NX PX``.

The lock of a key is ``<prefix>\\x7flock/<sha256 of the key>`` holding the
holder's token, expiring by the server's clock after the lease (machines
need not agree on the time). Acquire (``SET NX PX``), renew and release
act only on our own token, in one script each, so they are safe to repeat after a lost reply and never
touch the lease of a holder that took over: a release repeated after its
answer was lost finds the key free, which is a success (README.rst, "Locks").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final

from ..locks import Lock
from .scripts import LOADS

__all__ = ["RedisLock"]

# KEYS: the lock; ARGV: token, lease in ms. 1 if the lease is now ours: taken
# (SET NX: one of any number of racers wins) or, for a retried try whose
# first answer was lost, found holding our own token and renewed.
_ACQUIRE: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: the lock; ARGV: token, lease in ms. 1 if the lease was ours and is renewed.
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: the lock; ARGV: token. 1 if the lease was ours and is released.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

SHAS: Final = {source: hashlib.sha1(source.encode()).hexdigest() for source in (_ACQUIRE, _RENEW, _RELEASE)}


class RedisLock(Lock):
    """A lease on a Redis server, shared by every process and machine using it."""

    max_delay = 0.05

    def __init__(
        self,
        key: str,
        timeout: float | None,
        ttl: float,
        *,
        client: Callable[[], Any],
        name: str,
        noscript: type[Exception],
        **context: Any,
    ) -> None:
        """``client()``: the backend's redis-py client now (a closed backend's refuses every
        call); ``name``: the lock's Redis key; ``noscript``: redis-py's NoScriptError."""
        super().__init__(key, timeout, ttl, **context)
        self._client = client
        self._name = name
        self._noscript = noscript
        self._ms = max(1, int(self.ttl * 1000))

    def _script(self, source: str, *args: object) -> Any:
        """Run one of the scripts above in one ``EVALSHA`` (a ``SCRIPT LOAD`` first if the server lost it)."""
        client, sha = self._client(), SHAS[source]
        for _ in range(LOADS):  # the server may lose it again before the EVALSHA: run_script's reason
            try:
                return client.evalsha(sha, 1, self._name, *args)
            except self._noscript:
                client.script_load(source)
        return client.evalsha(sha, 1, self._name, *args)

    def _try_acquire(self) -> bool:
        # One round trip per try, won or not.
        return bool(self._script(_ACQUIRE, self.token, self._ms))

    def _renew(self) -> bool:
        return bool(self._script(_RENEW, self.token, self._ms))

    def _release(self) -> bool:
        return bool(self._script(_RELEASE, self.token))

    def _taken(self) -> bool:
        # A lease that ran out is gone from Redis (PX): a token there is another holder's.
        holder = self._client().get(self._name)
        return holder is not None and holder != self.token.encode("ascii")

    def _abandon(self) -> bool:
        # A try whose answer was lost may have taken the lease: give it back.
        return self._release()
