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

from .families import Codec, JsonCodec

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
        try:
            data = self._to_data(value)
            self._from_data(data)  # what the next load will do, so a write never stores what it refuses
        except ValueError as exc:
            raise self._invalid(exc) from None
        return _JSON.encode(data)

    def decode(self, data: bytes) -> M:
        parsed = _JSON.decode(data)
        try:
            return self._from_data(parsed)  # type: ignore[no-any-return]
        except ValueError as exc:
            raise self._invalid(exc) from None

    def _invalid(self, exc: ValueError) -> ValueError:
        return ValueError(self._problems(exc))

    def identity(self) -> Any:
        return (type(self), self.model)

    def __repr__(self) -> str:
        return f"Typed({_escaped(self.model.__qualname__, 80)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The adapters are closures: a copy (pickle, a process pool) makes its own from the model.
        return (Typed, (self.model,))


Adapter = tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[ValueError], str]]


def _adapter(model: type[Any]) -> Adapter:
    """How to turn ``model``'s instances into JSON types, back, and to say why data does not validate."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(model, pydantic.BaseModel):
        return (
            lambda value: value.model_dump(mode="json", warnings=False),
            model.model_validate,
            _pydantic_problems,
        )
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and issubclass(model, msgspec.Struct):
        return (
            msgspec.to_builtins,
            lambda data: msgspec.convert(data, model),
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
            adapter.validate_python,
            _pydantic_problems,
        )
    raise TypeError(
        "model is a pydantic v2 model, a dataclass or a msgspec Struct class, "
        f"not {_escaped(model.__qualname__, 80)}"
    )
