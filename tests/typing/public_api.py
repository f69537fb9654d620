"""What mypy infers from the public API: checked by tests/test_typing.py (mypy --strict), never run."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from backends import (
    Backend,
    FileSystemJsonBackend,
    FileSystemRawBackend,
    FileSystemTextBackend,
    JsonCache,
    MemoryCache,
    MemoryTextCache,
    S3TextBackend,
    TextCache,
    VolatileBackend,
)
from backends.aio import AsyncBackend

text = FileSystemTextBackend("/tmp/x")
assert_type(text.load("k"), str | None)
assert_type(text.load("k", ""), str)
assert_type(text.load("k", 0), str | int)
assert_type(text.get("k"), str | None)
assert_type(text["k"], str)
assert_type(text.pop("k"), str)
assert_type(text.pop("k", None), str | None)
assert_type(text.setdefault("k", "v"), str)
assert_type(text.load_many(["k"]), dict[str, str])
assert_type(dict(text.items()), dict[str, str])

raw = FileSystemRawBackend("/tmp/x")
assert_type(raw.load("k"), bytes | None)
assert_type(raw.load("k", b""), bytes)

assert_type(TextCache("/tmp/x").load("k"), str | None)
assert_type(MemoryTextCache().load("k"), str | None)
assert_type(S3TextBackend("bkt").load("k"), str | None)
assert_type(FileSystemJsonBackend("/tmp/x").load("k"), Any | None)
assert_type(MemoryCache().load("k"), Any | None)
assert_type(VolatileBackend().load("k"), Any | None)


def count_words(store: Backend[str]) -> int:
    """One parameter to annotate with: any backend of str values, whatever its stored form."""
    return sum(len(value.split()) for value in store.values())


count_words(text)
count_words(TextCache("/tmp/x"))
count_words(S3TextBackend("bkt"))
count_words(raw)  # type: ignore[arg-type]  # bytes values are not str values


async def twin_calls() -> None:
    """The twin takes every option of the sync call (its dump passes ``timeout``, ``if_match``... on)."""
    twin = JsonCache("/tmp/x", timeout=300).aio()
    assert_type(twin, AsyncBackend[Any])
    assert_type(await twin.dump("k", 1, timeout=30), bool)
    assert_type(await twin.dump("k", 1, if_absent=True), bool)
    assert_type(await S3TextBackend("bkt").aio().dump("k", "v", if_match='"etag"'), bool)
    assert_type(await text.aio().load("k"), str | None)
    assert_type(await text.aio().load_many(["k"]), dict[str, str])
    assert_type(twin.closed, bool)
    await twin.aclose()


# -- codecs (#27): a store given codec=Typed(Model) holds that type ----------------------

import pydantic  # noqa: E402

from backends import FileSystemBackend, Gzip, JsonCodec, SqliteBackend, Typed, Zstd  # noqa: E402
from backends.redis import RedisBackend  # noqa: E402
from backends.s3 import S3Backend  # noqa: E402


class User(pydantic.BaseModel):
    name: str


users = FileSystemBackend("/tmp/x", codec=Typed(User))
assert_type(users.load("k"), User | None)
assert_type(users["k"], User)
assert_type(users.load_many(["k"]), dict[str, User])
typed_users: Backend[User] = users
typed_users = SqliteBackend("/tmp/x.db", codec=Typed(User) | Zstd())
typed_users = S3Backend("bucket", codec=Typed(User) | Gzip())
typed_users = RedisBackend(codec=Typed(User))
assert_type(users.aio(), AsyncBackend[User])
squeezed = FileSystemJsonBackend("/tmp/x", codec=Zstd(threshold=1024) | Gzip())
assert_type(squeezed.load("k"), Any | None)
users.dump("k", User(name="a"))
users.dump("k", {"name": "a"})  # type: ignore[arg-type]
wrong: Backend[str] = FileSystemBackend("/tmp/x", codec=Typed(User))  # type: ignore[arg-type]
plain = FileSystemBackend("/tmp/x", codec=JsonCodec())
