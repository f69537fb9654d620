"""The ``backends`` command: look into and move data between any of the stores.

Every subcommand takes backend URLs (:mod:`backends.urls`). A user error
(a bad URL, a missing key, an unreachable store) prints one line to stderr
and exits 1; a usage error exits 2, as argparse does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

from . import __version__
from .base import MISSING, BaseBackend
from .errors import BackendError
from .info import SupportsExpiry, SupportsStat, SupportsUrl
from .status import add_status_command
from .transfers import FileTransfers
from .urls import open_url

__all__ = ["main"]

COPY_BATCH = 500  # keys read, compared and written per round of ``cp``


class _UserError(Exception):
    """A failure to report in one line, without a traceback."""


# -- values in and out --------------------------------------------------------------------


def _family(backend: BaseBackend[Any, Any]) -> str:
    return backend.codec.name


def _parse(backend: BaseBackend[Any, Any], raw: bytes) -> Any:
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


def _when(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="seconds")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="seconds")
    return None


def _stat(backend: BaseBackend[Any, Any], key: str) -> dict[str, Any] | None:
    """What the store knows of ``key``: its ``stat()`` where it has one, and when it expires."""
    info = _stat_of(backend, key)
    if info is None:
        return None
    if "last_modified" in info:
        info["last_modified"] = _when(info["last_modified"])
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
            return None if found is None else {k: v for k, v in asdict(found).items() if v not in (None, {})}
    value = backend.load(key, MISSING)
    if value is MISSING:
        return None
    return {"key": key, "size": len(backend.codec.encode(value)) if _family(backend) != "object" else None}


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# -- subcommands ------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    keys = backend.list(args.prefix, "") if args.prefix else iter(backend)
    if not args.long:
        if args.json:
            _print_json(sorted(keys))
        else:
            for key in keys:
                print(key)
        return 0
    rows = [info for key in keys if (info := _stat(backend, key)) is not None]
    if args.json:
        _print_json(rows)
        return 0
    for info in rows:
        size = info.get("size")
        when = info.get("last_modified") or info.get("expires") or "-"
        print(f"{'-' if size is None else size:>12}  {when:25}  {info['key']}")
    return 0


def _cmd_get(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    if args.output and isinstance(backend, FileTransfers):
        if not backend.load_file(args.key, args.output):
            raise _UserError(f"{args.key!r} not found in {backend!r}")
        return 0
    value = backend.load(args.key, MISSING)
    if value is MISSING:
        raise _UserError(f"{args.key!r} not found in {backend!r}")
    data = _show(backend, value)
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def _cmd_put(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    if args.file is not None and args.value is not None:
        raise _UserError("give the value, --file F, or - for stdin; not both")
    if args.file is not None and isinstance(backend, FileTransfers):
        backend.dump_file(args.key, args.file)  # streamed, never read whole
        return 0
    if args.file is not None:
        raw = Path(args.file).read_bytes()
    elif args.value == "-":
        raw = sys.stdin.buffer.read()
    elif args.value is not None:
        raw = os.fsencode(args.value)
    else:
        raise _UserError("no value: give it, --file F, or - to read stdin")
    backend.dump(args.key, _parse(backend, raw))
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    missing = [key for key in args.keys if not backend.delete(key)]
    if args.json:
        _print_json({"deleted": len(args.keys) - len(missing), "missing": missing})
    if missing:
        raise _UserError(f"not found: {', '.join(map(repr, missing))}")
    return 0


def _cmd_stat(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    info = _stat(backend, args.key)
    if info is None:
        raise _UserError(f"{args.key!r} not found in {backend!r}")
    if args.json:
        _print_json(info)
    else:
        for name, value in info.items():
            print(f"{name}: {value}")
    return 0


def _cmd_url(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    if isinstance(backend, SupportsUrl):
        try:
            print(backend.url(args.key, expires=args.expires))
            return 0
        except NotImplementedError:
            pass  # a tier over a store without URLs
    raise _UserError(f"{type(backend).__name__} values have no URL")


def _cmd_purge(args: argparse.Namespace) -> int:
    backend = open_url(args.url)
    if not isinstance(backend, SupportsExpiry):
        raise _UserError(f"{type(backend).__name__} has no expiring entries to purge; use a cache:// URL")
    removed = backend.purge()
    if args.json:
        _print_json({"purged": removed})
    else:
        print(f"purged {removed} expired entries")
    return 0


def _batches(keys: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(islice(keys, size)):
        yield batch


def _cmd_cp(args: argparse.Namespace) -> int:
    source, target = open_url(args.source), open_url(args.target)
    keys = source.list(args.prefix, "") if args.prefix else iter(source)
    progress = _progress(args.quiet)
    start = time.monotonic()
    copied = skipped = 0
    for batch in _batches(keys, COPY_BATCH):
        # Concurrent reads on both sides (load_many), then one dump_many of
        # what differs: a second run finds everything identical and writes nothing.
        values = source.load_many(batch)
        present = target.load_many(list(values))
        changed = {key: value for key, value in values.items() if present.get(key, MISSING) != value}
        target.dump_many(changed)
        copied += len(changed)
        skipped += len(values) - len(changed)
        progress(copied + skipped)
    progress(None)
    seconds = time.monotonic() - start
    summary = {"copied": copied, "skipped": skipped, "keys": copied + skipped, "seconds": round(seconds, 3)}
    if args.json:
        _print_json(summary)
    else:
        total = copied + skipped
        print(f"copied {copied}, skipped {skipped} already identical, {total} keys in {seconds:.1f} s")
    return 0


def _progress(quiet: bool) -> Any:
    """A progress bar on stderr when it is a terminal (tqdm, from the [cli] extra); else nothing."""
    if quiet or not sys.stderr.isatty():
        return lambda done: None
    try:
        from tqdm import tqdm
    except ImportError:
        print("(pip install 'backends[cli]' for a progress bar)", file=sys.stderr)
        return lambda done: None
    bar = tqdm(unit=" keys", file=sys.stderr)

    def update(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(keys=args.keys, endpoint_url=args.endpoint_url, as_json=args.json)


# -- the parser ---------------------------------------------------------------------------

URL_HELP = "a backend URL: memory://, file:///path or a path, s3://bucket/prefix, cache:///path[::ORIGIN]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backends",
        description="Look into and move data between key-value stores: memory, local disk, S3.",
        epilog="URLs take ?format=json|text|raw and the backends' options, e.g. "
        "s3://bucket/app?region=eu-west-1&endpoint_url=http://127.0.0.1:9000. "
        "Credentials come from the environment or a profile, never from a URL.",
    )
    parser.add_argument("--version", action="version", version=f"backends {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    ls = command("ls", "list the keys of a store")
    ls.add_argument("url", help=URL_HELP)
    ls.add_argument("--prefix", default="", help="only the keys starting with this")
    ls.add_argument("-l", "--long", action="store_true", help="with size and date")
    ls.set_defaults(run=_cmd_ls)

    get = command("get", "print a value (or write it to a file)", json_flag=False)
    get.add_argument("url", help=URL_HELP)
    get.add_argument("key")
    get.add_argument("-o", "--output", metavar="FILE", help="write the value to FILE")
    get.set_defaults(run=_cmd_get)

    put = command("put", "store a value: given, from a file, or from stdin (-)", json_flag=False)
    put.add_argument("url", help=URL_HELP)
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="the value (JSON for a json store); - reads stdin")
    put.add_argument("--file", metavar="F", help="read the value from file F")
    put.set_defaults(run=_cmd_put)

    rm = command("rm", "delete keys")
    rm.add_argument("url", help=URL_HELP)
    rm.add_argument("keys", nargs="+", metavar="KEY")
    rm.set_defaults(run=_cmd_rm)

    stat = command("stat", "show what the store knows of a key: size, date, ETag, ...")
    stat.add_argument("url", help=URL_HELP)
    stat.add_argument("key")
    stat.set_defaults(run=_cmd_stat)

    url = command("url", "print the URL of a value (presigned with --expires)", json_flag=False)
    url.add_argument("url", help=URL_HELP)
    url.add_argument("key")
    url.add_argument("--expires", type=float, metavar="S", help="a presigned URL valid for S seconds")
    url.set_defaults(run=_cmd_url)

    purge = command("purge", "remove the expired entries of a cache")
    purge.add_argument("url", help="a cache:// URL")
    purge.set_defaults(run=_cmd_purge)

    cp = command("cp", "copy every key (or a prefix) from one store to another; resumable")
    cp.add_argument("source", help=URL_HELP)
    cp.add_argument("target", help=URL_HELP)
    cp.add_argument("--prefix", default="", help="only the keys starting with this")
    cp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cp.set_defaults(run=_cmd_cp)

    add_status_command(
        command("status", "what every process is doing: its recent events, from a Redis stream")
    )

    demo = command("demo", "a JsonCache in front of S3 (an in-process S3 server), and what it saved")
    demo.add_argument("--keys", type=int, default=100, help="documents to write (default 100)")
    demo.add_argument("--endpoint-url", help="use this S3 endpoint instead of an in-process server")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except (_UserError, BackendError, ValueError, OSError, ImportError) as exc:
        print(f"backends {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"backends {args.command}: interrupted", file=sys.stderr)
        return 130
    return status


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, BackendError) and exc.filename:
        text = f"{exc.strerror or text}: {exc.filename}"
    return " ".join(text.split())
