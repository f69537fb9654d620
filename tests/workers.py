"""Running the worker processes of ``_worker.py`` together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["WORKER", "run_together"]

WORKER = str(Path(__file__).with_name("_worker.py"))


def run_together(argvs: list[list[str]], timeout: float = 120) -> list[tuple[Any, str]]:
    """Start one worker per argument list, tell them all to go at once (a line on stdin);
    the JSON each printed, and its stderr. A worker that fails fails the test."""
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        reports.append((json.loads(out), err))
    return reports
