"""The ``backends`` command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="backends", description="Look into and move data between key-value stores."
    )
    parser.add_argument("--version", action="version", version=f"backends {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0
