"""The harness of ``python -m benchmarks``: interleaved rounds, ratios, and its three reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import LIMIT, OURS, PEER, Bench


def test_rounds_interleave_and_ratios_compare_medians(tmp_path: Path) -> None:
    bench = Bench(rounds=3, quick=True)
    order: list[str] = []
    figures = {"raw": [10.0, 10.0, 12.0], "ours": [11.0, 13.0, 12.0], "peer": [22.0, 20.0, 24.0]}

    def measure(who: str) -> object:
        def run(turn: int) -> float:
            order.append(who)
            return figures[who][turn]

        return run

    kinds = {"raw": LIMIT, "ours": OURS, "peer": PEER}
    bench.compare("section", "load", "us", {who: (kind, measure(who)) for who, kind in kinds.items()})
    assert order == ["raw", "ours", "peer", "ours", "peer", "raw", "peer", "raw", "ours"]  # rotated
    ours = next(row for row in bench.rows if row.who == "ours")
    assert ours.median == 12.0 and bench.ratios(ours) == (pytest.approx(1.2), pytest.approx(12 / 22))
    bench.compare(
        "section", "bulk", "keys/s", {"ours": (OURS, lambda t: 300.0), "peer": (PEER, lambda t: 100.0)}
    )
    assert bench.ratios(bench.rows[-2]) == (None, pytest.approx(1 / 3))  # more is better: below 1, ahead
    bench.lacking("s3fs", "not installed")
    written = {path.suffix: path for path in bench.write(tmp_path)}
    report = json.loads(written[".json"].read_text())
    assert report["missing"] == {"s3fs": "not installed"} and len(report["rows"]) == 5
    assert "| load | **ours** | 12.0 (11.0-13.0) us | 1.20x | 0.55x |" in written[".md"].read_text()
    assert '"load", "**ours**", "12.0 (11.0-13.0) us", "1.20x", "0.55x"' in written[".rst"].read_text()


def test_a_section_measured_again_replaces_only_its_rows(tmp_path: Path) -> None:
    first = Bench(rounds=1, quick=True)
    first.compare("a", "load", "us", {"ours": (OURS, lambda t: 1.0)})
    first.compare("b", "load", "us", {"ours": (OURS, lambda t: 2.0)})
    first.write(tmp_path)
    again = Bench(rounds=1, quick=True)
    again.compare("b", "load", "us", {"ours": (OURS, lambda t: 3.0)})
    again.merge(tmp_path / "quick.json")
    assert [(row.section, row.values) for row in again.rows] == [("a", [1.0]), ("b", [3.0])]
    assert set(again.measured) == {"a"} and "kept from earlier runs: a (" in again.as_markdown()
