"""A loopback TCP proxy in front of a redis-server that loses chosen replies.

The request is forwarded and applied by the server; the proxy then closes
both connections instead of passing the reply on, as a network that drops
an answer does. redis-py sees a ConnectionError and sends the same request
again on a new connection: what every retried call must survive.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["LosingProxy", "script_sha"]


def script_sha(source: str) -> bytes:
    """The SHA-1 an ``EVALSHA`` of ``source`` names it by."""
    return hashlib.sha1(source.encode()).hexdigest().encode()


def _request(buffer: bytearray) -> list[bytes] | None:
    """Take one complete RESP request (an array of bulk strings) off ``buffer``, or None if incomplete."""
    if not buffer.startswith(b"*"):
        if b"\r\n" not in buffer:
            return None
        line, _, _ = buffer.partition(b"\r\n")  # an inline command (redis-py never sends one)
        del buffer[: len(line) + 2]
        return line.split()
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    count, at, parts = int(buffer[1:end]), end + 2, []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(buffer[at + 1 : end])
        if len(buffer) < end + 2 + size + 2:
            return None
        parts.append(bytes(buffer[end + 2 : end + 2 + size]))
        at = end + 2 + size + 2
    del buffer[:at]
    return parts


class LosingProxy:
    """``with LosingProxy(port) as proxy:``; ``proxy.url``; ``proxy.lose(match, times)``.

    ``match(request)`` gets each request's arguments (``[b"EVALSHA", sha, ...]``);
    the replies of the first ``times`` requests it matches are lost after the
    server applied them. ``lost`` counts them, ``seen`` counts every command.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._rules: list[list[Any]] = []
        self._lock = threading.Lock()
        self.lost = 0
        self.seen: Counter[str] = Counter()
        self._sockets: set[socket.socket] = set()
        self._stopped = False

    def lose(self, match: Callable[[list[bytes]], bool], times: int = 1) -> None:
        with self._lock:
            self._rules.append([match, times])

    def lose_script(self, source: str, times: int = 1) -> None:
        """Lose the replies of the first ``times`` runs of the script ``source``."""
        sha = script_sha(source)
        self.lose(lambda request: request[0].upper() == b"EVALSHA" and request[1] == sha, times)

    def _should_lose(self, request: list[bytes]) -> bool:
        with self._lock:
            self.seen[request[0].decode(errors="replace").lower()] += 1
            for rule in self._rules:
                if rule[1] > 0 and rule[0](request):
                    rule[1] -= 1
                    self.lost += 1
                    return True
        return False

    def __enter__(self) -> LosingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped = True
        self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._sockets |= {client, server}
            losing = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, losing), daemon=True).start()
            threading.Thread(target=self._replies, args=(client, server, losing), daemon=True).start()

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def _requests(self, client: socket.socket, server: socket.socket, losing: threading.Event) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while (request := _request(buffer)) is not None:
                    if self._should_lose(request):
                        losing.set()  # the reply thread drops what comes back and closes both
                    server.sendall(_encode(request))
        except OSError:
            pass  # ok: a reset or closed socket ends this pump; both are closed below
        self._close(client, server)

    def _replies(self, client: socket.socket, server: socket.socket, losing: threading.Event) -> None:
        try:
            while True:
                chunk = server.recv(65536)
                if not chunk or losing.is_set():
                    break  # the server answered (so it applied the request): the answer is lost
                client.sendall(chunk)
        except OSError:
            pass  # ok: a reset or closed socket ends this pump; both are closed below
        self._close(client, server)


def _encode(request: list[bytes]) -> bytes:
    out = [b"*%d\r\n" % len(request)]
    for part in request:
        out += [b"$%d\r\n" % len(part), part, b"\r\n"]
    return b"".join(out)
