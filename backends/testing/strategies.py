"""Hypothesis strategies for keys and values, written independently of the library.

The reference key rule is restated here, not imported, so that a change to
:mod:`backends.keys` is caught by the suite rather than followed by it.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

__all__ = [
    "INVALID_KEYS",
    "KEY_POOL",
    "circular_dict",
    "circular_list",
    "deep_list",
    "invalid_json",
    "invalid_keys",
    "invalid_raw",
    "invalid_text",
    "json_normal",
    "json_values",
    "long_keys",
    "object_values",
    "raw_normal",
    "raw_values",
    "reference_valid",
    "same",
    "segments",
    "tagged_keys",
    "text_values",
    "valid_keys",
]

MAX_KEY_BYTES = 1024

# A reference statement of the key rule, independent of backends.keys.
CONTROL = {chr(c) for c in range(0x20)} | {"\x7f"}


def reference_valid(key: object) -> bool:
    if not isinstance(key, str) or not key:
        return False
    try:
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            return False
    except UnicodeEncodeError:
        return False
    if any(c in CONTROL for c in key):
        return False
    return all(seg not in ("", ".", "..") for seg in key.split("/"))


_segment_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/")
segments = st.one_of(
    st.sampled_from(["a", "b", "users", "42", ".hidden", "...", "a+", "b=", "~t", "%41", "é", "e\u0301"]),
    st.text(_segment_chars, min_size=1, max_size=12),
    st.text("ab.%~+=", min_size=1, max_size=4),
).filter(lambda s: s not in (".", ".."))

valid_keys = st.lists(segments, min_size=1, max_size=4).map("/".join).filter(reference_valid)

# Keys that stress the filesystem layout: long segments (cut into pieces),
# the full 1024-byte length, and characters that need escaping.
long_keys = st.one_of(
    st.integers(1, 1024).map(lambda n: "x" * n),
    st.integers(1, 341).map(lambda n: "\u20ac" * n),  # 3 bytes each: 1023 bytes max
    st.builds(
        lambda a, b: f"{a}/{b}", st.text("é%", min_size=1, max_size=300), st.sampled_from(["k", "k/l"])
    ),
    # A segment cut into 200-character pieces whose last piece is dots only.
    st.builds(
        lambda folder, n, dots: folder + "x" * n + dots,
        st.sampled_from(["", "d/"]),
        st.sampled_from([198, 199, 200, 399, 400, 600]),
        st.sampled_from([".", "..", "..."]),
    ),
).filter(reference_valid)

KEY_POOL = [
    "a",
    "a/b",
    "a/b/c",
    "b",
    "\u00e9",
    "e\u0301",
    "users/42",
    "x" * 300,
    "x" * 200 + "..",
    "d/" + "x" * 400 + ".",
    "~tmp",
    ".hidden",
    "a+",
    "%41",
    "A",
]

INVALID_KEYS: list[Any] = [
    "",
    "/",
    "/a",
    "a/",
    "a//b",
    ".",
    "..",
    "./a",
    "a/.",
    "a/./b",
    "a/../b",
    "../x",
    "a/..",
    "a\x00b",
    "a\nb",
    "\x7f",
    "tab\there",
    "\ud800",
    "x" * 1025,
    "\u20ac" * 342,
    1,
    None,
    b"a",
    ("a",),
    1.5,
]
invalid_keys = st.one_of(
    st.sampled_from(INVALID_KEYS),
    st.builds(lambda k, bad: k + bad, valid_keys, st.sampled_from(["/", "/.", "/..", "\x00", "\x1f", "//x"])),
)

tagged_keys = st.one_of(
    st.sampled_from(KEY_POOL).map(lambda k: (k, True)),
    valid_keys.map(lambda k: (k, True)),
    invalid_keys.map(lambda k: (k, False)),
)

# -- values ---------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),
    max_leaves=12,
)


def circular_list() -> list[Any]:
    """A list that contains itself."""
    value: list[Any] = []
    value.append(value)
    return value


def circular_dict() -> dict[str, Any]:
    """A dict that contains itself, one level down."""
    value: dict[str, Any] = {}
    value["self"] = {"again": value}
    return value


def deep_list(depth: int) -> list[Any]:
    """Lists nested ``depth`` deep: deeper than a JSON encoder goes."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


invalid_json = st.one_of(
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            {1: "a"},
            {"a": {None: 1}},
            [{"k": math.nan}],
            {True: 1},
            {(1, 2): 3},
            b"bytes",
            {1, 2},
            object(),
        ]
    ),
    # Built per example: a strategy holding these could not print itself.
    st.builds(circular_list),
    st.builds(circular_dict),
    st.builds(deep_list, st.just(5000)),
)
text_values = st.one_of(st.text(), st.sampled_from(["a\r\nb", "\r", "\n\r\n", "caf\u00e9", "e\u0301", ""]))
invalid_text = st.sampled_from(["a\ud800b", "\udfff", 1, None, b"bytes", ["a"]])


def _view(data: bytes) -> memoryview:
    return memoryview(data)


raw_values = st.one_of(st.binary(), st.binary().map(bytearray), st.binary().map(_view))
invalid_raw = st.sampled_from(["str", 1, None, [1, 2], {"a": 1}])
object_values = st.one_of(json_values, st.builds(object), st.frozensets(st.integers(), max_size=3))


def json_normal(value: Any) -> Any:
    """What a JSON backend gives back for ``value``: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [json_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: json_normal(v) for k, v in value.items()}
    return value


def raw_normal(value: Any) -> bytes:
    return bytes(value)


def same(left: Any, right: Any) -> bool:
    """Equal with the same types all the way down (1, 1.0 and True differ)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return math.copysign(1, left) == math.copysign(1, right) and left == right
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    return bool(left == right)
