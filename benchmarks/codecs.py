"""Codecs (#27): what compression, encryption and typed models cost per call, and what they save.

zstd against gzip against no codec on 1 KiB and 1 MiB of JSON (time of a
dump and a load, and the bytes stored); encryption's overhead per call;
a typed load against a raw JSON load followed by ``model_validate``; and
what a codec costs on a tier hit (the cache decodes what it holds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pydantic

from backends import Encrypt, Gzip, JsonCodec, MemoryCache, TieredBackend, Typed, VolatileBackend, Zstd

from .harness import LIMIT, OURS, Bench

__all__ = ["codecs_section"]

SECTION = "codecs"
#: 1 KiB of JSON, as the local section's documents
DOC: dict[str, Any] = {"id": 42, "name": "Ada Lovelace", "tags": ["math", "engines"], "bio": "x" * 940}


class User(pydantic.BaseModel):
    id: int
    name: str
    tags: list[str]
    bio: str


def _mib_doc() -> dict[str, Any]:
    """About 1 MiB of JSON rows, as an API or a log gives (repetitive, as real data is)."""
    rows = [
        {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 3 == 0}
        for i in range(14_000)
    ]
    return {"rows": rows}


def _per_call(calls: int, action: Callable[[int], object]) -> Callable[[int], float]:
    def measure(_: int) -> float:
        start = time.perf_counter()
        for i in range(calls):
            action(i)
        return (time.perf_counter() - start) / calls * 1e6

    return measure


def _round_trip(codec: Any, value: Any, calls: int) -> Callable[[int], float]:
    store = VolatileBackend(codec=codec)

    def both(i: int) -> None:
        store.dump("k", value)
        store.load("k")

    return _per_call(calls, both)


def codecs_section(bench: Bench, quick: bool) -> None:
    """Every figure of the section; ``quick``: fewer calls."""
    layers: dict[str, Any] = {
        "json (no codec)": JsonCodec(),
        "json | zstd": JsonCodec() | Zstd(threshold=0),
        "json | gzip": JsonCodec() | Gzip(threshold=0),
    }
    for label, value, calls in (
        ("1 KiB JSON", DOC, 300 if quick else 3000),
        ("1 MiB JSON", _mib_doc(), 3 if quick else 20),
    ):
        contenders = {
            who: (LIMIT if who.startswith("json (") else OURS, _round_trip(codec, value, calls))
            for who, codec in layers.items()
        }
        bench.compare(SECTION, f"dump + load, {label}", "us", contenders)
        for who, codec in layers.items():
            kind = LIMIT if who.startswith("json (") else OURS
            bench.row(SECTION, f"stored bytes, {label}", who, kind, "bytes").values.append(
                len(codec.encode(value))
            )
    calls = 500 if quick else 5000
    sealed = {"json (no codec)": JsonCodec(), "json | aes-gcm": JsonCodec() | Encrypt(Encrypt.generate_key())}
    bench.compare(
        SECTION,
        "dump + load, 1 KiB JSON, encrypted",
        "us",
        {
            who: (LIMIT if who.startswith("json (") else OURS, _round_trip(c, DOC, calls))
            for who, c in sealed.items()
        },
    )
    _typed(bench, calls)
    _tier_hits(bench, calls)


def _typed(bench: Bench, calls: int) -> None:
    raw, typed = VolatileBackend(codec=JsonCodec()), VolatileBackend(codec=Typed(User))
    raw["k"] = DOC
    typed["k"] = User(**DOC)
    bench.compare(
        SECTION,
        "load a pydantic model, 1 KiB",
        "us",
        {
            "raw JSON load + model_validate": (
                LIMIT,
                _per_call(calls, lambda i: User.model_validate(raw["k"])),
            ),
            "Typed(User) load": (OURS, _per_call(calls, lambda i: typed["k"])),
        },
    )


def _tier_hits(bench: Bench, calls: int) -> None:
    contenders = {}
    for who, layer in (
        ("no codec", None),
        ("zstd", Zstd(threshold=0)),
        ("aes-gcm", Encrypt(Encrypt.generate_key())),
    ):
        tier = TieredBackend(MemoryCache(timeout=None, codec=layer), VolatileBackend(codec=JsonCodec()))
        tier["k"] = DOC
        tier["k"]
        contenders[f"tier hit, cache {who}"] = (
            LIMIT if layer is None else OURS,
            _per_call(calls, lambda i, t=tier: t["k"]),
        )
    bench.compare(SECTION, "tier hit, 1 KiB JSON (memory cache)", "us", contenders)
