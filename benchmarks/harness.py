"""Rounds, rows, statistics and reports of ``python -m benchmarks``.

Every contender of one piece of work is measured once per round, the
rounds interleaved (the order rotates each round), so drift on a shared
machine falls on all of them alike. A row keeps every round's figure; the
report gives the median with min-max, the ratio to the physical limit
measured in the same run, and to the best peer.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["LIMIT", "OURS", "PEER", "Bench", "Row", "cpu_of", "machine"]

#: what a contender is: the physical limit, one of ours, or a peer library
LIMIT, OURS, PEER = "limit", "ours", "peer"
#: units where more is better (everything else: less is better)
HIGHER_IS_BETTER = frozenset({"keys/s", "MiB/s"})


@dataclass
class Row:
    section: str
    work: str
    who: str
    kind: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


class Bench:
    """The rows of one run, filled section by section."""

    def __init__(self, rounds: int, quick: bool) -> None:
        self.rounds = rounds
        self.quick = quick
        self.rows: list[Row] = []
        self.missing: dict[str, str] = {}
        self.notes: list[str] = []
        #: when each section kept from an earlier report was measured (see :meth:`merge`)
        self.measured: dict[str, str] = {}
        self._started = time.perf_counter()

    def row(self, section: str, work: str, who: str, kind: str, unit: str) -> Row:
        for row in self.rows:
            if (row.section, row.work, row.who) == (section, work, who):
                return row
        made = Row(section, work, who, kind, unit)
        self.rows.append(made)
        return made

    def compare(
        self,
        section: str,
        work: str,
        unit: str,
        contenders: dict[str, tuple[str, Callable[[int], float]]],
        rounds: int | None = None,
    ) -> None:
        """Measure each contender ``(kind, measure)`` once per round, rounds interleaved.

        ``measure(round)`` runs the work once and returns its figure in ``unit``.
        """
        names = list(contenders)
        count = rounds or self.rounds
        elapsed = time.perf_counter() - self._started
        print(f"  [{elapsed:4.0f} s] {section}: {work} ({len(names)} x {count} rounds)", flush=True)
        for turn in range(count):
            order = names[turn % len(names) :] + names[: turn % len(names)]
            for who in order:
                kind, measure = contenders[who]
                self.row(section, work, who, kind, unit).values.append(_quiet(measure, turn))

    def merge(self, path: Path) -> None:
        """Keep the rows of ``path`` (an earlier report) for the sections this run did not measure."""
        earlier = json.loads(path.read_text())
        measured = {row.section for row in self.rows}
        kept = [row for row in earlier["rows"] if row["section"] not in measured]
        fields = ("section", "work", "who", "kind", "unit", "values")
        self.rows = [Row(**{name: row[name] for name in fields}) for row in kept] + self.rows
        self.missing = {**earlier.get("missing", {}), **self.missing}
        self.notes = [
            note for note in earlier.get("notes", []) if note.split(":")[0] not in measured
        ] + self.notes
        when = earlier.get("measured") or {}
        self.measured = {row["section"]: when.get(row["section"], earlier["date"]) for row in kept}

    def lacking(self, peer: str, reason: str) -> None:
        """A peer that could not be measured, and why (reported, never silently left out)."""
        self.missing[peer] = reason
        print(f"  (missing: {peer}: {reason})", flush=True)

    # -- reports ------------------------------------------------------------------------

    def ratios(self, row: Row) -> tuple[float | None, float | None]:
        """``row`` against the limit and against the best peer of its work (>1: slower/worse)."""
        same = [other for other in self.rows if (other.section, other.work) == (row.section, row.work)]
        higher = row.unit in HIGHER_IS_BETTER

        def against(other: Row) -> float | None:
            if not (other.median and row.median):
                return None  # a figure of 0 (no memory, no CPU seen): no ratio
            return other.median / row.median if higher else row.median / other.median

        limits = [other for other in same if other.kind == LIMIT]
        peers = [other for other in same if other.kind == PEER]
        best_peer = (max if higher else min)(peers, key=lambda other: other.median) if peers else None
        limit = against(limits[0]) if limits and limits[0] is not row else None
        peer = against(best_peer) if best_peer is not None and best_peer is not row else None
        return limit, peer

    def as_json(self) -> dict[str, Any]:
        now = _now()
        rows = []
        for row in self.rows:
            to_limit, to_peer = self.ratios(row)
            rows.append({**asdict(row), "median": row.median, "to_limit": to_limit, "to_best_peer": to_peer})
        return {
            "date": _now(),
            "measured": {
                section: self.measured.get(section, now)
                for section in dict.fromkeys(r.section for r in self.rows)
            },
            "machine": machine(),
            "quick": self.quick,
            "rounds": self.rounds,
            "seconds": round(time.perf_counter() - self._started, 1),
            "versions": versions(),
            "missing": self.missing,
            "notes": self.notes,
            "rows": rows,
        }

    def as_markdown(self) -> str:
        report = self.as_json()
        lines = [
            f"Measured {report['date']} on {report['machine']} "
            f"({'--quick' if self.quick else 'full run'}, {self.rounds} interleaved rounds, "
            f"{self._took(report)}). Median (min-max); x limit: the median over the physical "
            "limit measured in the same run; x best peer: over the best peer library "
            "(below 1: ahead of it).",
            "",
        ]
        for section, rows in self._sections():
            lines += [f"**{section}**", "", "| work | who | median (min-max) | x limit | x best peer |"]
            lines.append("| --- | --- | --- | --- | --- |")
            for row in rows:
                to_limit, to_peer = self.ratios(row)
                who = f"**{row.who}**" if row.kind == OURS else row.who
                spread = f"{_num(row.median)} ({_num(min(row.values))}-{_num(max(row.values))}) {row.unit}"
                lines.append(f"| {row.work} | {who} | {spread} | {_ratio(to_limit)} | {_ratio(to_peer)} |")
            lines.append("")
        if self.missing:
            lines.append("Missing peers: " + "; ".join(f"{k} ({v})" for k, v in self.missing.items()))
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def as_rst(self) -> str:
        """The same tables for README.rst (a ``csv-table`` per section)."""
        report = self.as_json()
        lines = [
            f"Measured {report['date'][:10]} on {report['machine']} "
            f"({'--quick' if self.quick else 'the full run'}, {self.rounds} interleaved rounds, "
            f"{self._took(report)}). Ours in bold.",
            "",
        ]
        for section, rows in self._sections():
            lines += [
                f".. csv-table:: {section}",
                '   :header: "work", "who", "median (min-max)", "x limit", "x best peer"',
                "",
            ]
            for row in rows:
                to_limit, to_peer = self.ratios(row)
                who = f"**{row.who}**" if row.kind == OURS else row.who
                spread = f"{_num(row.median)} ({_num(min(row.values))}-{_num(max(row.values))}) {row.unit}"
                cells = [row.work, who, spread, _ratio(to_limit), _ratio(to_peer)]
                lines.append("   " + ", ".join(f'"{cell}"' for cell in cells))
            lines.append("")
        if self.missing:
            lines.append("Missing peers: " + "; ".join(f"{k} ({v})" for k, v in self.missing.items()))
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def _took(self, report: dict[str, Any]) -> str:
        if not self.measured:
            return f"{report['seconds']:.0f} s"
        kept = ", ".join(f"{section} ({when})" for section, when in self.measured.items())
        return f"{report['seconds']:.0f} s for the sections measured now; kept from earlier runs: {kept}"

    def _sections(self) -> Iterator[tuple[str, list[Row]]]:
        """Each section's rows, grouped by work in the order the works were met."""
        for section in dict.fromkeys(row.section for row in self.rows):
            in_section = [row for row in self.rows if row.section == section]
            works = list(dict.fromkeys(row.work for row in in_section))
            yield section, sorted(in_section, key=lambda row: works.index(row.work))

    def write(self, folder: Path) -> list[Path]:
        """``quick|full`` ``.json``, ``.md`` and ``.rst`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = "quick" if self.quick else "full"
        written = {
            "json": json.dumps(self.as_json(), indent=1) + "\n",
            "md": self.as_markdown(),
            "rst": self.as_rst(),
        }
        paths = []
        for suffix, text in written.items():
            path = folder / f"{stem}.{suffix}"
            path.write_text(text)
            paths.append(path)
        return paths


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _quiet(measure: Callable[[int], float], turn: int) -> float:
    """``measure(turn)`` with the garbage collector off (as timeit does): a collection of
    what another contender left would land on whoever runs next."""
    gc.collect()
    gc.disable()
    try:
        return measure(turn)
    finally:
        gc.enable()


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


@contextmanager
def cpu_of(pid: int | None = None) -> Iterator[list[float]]:
    """CPU seconds spent inside the block: this process's (``pid=None``) or another's."""
    spent: list[float] = []
    start = _cpu(pid)
    try:
        yield spent
    finally:
        spent.append(_cpu(pid) - start)


def _cpu(pid: int | None) -> float:
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    return (
        f"{cores} cores {model or platform.machine()}, Python {sys.version.split()[0]}, {platform.system()}"
    )


def versions() -> dict[str, str]:
    found = {}
    for name in ("boto3", "obstore", "redis", "diskcache", "fsspec", "s3fs", "minimalkv", "moto"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found
