"""Text that is safe to print: one line on a terminal, and JSON that is UTF-8.

Names this program did not choose (another tool's file names, S3 object
names, hosts, messages) may hold a newline, an ESC or BEL sequence, bytes
that are not UTF-8 (held as lone surrogates by ``os.fsdecode``), or
characters that reorder a line. :func:`printable` writes each of them as a
visible escape; :func:`json_safe` makes a value that ``json.dumps`` writes as
valid UTF-8 JSON, with the same rule for the bytes that are not UTF-8.

The escapes, as Python's ``backslashreplace`` writes them:

- a byte that is not UTF-8 (U+DC80-U+DCFF, as ``surrogateescape`` holds it): ``\\xNN``;
- any other lone surrogate: ``\\udNNN``;
- a control character (C0, DEL, C1): ``\\n``, ``\\r``, ``\\t`` or ``\\xNN``;
- a line or paragraph separator, a bidirectional embedding, override or isolate: ``\\uNNNN``.

A backslash itself is left as it is, so a name holding the four characters
``\\x41`` reads the same as one holding the byte it stands for.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Final, TextIO

__all__ = ["json_safe", "json_text", "print_json", "printable", "say", "warn", "write_line"]

#: DEL, C1 controls, line and paragraph separators, bidi marks, embeddings, overrides, isolates
_ACTING: Final = "\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: what printable() escapes: those, C0 controls and lone surrogates
_UNSAFE: Final = re.compile(f"[\x00-\x1f{_ACTING}\ud800-\udfff]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: what json_safe() rewrites: the lone surrogates (JSON escapes the C0 controls itself)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
#: what json_text() writes as \\u escapes besides: the rest of what printable() escapes
_JSON_UNSAFE: Final = re.compile(f"[{_ACTING}]")


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte surrogateescape could not decode
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` on one line, every character that could act on a terminal written as an escape."""
    return _UNSAFE.sub(lambda match: _escape(match.group()), text)


def _unsurrogate(text: str) -> str:
    return _SURROGATE.sub(lambda match: _escape(match.group()), text)


def json_safe(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) escaped, so its JSON is UTF-8.

    Other characters are kept: ``json.dumps`` escapes the controls itself.
    """
    if isinstance(value, str):
        return _unsurrogate(value)
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON text that is valid UTF-8 and safe on a terminal: it decodes to
    :func:`json_safe` of ``value`` (every other character exact, some as ``\\uNNNN``)."""
    text = json.dumps(json_safe(value), indent=indent, ensure_ascii=False, default=str)
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def say(line: str = "") -> None:
    """Print one line on stdout, escaped (:func:`printable`)."""
    print(printable(line))


def warn(line: str) -> None:
    """Print one line on stderr, escaped."""
    print(printable(line), file=sys.stderr)


def write_line(out: TextIO, line: str) -> None:
    """Print ``line`` made printable, in what ``out``'s encoding can hold (else backslash escapes)."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    safe = printable(line).encode(encoding, "backslashreplace").decode(encoding)
    print(safe, file=out, flush=True)


def print_json(value: Any) -> None:
    """Print :func:`json_text` of ``value`` on stdout; ASCII (``\\u`` escapes) where stdout is not UTF-8."""
    text = json_text(value)
    if (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "") != "utf8":
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=True)
    print(text)
