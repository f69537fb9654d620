"""The public API's types, as a user's mypy sees them (tests/typing/public_api.py)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent


def test_values_are_typed_by_the_family_and_backend_takes_one_parameter() -> None:
    # --strict: an unused "type: ignore" is an error too, so the line that
    # must not type-check (bytes values passed as str ones) is checked as well.
    out, err, status = api.run(
        ["--strict", "--python-version", "3.10", str(HERE / "typing" / "public_api.py")]
    )
    assert status == 0, out + err
