"""Typed values: pydantic v2 models, dataclasses and msgspec structs, stored as strict JSON.

``Typed(User)`` is a ``Codec[User, bytes]``: ``FileSystemBackend(root,
codec=Typed(User))`` is a ``Backend[User]`` for mypy, and loads give back
``User`` instances. Both sides are validated: a write takes an instance of
the model only, dumps it to JSON types, validates that data back into the
model (a value the next load would refuse is refused now, with
SerializationError) and stores it with :class:`~backends.codecs.JsonCodec`'s
rules (no NaN: pydantic and msgspec would write ``null`` for one). A load
parses strict JSON and validates it; data that does not validate is a
CorruptValueError. Messages name the fields and the rule broken, never the
value (an encrypted store's plain text stays out of logs), with control
characters escaped.

Pydantic models and dataclasses are validated by pydantic (a dataclass
through ``pydantic.TypeAdapter``: the ``[pydantic]`` extra), msgspec structs
by msgspec (``[msgspec]``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

from .families import Codec, JsonCodec, inflated

__all__ = ["Typed"]

M = TypeVar("M")

PYDANTIC_EXTRA: Final = "typed dataclasses are validated by pydantic: pip install 'backends[pydantic]'"
#: the validation problems a message names (the rest are counted)
SHOWN: Final = 5
_JSON = JsonCodec()


def _escaped(text: str, limit: int = 200) -> str:
    """``text`` on one line: control characters and lone surrogates as escapes, cut at ``limit``."""
    shown = repr(text)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _pydantic_problems(exc: Any) -> str:
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    parts = [
        f"{'.'.join(map(str, error['loc'])) or '(the value)'}: {error['msg']}" for error in errors[:SHOWN]
    ]
    if len(errors) > SHOWN:
        parts.append(f"and {len(errors) - SHOWN} more")
    return _escaped("; ".join(parts), 400)


class Typed(Codec[M, bytes], Generic[M]):
    """Instances of ``model`` (a pydantic v2 model, a dataclass or a msgspec Struct) as strict JSON."""

    content_type = "application/json"
    can_be_empty = False
    inflates = True

    def __init__(self, model: type[M]) -> None:
        if not isinstance(model, type):
            raise TypeError(
                "model is a class (a pydantic model, a dataclass or a msgspec Struct), "
                f"not {type(model).__name__}"
            )
        self.model = model
        self.name = f"{_escaped(model.__qualname__, 80)} JSON"
        self._to_data, self._from_data, self._problems = _adapter(model)

    def encode(self, value: M) -> bytes:
        # The exact class: a subclass's instance would load back as the model, its own fields lost.
        if type(value) is not self.model:
            raise TypeError(
                f"values are {_escaped(self.model.__qualname__, 80)} instances, "
                f"not {_escaped(type(value).__name__, 80)}"
            )
        # Each ValueError is raised outside the handler that read the validator's: that one
        # holds the value (pydantic's input_value), and would be the new one's __context__.
        try:
            data = self._to_data(value)
        except ValueError as exc:
            problems = self._problems(exc)
        else:
            stored = _JSON.encode(data)
            try:
                self._from_data(data, stored)  # what the next load does: a write never stores what it refuses
            except ValueError as exc:
                problems = self._problems(exc)
            else:
                return stored
        raise ValueError(problems)

    def decode(self, data: bytes) -> M:
        data = inflated(data)
        parsed = _JSON.decode(data)  # strict JSON first: no NaN, no infinities, UTF-8
        try:
            return self._from_data(parsed, data)  # type: ignore[no-any-return]
        except ValueError as exc:
            problems = self._problems(exc)
        raise ValueError(problems)

    def identity(self) -> Any:
        return (type(self), self.model)

    def __repr__(self) -> str:
        return f"Typed({_escaped(self.model.__qualname__, 80)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The adapters are closures: a copy (pickle, a process pool) makes its own from the model.
        return (Typed, (self.model,))


#: to JSON types; from (the parsed JSON, its text) to an instance; why a ValueError was raised
Adapter = tuple[Callable[[Any], Any], Callable[[Any, bytes], Any], Callable[[ValueError], str]]


def _python_else_json(
    python: Callable[[Any], Any], json: Callable[[bytes], Any], parsed: Any, text: bytes
) -> Any:
    """``parsed`` validated by pydantic as Python data, else ``text`` as JSON; the first error if both fail.

    A strict model takes an ISO datetime, a UUID, an enum's value or a tuple
    only in JSON mode; JSON mode alone would refuse a lone surrogate's escape,
    which the JSON codec writes. Python data that validates means the same in
    JSON, so the JSON text is parsed only when the first try fails.
    """
    try:
        return python(parsed)
    except ValueError as exc:
        first = exc
    try:
        return json(text)
    except ValueError:
        pass  # the first error names the fields as stored; JSON mode's would say the same or less
    raise first


def _adapter(model: type[Any]) -> Adapter:
    """How to turn ``model``'s instances into JSON types, back, and to say why data does not validate."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(model, pydantic.BaseModel):
        return (
            lambda value: value.model_dump(mode="json", warnings=False),
            lambda parsed, text: _python_else_json(
                model.model_validate, model.model_validate_json, parsed, text
            ),
            _pydantic_problems,
        )
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and issubclass(model, msgspec.Struct):
        return (
            msgspec.to_builtins,
            lambda data, _text: msgspec.convert(data, model),
            lambda exc: _escaped(str(exc), 400),
        )
    if dataclasses.is_dataclass(model):
        try:
            from pydantic import TypeAdapter
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise ImportError(PYDANTIC_EXTRA) from exc
        adapter = TypeAdapter(model)
        return (
            lambda value: adapter.dump_python(value, mode="json", warnings=False),
            lambda parsed, text: _python_else_json(
                adapter.validate_python, adapter.validate_json, parsed, text
            ),
            _pydantic_problems,
        )
    raise TypeError(
        "model is a pydantic v2 model, a dataclass or a msgspec Struct class, "
        f"not {_escaped(model.__qualname__, 80)}"
    )
