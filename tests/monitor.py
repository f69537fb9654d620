"""Counting the commands Redis clients send, at the server (``MONITOR``)."""

from __future__ import annotations

import redis as redis_py

__all__ = ["RedisCommands"]


class RedisCommands:
    """The commands clients sent the server (MONITOR, less what scripts ran inside), per use."""

    def __init__(self, url: str) -> None:
        self.client = redis_py.Redis.from_url(url)
        self.marker = 0

    def reset(self) -> None:
        self.marker += 1
        self.monitor = self.client.monitor()
        self.monitor.__enter__()

    def count(self) -> dict[str, int]:
        seen: dict[str, int] = {}
        for command in self.sent():
            name = command.split(" ", 1)[0].lower()
            seen[name] = seen.get(name, 0) + 1
        return seen

    def sent(self) -> list[str]:
        """Each command clients sent since ``reset()``, as MONITOR shows it (its arguments quoted)."""
        stop = f"stop-{self.marker}"
        redis_py.Redis(connection_pool=self.client.connection_pool).echo(stop)
        sent: list[str] = []
        while True:
            entry = self.monitor.next_command()
            words = entry["command"].split(" ", 1)
            if words[0] == "ECHO" and stop in entry["command"]:
                break
            if entry.get("client_type") == "lua" or words[0] in ("HELLO", "CLIENT"):
                continue  # run inside a script (no round trip), or a new connection's handshake
            sent.append(entry["command"])
        self.monitor.__exit__(None, None, None)
        return sent
