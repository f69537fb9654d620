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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..base import MISSING, BaseBackend
from ..errors import BackendError, BucketNotFoundError, CorruptValueError, ReadOnlyError, SerializationError
from ..info import Stat, SupportsExpiry, SupportsStat, SupportsStatMany, SupportsUrl
from ..s3.connection import MAX_EXPIRES
from ..s3.errors import CREATE_HINT
from ..s3.url import as_endpoint
from ..transfers import FileTransfers
from ..urls import open_url
from .cp import run_copy, strays
from .statusargs import add_status_command
from .terminal import print_json, printable, say, warn

__all__ = ["main"]

#: the options that reach S3, taken on every command that can (as aws-cli does)
S3_OPTIONS = ("endpoint_url", "region", "profile")


class _UserError(Exception):
    """A failure to report in one line, without a traceback."""


#: the exit status of a command whose output was closed (``| head``): 128 + SIGPIPE, as a shell
#: reports a GNU tool the signal stopped
CLOSED_OUTPUT = 141


def _reaches_s3(url: str) -> bool:
    """Whether ``url`` is S3, or a tier whose origin is."""
    return url.rsplit("::", 1)[-1].startswith("s3://")


def _open(url: str, args: argparse.Namespace, **options: Any) -> BaseBackend[Any, Any]:
    """The backend of ``url``, with the command's --endpoint-url/--region/--profile if it reaches S3."""
    if _reaches_s3(url):
        options.update(
            {name: value for name in S3_OPTIONS if (value := getattr(args, name, None)) is not None}
        )
    return open_url(url, **options)


# -- values in and out --------------------------------------------------------------------


def _family(backend: BaseBackend[Any, Any]) -> str:
    return backend.codec.name


def _parse(backend: BaseBackend[Any, Any], key: str, raw: bytes) -> Any:
    """A value for ``backend`` from bytes given on the command line, a file or stdin."""
    family = _family(backend)
    if family == "raw":
        return raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _UserError(f"the value is not UTF-8 text ({exc.reason}); use a format=raw URL") from None
    if family == "text":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _UserError(
            f"the value is not JSON ({exc.msg} at {exc.pos}); quote a string as '\"text\"', "
            "or use a format=text URL"
        ) from None
    except RecursionError:
        # The codec's own load says CorruptValueError for such a value: it is refused before it is stored.
        raise SerializationError(
            "the value is JSON nested deeper than this program reads back; nothing was stored",
            backend=repr(backend),
            operation="dump",
            key=key,
        ) from None


