"""The exception tree of ``backends``.

::

    BackendError                      every error carries the backend's safe repr and the key
    ├── InvalidKeyError (ValueError)  the key breaks the key rule; raised before any I/O
    ├── SerializationError (ValueError)  the value cannot be stored exactly; nothing written
    ├── CorruptValueError             stored bytes that cannot be decoded
    ├── StoreError (OSError)          the store failed the operation
    │   ├── StoreUnavailableError     cannot be reached, or refused after retries
    │   ├── PermissionDeniedError     access denied by the store
    │   │   └── ReadOnlyError         a write to a read-only view; refused before any I/O
    │   ├── BucketNotFoundError       the bucket (or root) does not exist
    │   └── KeyConflictError          a plain folder tree cannot hold "a" and "a/b" at once
    └── LockError
        └── LockTimeoutError (TimeoutError)

An absent key under ``backend[key]`` is a plain :class:`KeyError`, as for a dict.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BucketNotFoundError",
    "CorruptValueError",
    "InvalidKeyError",
    "KeyConflictError",
    "LockError",
    "LockTimeoutError",
    "PermissionDeniedError",
    "ReadOnlyError",
    "SerializationError",
    "StoreError",
    "StoreUnavailableError",
    "check_flag",
    "shown",
]


class BackendError(Exception):
    """Base of every error raised by a backend.

    The message reads ``<backend repr>: <operation> '<key>': <reason>``; the
    parts are kept as attributes. The original exception is ``__cause__``.
    """

    def __init__(
        self,
        reason: str,
        *,
        backend: str | None = None,
        operation: str | None = None,
        key: object = None,
    ) -> None:
        self.reason = reason
        self.backend = backend
        self.operation = operation
        self.key = key
        super().__init__(self._message())

    def _message(self) -> str:
        where = " ".join(
            part for part in (self.operation, None if self.key is None else repr(self.key)) if part
        )
        prefix = ": ".join(part for part in (self.backend, where) if part)
        return f"{prefix}: {self.reason}" if prefix else self.reason

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of
        # exceptions; errors must cross process boundaries intact.
        return (_rebuild, (type(self), self.reason, self.backend, self.operation, self.key))


def _rebuild(
    cls: type[BackendError], reason: str, backend: str | None, operation: str | None, key: object
) -> BackendError:
    return cls(reason, backend=backend, operation=operation, key=key)


class InvalidKeyError(BackendError, ValueError):
    """The key is not a valid key (raised before any I/O), or the store refuses it as too long."""


class SerializationError(BackendError, ValueError):
    """The value cannot be stored exactly by this backend; nothing was written."""


class CorruptValueError(BackendError):
    """The stored bytes cannot be decoded into a value."""


class StoreError(BackendError, OSError):
    """The store failed the operation."""

    def __str__(self) -> str:
        # OSError.__str__ would print its errno tuple instead of our message.
        return self._message()


class KeyConflictError(StoreError):
    """The store cannot hold this key next to another: a plain folder tree
    cannot have a file ``a`` and a folder ``a/`` at once."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached, or kept failing after retries."""


class PermissionDeniedError(StoreError):
    """The store denied access."""


class ReadOnlyError(PermissionDeniedError):
    """A write to a read-only view (``backend.readonly()``), refused before any I/O.

    A PermissionDeniedError, as a store's refusal of read-only credentials
    is: code that handles one handles both.
    """


class BucketNotFoundError(StoreError):
    """The bucket (or root folder) does not exist."""


class LockError(BackendError):
    """A per-key lock could not be taken or released."""


class LockTimeoutError(LockError, TimeoutError):
    """A per-key lock was not acquired within its timeout."""


#: how many characters of a caller's value a message shows
SHOWN: int = 60


def shown(value: object) -> str:
    """``value`` for an error message: its ``repr`` (control characters escaped), cut to :data:`SHOWN`.

    A whole number too long to print (Python refuses ``repr`` past 4,300
    digits) is told by its size.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * SHOWN:
        return f"a whole number of about {value.bit_length() * 30103 // 100000 + 1:,} digits"
    if isinstance(value, str):
        return repr(value) if len(value) <= SHOWN else repr(value[:SHOWN]) + "..."
    try:
        text = repr(value)
    except Exception:  # the caller's object: its own repr may raise, the error meant is ours
        return f"a {type(value).__name__} (its repr failed)"
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def check_flag(value: object, name: str) -> bool:
    """``value`` if it is True or False; else TypeError naming ``name`` (``"no"`` is no flag)."""
    if value is True or value is False:
        return value
    raise TypeError(f"{name} is True or False, not {shown(value)} ({type(value).__name__})")
