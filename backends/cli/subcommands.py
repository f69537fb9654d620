"""One function per subcommand of ``backends`` (``cmd_ls`` ... ``cmd_demo``: each takes the parsed
arguments and returns the exit status), and how values go in and out of a store on the command
line (the store's family: JSON, text or raw bytes; ``-o`` files replaced only when complete).

A failure to report in one line is a :class:`UserError`; :mod:`backends.cli.command` reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from ..base import MISSING, BaseBackend
from ..errors import CorruptValueError, SerializationError
from ..info import Stat, SupportsExpiry, SupportsStat, SupportsStatMany, SupportsUrl
from ..transfers import FileTransfers
from ..urls import open_url
from .cp import run_copy, strays
from .terminal import print_json, say, warn

__all__ = [
    "S3_OPTIONS",
    "UserError",
    "cmd_cp",
    "cmd_demo",
    "cmd_get",
    "cmd_ls",
    "cmd_purge",
    "cmd_put",
    "cmd_rm",
    "cmd_stat",
    "cmd_url",
    "open_backend",
    "reaches_s3",
]


#: the options that reach S3, taken on every command that can (as aws-cli does)
S3_OPTIONS = ("endpoint_url", "region", "profile")


class UserError(Exception):
    """A failure to report in one line, without a traceback."""


def reaches_s3(url: str) -> bool:
    """Whether ``url`` is S3, or a tier whose origin is."""
    return url.rsplit("::", 1)[-1].startswith("s3://")


def open_backend(url: str, args: argparse.Namespace, **options: Any) -> BaseBackend[Any, Any]:
    """The backend of ``url``, with the command's --endpoint-url/--region/--profile if it reaches S3."""
    if reaches_s3(url):
        options.update(
            {name: value for name in S3_OPTIONS if (value := getattr(args, name, None)) is not None}
        )
    backend = open_url(url, **options)
    args.__dict__.setdefault("opened", []).append(backend)  # closed when the command ends
    return backend


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
        raise UserError(f"the value is not UTF-8 text ({exc.reason}); use a format=raw URL") from None
    if family == "text":
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
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


def cmd_ls(args: argparse.Namespace) -> int:
    """``backends ls``: the keys, sorted (``-l``: with size and date); each stray named, then a failure."""
    backend = open_backend(args.url, args)
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
        raise UserError(f"{count} not listed, not keys (named above)")
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


def cmd_get(args: argparse.Namespace) -> int:
    """``backends get``: the value, exactly, on stdout or into ``-o`` (replaced only once complete)."""
    if args.output is not None:
        _check_output(args.output)
    backend = open_backend(args.url, args)
    if args.output and isinstance(backend, FileTransfers):
        with _output(args.output) as out:
            if not backend.load_file(args.key, out):  # streamed into the file this command opened
                raise UserError(f"{args.key!r} not found in {backend!r}")
        return 0
    try:
        value = backend.load(args.key, MISSING)
    except CorruptValueError as exc:
        if _family(backend) == "raw" or isinstance(exc.__cause__, RecursionError):
            raise  # too deep is no sign of a binary value
        raise UserError(f"{exc}; if the value is binary, read it with a ?format=raw URL") from None
    if value is MISSING:
        raise UserError(f"{args.key!r} not found in {backend!r}")
    if args.json and _family(backend) == "raw":
        raise UserError("a raw value has no JSON form; drop --json (or write it to a file with -o)")
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
        raise UserError(f"-o {path}: is a folder; name the file to write")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise UserError(f"-o {path}: no folder {parent}")


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
        raise UserError(f"-o {path}: cannot write there: {exc.strerror or exc}") from None


def cmd_put(args: argparse.Namespace) -> int:
    """``backends put``: store the value given, from ``--file`` (streamed where the store can) or stdin."""
    if args.file is not None and args.value is not None:
        raise UserError("give the value, --file F, or - for stdin; not both")
    # The file is opened before the store: a missing one changes nothing (no folder, no layout).
    with _input(args.file) as source:
        backend = open_backend(args.url, args)
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
        raise UserError(f"--file {path}: {exc.strerror or exc}") from None
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UserError(f"--file {path}: not a regular file (a folder, FIFO or device)")
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
        raise UserError("no value: give it, --file F, or - to read stdin")
    return backend.dump(args.key, _parse(backend, args.key, raw))


def cmd_rm(args: argparse.Namespace) -> int:
    """``backends rm``: delete the keys; a missing one is named, and a failure."""
    backend = open_backend(args.url, args)
    missing = [key for key in args.keys if not backend.delete(key)]
    if args.json:
        print_json({"deleted": len(args.keys) - len(missing), "missing": missing})
    if missing:
        raise UserError(f"not found: {', '.join(map(repr, missing))}")
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    """``backends stat``: what the store knows of the key (size, date, ETag, expiry)."""
    backend = open_backend(args.url, args)
    info = _stat(backend, args.key)
    if info is None:
        raise UserError(f"{args.key!r} not found in {backend!r}")
    if args.json:
        print_json(info)
    else:
        for name, value in info.items():
            say(f"{name}: {value}")
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    """``backends url``: the URL of the value (presigned with ``--expires``)."""
    backend = open_backend(args.url, args)
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
    raise UserError(f"{type(backend).__name__} values have no URL")


def cmd_purge(args: argparse.Namespace) -> int:
    """``backends purge``: remove a cache's expired entries."""
    backend = open_backend(args.url, args)
    if not isinstance(backend, SupportsExpiry):
        raise UserError(f"{type(backend).__name__} has no expiring entries to purge; use a cache:// URL")
    removed = backend.purge()
    if args.json:
        print_json({"purged": removed})
    else:
        say(f"purged {removed} expired entries")
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    """``backends cp``: :func:`backends.cli.cp.run_copy` with the command's S3 options."""
    return run_copy(args, lambda url, **options: open_backend(url, args, **options))


def cmd_demo(args: argparse.Namespace) -> int:
    """``backends demo``: :func:`backends.cli.demo.run_demo`."""
    from .demo import run_demo

    s3 = {name: value for name in ("region", "profile") if (value := getattr(args, name)) is not None}
    return run_demo(keys=args.keys, endpoint_url=args.endpoint_url, as_json=args.json, keep=args.keep, **s3)
