"""SqliteLock: a lease held as a row of ``kv_locks``, shared by every process using the file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..locks import Lock

__all__ = ["SqliteLock"]

# One statement each, acting only on our own token: safe to repeat after a
# lost answer, and never touching the lease of a holder that took over.
_ACQUIRE: Final = (
    "INSERT INTO kv_locks VALUES (?1, ?2, ?3 + ?4) ON CONFLICT (key) DO UPDATE"
    " SET token = excluded.token, until = excluded.until WHERE kv_locks.until <= ?3 OR kv_locks.token = ?2"
)
_RENEW: Final = "UPDATE kv_locks SET until = ?3 + ?4 WHERE key = ?1 AND token = ?2 AND until > ?3"
_TAKEN: Final = "SELECT 1 FROM kv_locks WHERE key = ?1 AND token != ?2 AND until > ?3"
_RELEASE: Final = "DELETE FROM kv_locks WHERE key = ?1 AND token = ?2"


class SqliteLock(Lock):
    """A lease in the database file: one holder across threads and processes on this machine.

    Leases run on the machines' clock (the backend's ``clock``): every
    process sharing a file shares its clock.
    """

    max_delay = 0.02

    def __init__(
        self, key: str, timeout: float | None, ttl: float, connection: Callable[[], Any], **context: Any
    ) -> None:
        super().__init__(key, timeout, ttl, **context)
        self._connection = connection

    def _run(self, statement: str, *lease: float) -> bool:
        changed: int = self._connection().execute(statement, (self.key, self.token, *lease)).rowcount
        return changed == 1

    def _try_acquire(self) -> bool:
        return self._run(_ACQUIRE, self._now(), self.ttl)

    def _renew(self) -> bool:
        return self._run(_RENEW, self._now(), self.ttl)

    def _release(self) -> bool:
        return self._run(_RELEASE)

    def _taken(self) -> bool:
        found = self._connection().execute(_TAKEN, (self.key, self.token, self._now())).fetchone()
        return found is not None
