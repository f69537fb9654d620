"""The ``backends`` command: look into and move data between any of the stores.

Every subcommand takes backend URLs (:mod:`backends.urls`). A user error
(a bad URL, a missing key, an unreachable store) prints one line to stderr
and exits 1, as does a name that is not a key (a stray) met by ``ls`` or
``cp``; a usage error (an unknown option, a count or a number out of range)
exits 2, as argparse does, and so does a write into a read-only URL
(``?readonly=1``: ``put``, ``rm``, ``purge``, ``cp`` into it), refused
before anything is written; a closed output (``| head``) stops the command
quietly with 141, as a GNU tool killed by SIGPIPE. Every line printed goes
through :func:`backends.cli.terminal.printable`, every ``--json`` document
through :func:`backends.cli.terminal.json_text`.

Here: the parser (its argument types refuse a bad value before any store is opened),
:func:`main` and the exit statuses; the subcommands are :mod:`backends.cli.subcommands`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import BackendError, BucketNotFoundError, ReadOnlyError
from ..s3.connection import MAX_EXPIRES
from ..s3.errors import CREATE_HINT
from ..s3.url import as_endpoint
from .statusargs import add_status_command
from .subcommands import (
    S3_OPTIONS,
    UserError,
    cmd_cp,
    cmd_demo,
    cmd_get,
    cmd_ls,
    cmd_purge,
    cmd_put,
    cmd_rm,
    cmd_stat,
    cmd_url,
    reaches_s3,
)
from .terminal import printable, warn

__all__ = ["CLOSED_OUTPUT", "main"]

#: the exit status of a command whose output was closed (``| head``): 128 + SIGPIPE, as a shell
#: reports a GNU tool the signal stopped
CLOSED_OUTPUT = 141


# -- the parser ---------------------------------------------------------------------------


def _endpoint(text: str) -> str:
    """``--endpoint-url``: an http(s) URL with a host and a valid port."""
    try:
        return as_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _prefix(text: str) -> str:
    """``--prefix``: any text a key can start with (no control character, UTF-8)."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise argparse.ArgumentTypeError("a prefix holds no control character (no key does)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("a prefix is UTF-8 text (no key holds other bytes)") from None
    return text


def _count(text: str) -> int:
    """``--keys``: a whole number from 1 to 100,000."""
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else 0
    if not 1 <= number <= 100_000:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to 100000, not {printable(text)!r}")
    return number