def _show(backend: BaseBackend[Any, Any], value: Any) -> bytes:
    family = _family(backend)
    if family == "raw":
        return bytes(value)
    if family == "text":
        return str(value).encode("utf-8")
    try:
        return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A string with a lone surrogate is no UTF-8: \u escapes print it exactly.
        return (json.dumps(value, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat(timespec="seconds")


def _described(found: Stat) -> dict[str, Any]:
    """A :class:`Stat` as the command shows it: the fields the store told, times in ISO 8601."""
    info = {name: value for name, value in asdict(found).items() if value not in (None, {})}
    if "last_modified" in info:
        info["last_modified"] = _when(info["last_modified"])
    return info


def _stat(backend: BaseBackend[Any, Any], key: str) -> dict[str, Any] | None:
    """What the store knows of ``key``: its ``stat()`` where it has one, and when it expires."""
    info = _stat_of(backend, key)
    if info is None:
        return None
    if isinstance(backend, SupportsExpiry):
        with contextlib.suppress(KeyError):  # not in a tier's cache (or expired since)
            info["expires"] = _when(backend.expires(key)) or "never"
    return info


def _stat_of(backend: BaseBackend[Any, Any], key: str) -> dict[str, Any] | None:
    if isinstance(backend, SupportsStat):
        try:
            found = backend.stat(key)
        except NotImplementedError:
            pass  # a tier over a store without stat: the value tells its size
        else:
            return None if found is None else _described(found)
    value = backend.load(key, MISSING)
    if value is MISSING:
        return None
    return {"key": key, "size": len(backend.codec.encode(value)) if _family(backend) != "object" else None}


# -- subcommands ------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    backend = _open(args.url, args)
    keys = backend.list(args.prefix, None)  # sorted, on every store
    if not args.long:
        if args.json:
            print_json(list(keys))
        else:
            for key in keys:
                say(key)
    elif args.json:
        print_json(list(_rows(backend, args.prefix)))
    else:
        for info in _rows(backend, args.prefix):
            size = info.get("size")
            when = info.get("last_modified") or info.get("expires") or "-"
            say(f"{'-' if size is None else size:>12}  {when:25}  {info['key']}")
    count = 0
    for path, reason in strays(backend, args.prefix):  # never skipped silently: each named, and counted
        warn(f"backends ls: not listed, not a key: {path}: {reason}")
        count += 1
    if count:
        raise _UserError(f"{count} not listed, not keys (named above)")
    return 0


def _rows(backend: BaseBackend[Any, Any], prefix: str) -> Iterator[dict[str, Any]]:
    """``ls -l``: one listing tells every key's size and date where the store can (S3: the
    LIST pages, not a HEAD per key); a cache adds when each entry expires, key by key."""
    if isinstance(backend, SupportsStatMany) and not isinstance(backend, SupportsExpiry):
        yield from map(_described, backend.stat_many(prefix))
        return
    for key in backend.list(prefix, None):
        if (info := _stat(backend, key)) is not None:
            yield info


def _cmd_get(args: argparse.Namespace) -> int:
    if args.output is not None:
        _check_output(args.output)
    backend = _open(args.url, args)
    if args.output and isinstance(backend, FileTransfers):
        with _output(args.output) as out:
            if not backend.load_file(args.key, out):  # streamed into the file this command opened
                raise _UserError(f"{args.key!r} not found in {backend!r}")
        return 0
    try:
        value = backend.load(args.key, MISSING)
    except CorruptValueError as exc:
        if _family(backend) == "raw" or isinstance(exc.__cause__, RecursionError):
            raise  # too deep is no sign of a binary value
        raise _UserError(f"{exc}; if the value is binary, read it with a ?format=raw URL") from None
    if value is MISSING:
        raise _UserError(f"{args.key!r} not found in {backend!r}")
    if args.json and _family(backend) == "raw":
        raise _UserError("a raw value has no JSON form; drop --json (or write it to a file with -o)")
    data = (json.dumps(value, ensure_ascii=True) + "\n").encode() if args.json else _show(backend, value)
    if args.output:
        with _output(args.output) as out:
            out.write(data)
    else:
        sys.stdout.buffer.write(data)  # the value exactly, as cat writes a file
        sys.stdout.buffer.flush()
    return 0


def _check_output(path: str) -> None:
    """Refuse an ``-o`` that cannot be the file written, naming it, before the store is opened."""
    if os.path.isdir(path):
        raise _UserError(f"-o {path}: is a folder; name the file to write")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise _UserError(f"-o {path}: no folder {parent}")


@contextlib.contextmanager
def _output(path: str) -> Iterator[Any]:
    """A new file beside ``path`` that replaces it when the block succeeds, and is removed otherwise.

    An absent key or a failed read leaves ``path`` as it was (absent, or its old contents).
    A ``path`` that is no regular file (``/dev/stdout``, a FIFO, a device) is written into,
    never replaced; a symlink's target is replaced, not the link.
    """
    if os.path.exists(path) and not os.path.isfile(path):
        with _opened(path, "wb") as handle:
            yield handle
        return
    real = os.path.realpath(path)
    temp = os.path.join(os.path.dirname(real), f".{os.path.basename(real)}.backends-{os.getpid()}")
    try:
        with _opened(path, "xb", temp) as handle:
            yield handle
        os.replace(temp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _opened(path: str, mode: str, name: str | None = None) -> Any:
    """``open(name or path, mode)``; an OSError becomes one line naming ``-o path``."""
    try:
        return open(name or path, mode)
    except OSError as exc:
        raise _UserError(f"-o {path}: cannot write there: {exc.strerror or exc}") from None


def _cmd_put(args: argparse.Namespace) -> int:
    if args.file is not None and args.value is not None:
        raise _UserError("give the value, --file F, or - for stdin; not both")
    # The file is opened before the store: a missing one changes nothing (no folder, no layout).
    with _input(args.file) as source:
        backend = _open(args.url, args)
        stored = _put(backend, args, source)
    if args.json:
        print_json({"key": args.key, "stored": stored})
    return 0


@contextlib.contextmanager
def _input(path: str | None) -> Iterator[Any]:
    """``--file``'s regular file, open for reading; None without one. Raises naming the file."""
    if path is None:
        yield None
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise _UserError(f"--file {path}: {exc.strerror or exc}") from None
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise _UserError(f"--file {path}: not a regular file (a folder, FIFO or device)")
        yield handle


def _put(backend: BaseBackend[Any, Any], args: argparse.Namespace, source: Any) -> bool:
    if source is not None and isinstance(backend, FileTransfers):
        return backend.dump_file(args.key, source)  # streamed, never read whole
    if source is not None:
        raw = source.read()
    elif args.value == "-":
        raw = sys.stdin.buffer.read()
    elif args.value is not None:
        raw = os.fsencode(args.value)
    else:
        raise _UserError("no value: give it, --file F, or - to read stdin")
    return backend.dump(args.key, _parse(backend, args.key, raw))


def _cmd_rm(args: argparse.Namespace) -> int:
    backend = _open(args.url, args)
    missing = [key for key in args.keys if not backend.delete(key)]
    if args.json:
        print_json({"deleted": len(args.keys) - len(missing), "missing": missing})
    if missing:
        raise _UserError(f"not found: {', '.join(map(repr, missing))}")
    return 0


def _cmd_stat(args: argparse.Namespace) -> int:
    backend = _open(args.url, args)
    info = _stat(backend, args.key)
    if info is None:
        raise _UserError(f"{args.key!r} not found in {backend!r}")
    if args.json:
        print_json(info)
    else:
        for name, value in info.items():
            say(f"{name}: {value}")
    return 0


def _cmd_url(args: argparse.Namespace) -> int:
    backend = _open(args.url, args)
    if isinstance(backend, SupportsUrl):
        try:
            url = backend.url(args.key, expires=args.expires)
            if args.json:
                print_json({"key": args.key, "url": url})
            else:
                say(url)
            return 0
        except NotImplementedError:
            pass  # a tier over a store without URLs
    raise _UserError(f"{type(backend).__name__} values have no URL")


def _cmd_purge(args: argparse.Namespace) -> int:
    backend = _open(args.url, args)
    if not isinstance(backend, SupportsExpiry):
        raise _UserError(f"{type(backend).__name__} has no expiring entries to purge; use a cache:// URL")
    removed = backend.purge()
    if args.json:
        print_json({"purged": removed})
    else:
        say(f"purged {removed} expired entries")
    return 0


def _cmd_cp(args: argparse.Namespace) -> int:
    return run_copy(args, lambda url, **options: _open(url, args, **options))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    s3 = {name: value for name in ("region", "profile") if (value := getattr(args, name)) is not None}
    return run_demo(keys=args.keys, endpoint_url=args.endpoint_url, as_json=args.json, keep=args.keep, **s3)


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
        _cmd_ls,
        url,
        prefix,
        (("-l", "--long"), {"action": "store_true", "help": "with size and date"}),
    )
    command(
        "get",
        "print a value (or write it to a file)",
        _cmd_get,
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
        _cmd_put,
        url,
        key,
        (("value",), {"nargs": "?", "help": "the value (JSON for a json store); - reads stdin"}),
        (("--file",), {"metavar": "F", "help": "read the value from file F"}),
    )
    command("rm", "delete keys", _cmd_rm, url, (("keys",), {"nargs": "+", "metavar": "KEY"}))
    command("stat", "show what the store knows of a key: size, date, ETag, ...", _cmd_stat, url, key)
    command(
        "url",
        "print the URL of a value (presigned with --expires)",
        _cmd_url,
        url,
        key,
        (
            ("--expires",),
            {"type": _seconds, "metavar": "S", "help": "a presigned URL valid for S seconds (S3)"},
        ),
    )
    command(
        "purge", "remove the expired entries of a cache", _cmd_purge, (("url",), {"help": "a cache:// URL"})
    )
    command(
        "cp",
        "copy every key (or a prefix) from one store to another; resumable",
        _cmd_cp,
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
        _cmd_demo,
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
        status: int = args.run(args)
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
    except (_UserError, BackendError, ValueError, OSError, ImportError, RecursionError) as exc:
        warn(f"backends {args.command}: {_one_line(exc)}")
        return 1
    except KeyboardInterrupt:
        warn(f"backends {args.command}: interrupted")
        return 130
    return status


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
    if given and args.command != "demo" and not any(_reaches_s3(url) for url in urls):
        if args.command == "status":
            raise _UserError(f"{', '.join(given)}: status reads a Redis stream, not S3")
        raise _UserError(f"{', '.join(given)}: for s3:// URLs (or a tier in front of S3); no URL here is one")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BucketNotFoundError):
        # The library's hint is for code; on the command line the option goes in the URL.
        return _one_line(Exception(str(exc).replace(CREATE_HINT, "add ?create_bucket=true to the URL")))
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, BackendError) and exc.filename:
        text = f"{exc.strerror or text}: {exc.filename}"
    return printable(" ".join(text.split()))
