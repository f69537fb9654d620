"""The key of a call: the function's name, its version and its arguments, by one stable rule.

A key is ``<prefix><module>.<qualname>/v<version>/<arguments>``. The
arguments are bound to the function's signature (``f(1, b=2)`` and
``f(1, 2)`` are one call; defaults are applied), the first parameter is
left out when it is named ``self`` or ``cls`` (a method's instance or
class), and the rest is written as canonical JSON: an object of parameter
names, sorted, compact, ASCII only (every other character, a lone
surrogate too, as its ``\\u`` escape), ``/`` written ``\\/`` and DEL
``\\u007f``, so the part is one key segment on every store. Only JSON
values are arguments: ``None``, ``bool``, ``int``, finite ``float``,
``str``, lists and tuples (one form: a tuple is its list), and dicts with
``str`` keys; never ``hash()`` or ``repr()`` of an object, which change
between runs. A part longer than
:data:`LONGEST_ARGUMENTS` bytes becomes ``sha256-`` and its 64 hex digits.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Callable
from typing import Any, Final

from ..errors import BackendError, InvalidKeyError
from ..keys import key_problem

__all__ = ["LONGEST_ARGUMENTS", "CacheKeyError", "KeyRule"]

#: the longest argument part kept as written (bytes); a longer one is a digest: every
#: segment then stays under the 255 bytes of a file name and of SeaweedFS's segments
LONGEST_ARGUMENTS: Final = 200

_ATOMS: Final = (str, int, float, type(None))
#: the canonical JSON of the arguments (one encoder: json.dumps with options would make one per call)
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


class CacheKeyError(BackendError, TypeError):
    """An argument has no key form (not a JSON value); names the parameter and type, never the value."""


class KeyRule:
    """How the calls of one function become keys."""

    def __init__(
        self,
        function: Callable[..., Any],
        prefix: str,
        version: int | str,
        key: Callable[..., str] | None,
    ) -> None:
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters)
        self.skip = parameters[0] if parameters and parameters[0] in ("self", "cls") else None
        # A callable object is named by its class (two of them share keys: pass prefix= or version=).
        qualname = getattr(function, "__qualname__", type(function).__qualname__)
        self.name = f"{function.__module__}.{qualname}"
        self.head = f"{prefix}{self.name}/v{version}/"
        problem = key_problem(self.head + "x")
        if problem is not None:
            raise ValueError(
                f"prefix, the function's name and version make no valid key ({problem}): {self.head!r}"
            )
        self.custom = key
        # The common signature (plain parameters only) is bound without inspect's bind(): a hit is hot.
        plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self._simple = all(p.kind is plain for p in self.signature.parameters.values())
        self._names = tuple(parameters)
        self._defaults = {
            name: p.default for name, p in self.signature.parameters.items() if p.default is not p.empty
        }

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.custom is not None:
            return self._custom(args, kwargs)
        arguments = self._bound(args, kwargs)
        if self.skip is not None:
            del arguments[self.skip]
        for name, value in arguments.items():
            kind = type(value)
            if kind is str or kind is bool or value is None or (kind is int and value.bit_length() < 64):
                continue  # the common arguments: a JSON value as they are
            _check_json(value, name, self.name)
        text = _CANONICAL.encode(arguments)
        if "/" in text:  # (DEL is escaped by ensure_ascii already: it is outside " "-"~")
            text = text.replace("/", "\\/")
        if len(text) > LONGEST_ARGUMENTS:
            text = "sha256-" + hashlib.sha256(text.encode("ascii")).hexdigest()
        return self.head + text

    def _bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by parameter name, defaults applied; TypeError as the call itself would raise."""
        names = self._names
        if not kwargs and len(args) == len(names) and self._simple:
            return dict(zip(names, args, strict=True))  # every parameter given by position
        if self._simple and len(args) <= len(names):
            arguments = dict(zip(names, args, strict=False))  # the rest: by name or default
            given = all(name in arguments or name in kwargs or name in self._defaults for name in names)
            if given and not any(name in arguments or name not in names for name in kwargs):
                arguments.update(kwargs)
                for name, default in self._defaults.items():
                    arguments.setdefault(name, default)
                return arguments
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def _custom(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        assert self.custom is not None
        part = self.custom(*args, **kwargs)
        if not isinstance(part, str):
            raise TypeError(f"key= of {self.name} returns a str, not {type(part).__name__}")
        full = self.head + part
        problem = key_problem(full)
        if problem is not None:
            # The key may hold the arguments (data): its length, never its text.
            raise InvalidKeyError(
                f"key= of {self.name} gave no valid key ({problem}; {len(part)} characters)",
                operation="cached",
            )
        return full


#: ints of fewer bits always have a decimal form (Python refuses over 4300 digits by default)
_LONGEST_INT_BITS: Final = 14_000


def _writable(number: int) -> bool:
    try:
        int.__repr__(number)
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return False
    return True


def _check_json(value: Any, path: str, function: str) -> None:
    """Raise CacheKeyError naming ``path`` unless ``value`` is a JSON value (finite floats, str keys)."""
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if depth > 100:
            raise CacheKeyError(f"argument {where} of {function} nests deeper than 100", operation="cached")
        if isinstance(item, _ATOMS):
            if isinstance(item, float) and not math.isfinite(item):
                raise CacheKeyError(
                    f"argument {where} of {function} is a float that is not finite (no JSON form)",
                    operation="cached",
                )
            if isinstance(item, int) and item.bit_length() > _LONGEST_INT_BITS and not _writable(item):
                raise CacheKeyError(
                    f"argument {where} of {function} is an int of more digits than Python writes "
                    "(sys.get_int_max_str_digits()): pass key=",
                    operation="cached",
                )
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", inner, depth + 1) for i, inner in enumerate(item))
        elif isinstance(item, dict):
            for name, inner in item.items():
                if not isinstance(name, str):
                    raise CacheKeyError(
                        f"argument {where} of {function} is a dict with a {type(name).__name__} key "
                        "(JSON objects have str keys): pass key=",
                        operation="cached",
                    )
                stack.append((f"{where}[...]", inner, depth + 1))  # a dict's keys are data: never named
        else:
            raise CacheKeyError(
                f"argument {where} of {function} is a {type(item).__name__}, which has no key form "
                "(JSON values only: None, bool, int, float, str, list, tuple, dict): pass key=",
                operation="cached",
            )
