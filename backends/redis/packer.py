"""The command packer of the pools a Redis backend makes: redis-py's requests, in fewer steps.

redis-py encodes every argument through its ``Encoder`` (a chain of
``isinstance`` checks each) and, past 6,000 bytes, sends each argument in
chunks of its own, one ``sendall`` each: a script call of 17 arguments
spent more client CPU packing than sending, and a ``load_many`` page of
1,003 arguments took some 2,000 system calls. :class:`Packer` makes the
same bytes in fewer steps; redis-py takes it as its connections'
``command_packer`` (the pools a backend makes from a URL; a ``client=``
is used as it is).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["CUTOFF", "HEADS", "Packer"]

#: an argument longer than this goes as a chunk of its own (not copied), as in redis-py
CUTOFF: Final = 6000
#: how many commands' packed names a packer keeps
HEADS: Final = 512
#: the types of command names whose packed form is kept
KEPT: Final = (str, bytes)


class Packer:
    """``pack(*args)``: the RESP request of one command, byte for byte as redis-py packs it.

    bytes go as they are, str as UTF-8, int in decimal; anything else
    (float, bytearray, memoryview, bool, a subclass) through ``encode``,
    redis-py's encoder, with its errors (``DataError`` for a bool). The
    small arguments are joined into one buffer; one over :data:`CUTOFF`, or
    a memoryview, is a chunk of its own. The first argument may hold words
    (``"CONFIG GET"``), sent apart, as redis-py does; its packed form is
    kept (for :data:`HEADS` commands: redis-py names a few dozen) when it is
    a str or bytes; any other first argument is packed each time.
    """

    __slots__ = ("_encode", "_heads", "_refused")

    def __init__(self, encode: Callable[[Any], Any]) -> None:
        self._encode = encode
        self._heads: dict[Any, tuple[int, bytes]] = {}
        self._refused: type[Exception] | None = None

    def close(self, error: type[Exception]) -> None:
        """From now on every ``pack`` raises ``error``: nothing more is sent on the pool.

        A call that waited for one of the pool's connections when its backend
        closed gets it afterwards (the call before it gives it back): it is
        refused here, before its request is sent (``error`` is one redis-py
        does not retry).
        """
        self._refused = error

    def _head(self, command: Any) -> tuple[int, bytes]:
        if isinstance(command, str):
            words = command.encode().split()
        else:  # bytes are split only at a space, as redis-py does
            words = command.split() if b" " in command else [command]
        head = len(words), b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in words)
        if len(self._heads) < HEADS and type(command) in KEPT:
            self._heads[command] = head
        return head

    def pack(self, *args: Any) -> list[Any]:
        if self._refused is not None:
            raise self._refused("the backend is closed")
        command = args[0]
        # Only a str or bytes is looked up: a memoryview equals the bytes it shows, but redis-py
        # never splits one ("CONFIG GET"), and a bytearray is no dict key at all.
        kept = self._heads.get(command) if type(command) in KEPT else None
        count, head = kept or self._head(command)
        parts = [b"*%d\r\n%s" % (count + len(args) - 1, head)]
        chunks: list[Any] = []
        encode = self._encode
        for arg in args[1:]:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode()
            elif kind is int:
                data = b"%d" % arg
            else:
                data = encode(arg)
                if isinstance(data, memoryview):
                    parts.append(b"$%d\r\n" % len(data))
                    chunks += [b"".join(parts), data]
                    parts = [b"\r\n"]
                    continue
            size = len(data)
            if size > CUTOFF:
                parts.append(b"$%d\r\n" % size)
                chunks += [b"".join(parts), data]
                parts = [b"\r\n"]
            else:
                parts.append(b"$%d\r\n%s\r\n" % (size, data))
        chunks.append(b"".join(parts))
        return chunks