def _seconds(text: str) -> float:
    """``--expires``: seconds from 1 to 7 days (SigV4's longest)."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 1 <= number <= MAX_EXPIRES:  # NaN compares false
        raise argparse.ArgumentTypeError(
            f"expires is seconds from 1 to {MAX_EXPIRES} (7 days, SigV4), not {printable(text)!r}"
        )
    return number


URL_HELP = "a backend URL: memory://, file:///path or a path, s3://bucket/prefix, cache:///path[::ORIGIN]"


def _global_options(suppress: bool) -> _Parser:
    """--json and the S3 options, taken before the subcommand and after it.

    After it they default to SUPPRESS, so a subcommand never resets what was given before it.
    """
    options = _Parser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    options.add_argument("--json", action="store_true", help="machine-readable output", **default)
    s3 = options.add_argument_group("S3 (as aws-cli takes them; for s3:// URLs and tiers in front of S3)")
    s3.add_argument(
        "--endpoint-url", metavar="URL", type=_endpoint, help="an S3-compatible endpoint", **default
    )
    s3.add_argument("--region", help="the bucket's region", **default)
    s3.add_argument("--profile", help="a profile of ~/.aws/config", **default)
    return options


class _Parser(argparse.ArgumentParser):
    """argparse, whose messages repeat what was typed: escaped, as every line printed."""

    def error(self, message: str) -> Any:
        return super().error(printable(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="backends",
        description="Look into and move data between key-value stores: memory, local disk, S3, Redis.",
        epilog="URLs take ?format=json|text|raw and the backends' options, e.g. "
        "s3://bucket/app?region=eu-west-1&endpoint_url=http://127.0.0.1:9000. "
        "Credentials come from the environment or a profile, never from a URL.",
        parents=[_global_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"backends {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    after = _global_options(suppress=True)

    def command(name: str, help: str, run: Any, *arguments: tuple[tuple[str, ...], dict[str, Any]]) -> Any:
        sub = commands.add_parser(name, help=help, description=help, parents=[after])
        for flags, settings in arguments:
            sub.add_argument(*flags, **settings)
        sub.set_defaults(run=run)
        return sub

    url = (("url",), {"help": URL_HELP})
    key: tuple[tuple[str, ...], dict[str, Any]] = (("key",), {})
    prefix = (("--prefix",), {"default": "", "type": _prefix, "help": "only the keys starting with this"})
    command(
        "ls",
        "list the keys of a store, sorted",
        cmd_ls,
        url,
        prefix,
        (("-l", "--long"), {"action": "store_true", "help": "with size and date"}),
    )
    command(
        "get",
        "print a value (or write it to a file)",
        cmd_get,
        url,
        key,
        (
            ("-o", "--output"),
            {"metavar": "FILE", "help": "write the value to FILE (a raw value is streamed)"},
        ),
    )
    command(
        "put",
        "store a value: given, from a file, or from stdin (-)",
        cmd_put,
        url,
        key,
        (("value",), {"nargs": "?", "help": "the value (JSON for a json store); - reads stdin"}),
        (("--file",), {"metavar": "F", "help": "read the value from file F"}),
    )
    command("rm", "delete keys", cmd_rm, url, (("keys",), {"nargs": "+", "metavar": "KEY"}))
    command("stat", "show what the store knows of a key: size, date, ETag, ...", cmd_stat, url, key)
    command(
        "url",
        "print the URL of a value (presigned with --expires)",
        cmd_url,
        url,
        key,
        (
            ("--expires",),
            {"type": _seconds, "metavar": "S", "help": "a presigned URL valid for S seconds (S3)"},
        ),
    )
    command(
        "purge", "remove the expired entries of a cache", cmd_purge, (("url",), {"help": "a cache:// URL"})
    )
    command(
        "cp",
        "copy every key (or a prefix) from one store to another; resumable",
        cmd_cp,
        (("source",), {"help": URL_HELP}),
        (("target",), {"help": URL_HELP}),
        prefix,
        (("-q", "--quiet"), {"action": "store_true", "help": "no progress bar"}),
    )
    status = commands.add_parser(
        "status", help=STATUS_HELP, description=STATUS_HELP, parents=[_global_options(suppress=True)]
    )
    add_status_command(status)
    command(
        "demo",
        "a JsonCache in front of S3 (an in-process S3 server), and what it saved",
        cmd_demo,
        (("--keys",), {"type": _count, "default": 100, "help": "documents to write (default 100)"}),
        (("--keep",), {"action": "store_true", "help": "keep the cache folder (and S3 objects) it made"}),
    )
    return parser


STATUS_HELP = "what every process is doing: its recent events, from a Redis stream"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):  # a character the terminal cannot show is escaped, never fatal
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        args = _parser().parse_args(argv)
        return _run(args)
    except BrokenPipeError:
        if not _output_closed():
            raise
        # ``| head`` stopped reading: stop quietly, as GNU ls does, without a message or a
        # traceback (and without the flush at exit failing again).
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.dup2(devnull, sys.stderr.fileno())
        return CLOSED_OUTPUT


def _run(args: argparse.Namespace) -> int:
    try:
        _check_s3_options(args)
        try:
            status: int = args.run(args)
        except BaseException:
            _close_opened(args, failed=True)
            raise
        _close_opened(args, failed=False)
        sys.stdout.flush()  # a closed output is met here, not in the flush at exit
    except BrokenPipeError as exc:
        if _output_closed():
            raise
        warn(f"backends {args.command}: {_one_line(exc)}")
        return 1
    except ReadOnlyError as exc:
        # A write into a ?readonly=1 URL: the command contradicts its own URL, and nothing was written.
        warn(f"backends {args.command}: {_one_line(exc)}")
        return 2
    except (UserError, BackendError, ValueError, OSError, ImportError, RecursionError) as exc:
        warn(f"backends {args.command}: {_one_line(exc)}")
        return 1
    except KeyboardInterrupt:
        warn(f"backends {args.command}: interrupted")
        return 130
    return status


def _close_opened(args: argparse.Namespace, *, failed: bool) -> None:
    """Close every store the command opened, the last opened first.

    After a command that succeeded, the first error of a close is the command's error
    (the others closed still); after one that failed, the command's own error is the one
    raised and a close's error is told on stderr, never dropped.
    """
    first: BaseException | None = None
    for backend in reversed(args.__dict__.pop("opened", [])):
        try:
            backend.close()
        except Exception as exc:  # every store is closed, whatever one raised
            if failed:
                warn(f"backends {args.command}: closing {backend!r} also failed: {_one_line(exc)}")
            elif first is None:
                first = exc
    if first is not None:
        raise first


def _output_closed() -> bool:
    """Whether stdout or stderr is a pipe (or socket) nobody reads any more."""
    poll = select.poll()
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if stream is not None:
                poll.register(stream.fileno(), select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def _check_s3_options(args: argparse.Namespace) -> None:
    """Refuse --endpoint-url/--region/--profile where no URL of the command reaches S3."""
    given = [f"--{name.replace('_', '-')}" for name in S3_OPTIONS if getattr(args, name, None) is not None]
    urls = [getattr(args, name) for name in ("url", "source", "target") if hasattr(args, name)]
    if given and args.command != "demo" and not any(reaches_s3(url) for url in urls):
        if args.command == "status":
            raise UserError(f"{', '.join(given)}: status reads a Redis stream, not S3")
        raise UserError(f"{', '.join(given)}: for s3:// URLs (or a tier in front of S3); no URL here is one")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BucketNotFoundError):
        # The library's hint is for code; on the command line the option goes in the URL.
        return _one_line(Exception(str(exc).replace(CREATE_HINT, "add ?create_bucket=true to the URL")))
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, BackendError) and exc.filename:
        text = f"{exc.strerror or text}: {exc.filename}"
    return printable(" ".join(text.split()))
