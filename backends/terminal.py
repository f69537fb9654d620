"""Text for a terminal: what another program wrote, shown on one line and never obeyed.

A key, a host or a detail may hold ESC or BEL sequences (which retitle,
recolour or clear a terminal), newlines (a forged line of output), bidi
overrides (text that reads in another order than it is), bytes that are no
UTF-8 (``surrogateescape``'d by Python) or lone surrogates (which no
encoder takes). :func:`printable` turns each into a visible escape.
"""

from __future__ import annotations

import re
from typing import Final, TextIO

__all__ = ["printable", "write_line"]

#: escaped: C0 controls, DEL, C1 controls, surrogates, line and paragraph separators, bidi controls
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was no UTF-8, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` on one line with every control character escaped (``\\n``, ``\\x1b``, ``\\u202e``...).

    A byte that was no UTF-8 (kept as ``surrogateescape`` does) shows as
    ``\\xNN``, another lone surrogate as ``\\udNNN``. Backslashes are left as
    they are: the line stays readable, and ``--json`` tells the two apart.
    """
    return _UNSAFE.sub(_escape, text)


def write_line(out: TextIO, line: str) -> None:
    """Print ``line`` made printable, in what ``out``'s encoding can hold (else backslash escapes)."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    safe = printable(line).encode(encoding, "backslashreplace").decode(encoding)
    print(safe, file=out, flush=True)
