"""``backends status``'s arguments, each checked before any I/O, and what runs it: the view
in the terminal (:mod:`backends.cli.status`) or as a web page (:mod:`backends.cli.statusweb`)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from ..redis.streamread import DEFAULT_STREAM, MAX_COUNT, check_count, check_stream
from .status import check_status_url, check_timeout, run_status
from .statusweb import make_app, parse_address, serve
from .terminal import printable

__all__ = ["add_status_command"]


def _argument(check: Any) -> Any:
    """An argparse type from a check raising ValueError: a usage error (exit 2) with its message."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None  # never argparse's echo of the text

    parse.__name__ = check.__name__
    return parse


def _count(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", text.strip()):
        raise ValueError(f"a whole number of events from 1 to {MAX_COUNT}, not {printable(text)!r}")
    return check_count(int(text))


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"seconds: a number above 0, at most 3600, not {printable(text)!r}") from None
    return check_timeout(seconds)


def _address(text: str) -> str:
    parse_address(text)
    return text


def add_status_command(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``backends status``, and what runs it: each is checked before any I/O."""
    parser.add_argument(
        "url",
        type=_argument(check_status_url),
        help="the Redis server: redis://host:6379/0 (a password: REDISCLI_AUTH)",
    )
    parser.add_argument(
        "--stream",
        default=DEFAULT_STREAM,
        type=_argument(check_stream),
        help=f"the stream (default {DEFAULT_STREAM})",
    )
    parser.add_argument(
        "-n",
        "--count",
        type=_argument(_count),
        default=200,
        help=f"recent entries to show, 1 to {MAX_COUNT} (default 200)",
    )
    parser.add_argument("-f", "--follow", action="store_true", help="then print new events as they come")
    parser.add_argument(
        "--timeout",
        type=_argument(_seconds),
        default=10.0,
        metavar="S",
        help="seconds Redis has to answer each request (default 10; tried twice)",
    )
    parser.add_argument(
        "--serve",
        metavar="HOST:PORT",
        type=_argument(_address),
        help="serve the view as a web page instead (/status, /status.json)",
    )
    parser.set_defaults(run=lambda args: _run_command(parser, args))


def _run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.serve and args.follow:  # a usage error (exit 2), before any I/O
        parser.error("--serve and --follow: the page follows by itself; give one of them")
    if args.serve and getattr(args, "json", False):
        parser.error("--serve and --json: the page's data is at /status.json; give one of them")
    if args.serve:
        serve(make_app(args.url, stream=args.stream, count=args.count, timeout=args.timeout), args.serve)
        return 0
    return run_status(
        args.url,
        stream=args.stream,
        count=args.count,
        follow=args.follow,
        as_json=args.json,
        out=sys.stdout,
        timeout=args.timeout,
    )
