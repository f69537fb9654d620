"""Encryption at rest: AES-256-GCM (``cryptography``), with key rotation.

A value is stored as ``BKE1`` + a random 12-byte nonce + the ciphertext and
its 16-byte tag (32 bytes more than the plain value; the four bytes are also
authenticated). The first key encrypts; every key of the list is tried to
decrypt, so a store is rotated by putting a new key first, re-encrypting
(:func:`backends.reencrypt`), then dropping the old key. Data that does not
authenticate with any key (tampered, cut, written with a key no longer in
the list, another program's plain value) is a ValueError, which the backend
makes a CorruptValueError: never garbage, never the plain bytes.

No key is ever in a repr, a message, an exception chain or a pickle: a
codec holding keys refuses to be pickled (build it in each process, e.g.
with :meth:`Encrypt.from_environment`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Hashable, Iterable
from typing import Any, Final, NoReturn

from .layers import Layer

__all__ = ["KEY_VARIABLE", "Encrypt"]

MAGIC: Final = b"BKE1"
NONCE: Final = 12
TAG: Final = 16
KEY_BYTES: Final = 32
#: the environment variable URLs and the command read keys from
KEY_VARIABLE: Final = "BACKENDS_KEY"
CRYPTO_EXTRA: Final = "the encrypting codec needs cryptography: pip install 'backends[crypto]'"


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(CRYPTO_EXTRA) from exc
    return AESGCM


def _key_bytes(key: object, where: str) -> bytes:
    """A key as its 32 bytes: given as bytes, or as the URL-safe base64 text of them.

    The messages say what is wrong with the key (its type, its length),
    never any of its characters.
    """
    if isinstance(key, str):
        decoded = _canonical_base64(key)
        if decoded is None:
            raise ValueError(f"{where} is no URL-safe base64 text (Encrypt.generate_key() makes one)")
        raw = decoded
        if len(raw) != KEY_BYTES:
            raise ValueError(f"{where} decodes to {len(raw)} bytes, not {KEY_BYTES}") from None
        return raw
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        if len(raw) != KEY_BYTES:
            raise ValueError(f"{where} is {len(raw)} bytes, not {KEY_BYTES} (AES-256)")
        return raw
    raise TypeError(f"{where} is bytes (32) or their URL-safe base64 text, not {type(key).__name__}")


def _canonical_base64(text: str) -> bytes | None:
    """The bytes of ``text``, strict canonical URL-safe base64, or None.

    None rather than an exception: the caller's error must not carry the
    decoder's in its ``__context__`` (a UnicodeEncodeError holds the whole
    text of the key in its arguments).
    """
    if not text.isascii():
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    # Lax decoding would drop what follows the padding: only the canonical text is a key.
    return raw if base64.urlsafe_b64encode(raw).decode("ascii") == text else None


class Encrypt(Layer):
    """Authenticated encryption of every stored value with AES-256-GCM; see the module docstring.

    ``keys``: one key, or a list whose first key encrypts and whose every key
    decrypts. A key is 32 bytes, or their URL-safe base64 text
    (:meth:`generate_key`). TypeError/ValueError name the argument and the
    key's place in the list, never the key.
    """

    name = "aesgcm"
    never_empty = True

    def __init__(self, keys: bytes | str | Iterable[bytes | str]) -> None:
        if isinstance(keys, (bytes, bytearray, memoryview, str)):
            given: list[object] = [keys]
        elif isinstance(keys, Iterable):
            given = list(keys)
        else:
            raise TypeError(f"keys is a key or a list of keys, not {type(keys).__name__}")
        if not given:
            raise ValueError("keys is empty: the first key encrypts, so one at least")
        raw = [_key_bytes(key, f"keys[{index}]") for index, key in enumerate(given)]
        aesgcm = _aesgcm()
        self._ciphers = [aesgcm(key) for key in raw]
        # A digest of the keys tells two codecs apart (backend equality) without keeping them.
        self._fingerprint = hashlib.sha256(b"backends-encrypt\0" + b"".join(raw)).digest()

    @staticmethod
    def generate_key() -> str:
        """A new random key, as URL-safe base64 text (what ``BACKENDS_KEY`` holds)."""
        return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")

    @classmethod
    def from_environment(cls, variable: str = KEY_VARIABLE) -> Encrypt:
        """The keys of the environment variable ``variable``: base64 keys separated by commas.

        ValueError naming the variable (never its value) if it is unset,
        empty or holds a bad key.
        """
        text = os.environ.get(variable, "")
        keys = [part.strip() for part in text.split(",") if part.strip()]
        if not keys:
            raise ValueError(
                f"the environment variable {variable} holds no key: set it to one or more "
                "comma-separated keys (Encrypt.generate_key() makes one)"
            )
        try:
            return cls(keys)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{variable}: {exc}") from None

    def wrap(self, data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return MAGIC + nonce + bytes(self._ciphers[0].encrypt(nonce, data, MAGIC))

    def unwrap(self, data: bytes) -> bytes:
        if not data.startswith(MAGIC):
            raise ValueError("it is not encrypted by this codec (no BKE1 frame): a plain or foreign value")
        if len(data) < len(MAGIC) + NONCE + TAG:
            raise ValueError("its encrypted frame is cut short")
        nonce, sealed = data[len(MAGIC) : len(MAGIC) + NONCE], data[len(MAGIC) + NONCE :]
        invalid = _invalid_tag()
        for cipher in self._ciphers:
            try:
                return bytes(cipher.decrypt(nonce, sealed, MAGIC))
            except invalid:
                continue
        raise ValueError(
            f"it does not authenticate with any of the {len(self._ciphers)} keys: tampered with, "
            "cut, or encrypted with a key no longer in the list"
        )

    def identity(self) -> Hashable:
        return (type(self), self._fingerprint)

    def __repr__(self) -> str:
        return f"Encrypt(keys={len(self._ciphers)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "an Encrypt codec does not pickle (its keys would be in the pickle): build one per "
            f"process, e.g. with Encrypt.from_environment() reading {KEY_VARIABLE}"
        )


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag
