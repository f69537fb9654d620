"""The ``backends`` command, and everything only it uses.

:func:`main` runs it (the console script ``backends`` and ``python -m backends``). The parts:
:mod:`~backends.cli.command` (the parser, ``main``, the exit statuses),
:mod:`~backends.cli.subcommands` (one function per subcommand), :mod:`~backends.cli.cp`
(``backends cp``), :mod:`~backends.cli.demo`, the status view (:mod:`~backends.cli.status`,
its page :mod:`~backends.cli.statusweb`, its arguments :mod:`~backends.cli.statusargs`) and
:mod:`~backends.cli.terminal` (every line printed escaped, ``--json`` always UTF-8 JSON).
Nothing of the library imports it but ``backends/__main__.py``.
"""

from __future__ import annotations

from .command import main

__all__ = ["main"]
