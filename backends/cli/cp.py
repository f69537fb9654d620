"""``backends cp``: copy every key (or a prefix) between two stores, resumably.

Both sides are listed in key order and joined as they stream, so memory stays
flat. A key is decided from what the listings tell before any value is read:

- absent in the target, or of another size: copied;
- the same MD5 (an S3 ETag of a single-part upload is its MD5; a local
  file's is computed, reading the local file only): skipped;
- the same size, no MD5 to compare, and the target written after the source
  (``aws s3 sync``'s rule): skipped;
- otherwise the two values are read (in batches, ``load_many``) and compared.

A raw value over :data:`STREAM_OVER` goes file to file (``dump_file`` from the
source's file or a spooled copy), never whole in memory. What the source
holds that is not a key (a folder's strays) and each key the target cannot
hold are reported, and make the command fail; nothing is skipped silently.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from ..base import MISSING, BaseBackend
from ..errors import InvalidKeyError, KeyConflictError, ReadOnlyError
from ..filesystem import FileSystemBackend, FileSystemCache, FileSystemRawBackend
from ..info import Stat, SupportsStatMany, SupportsStrays
from ..tier import TieredBackend
from ..transfers import FileTransfers
from ..views import refuses_writes
from .terminal import print_json, say, warn

__all__ = ["STREAM_OVER", "Copy", "copy_all", "run_copy", "strays"]

STREAM_OVER: Final = 8 * 1024 * 1024  # a raw value bigger than this is streamed file to file
BATCH_KEYS: Final = 500  # small values read, compared and written per round
BATCH_BYTES: Final = 64 * 1024 * 1024  # ... and no more bytes than this per round, where sizes are known
_MD5 = re.compile(r'"?([0-9a-f]{32})"?')


@dataclass
class Copy:
    """What a copy did: counts, bytes, and what it could not copy."""

    copied: int = 0
    #: keys left alone because the target holds the same value
    skipped: int = 0
    bytes: int = 0
    not_keys: list[str] = field(default_factory=list)  # the source's strays: "path: reason"
    refused: list[str] = field(default_factory=list)  # keys the target cannot hold: "key: why"

    @property
    def keys(self) -> int:
        """The source's keys met: copied, skipped as identical, or refused by the target."""
        return self.copied + self.skipped + len(self.refused)

    @property
    def not_copied(self) -> int:
        """What is not in the target: the source's strays and the keys it refused."""
        return len(self.not_keys) + len(self.refused)


def _listing(backend: BaseBackend[Any, Any], prefix: str) -> Iterator[tuple[str, Stat | None]]:
    """Every key below ``prefix``, sorted, with its Stat where one listing tells it."""
    if isinstance(backend, SupportsStatMany):
        for found in backend.stat_many(prefix):
            yield found.key, found
    else:
        for key in backend.list(prefix, None):
            yield key, None


class _Lookup:
    """The target's Stat of each key, by walking its sorted listing alongside the source's."""

    def __init__(self, backend: BaseBackend[Any, Any], prefix: str) -> None:
        self.known = isinstance(backend, SupportsStatMany)
        self._entries = _listing(backend, prefix) if self.known else iter(())
        self._head: tuple[str, Stat | None] | None = next(self._entries, None)

    def __call__(self, key: str) -> Stat | None:
        while self._head is not None and self._head[0] < key:
            self._head = next(self._entries, None)
        if self._head is not None and self._head[0] == key:
            return self._head[1]
        return None


def _has_md5(backend: BaseBackend[Any, Any], found: Stat) -> bool:
    """Whether the MD5 of the value is known (kept by the store) or computed without a request."""
    return bool(found.md5 or _etag_md5(found)) or isinstance(backend, FileSystemRawBackend)


def _etag_md5(found: Stat) -> str | None:
    if found.etag and found.stored_size is None and (match := _MD5.fullmatch(found.etag)):
        return match.group(1)  # a single-part upload: the ETag is the MD5 of the bytes
    return None


def _md5(backend: BaseBackend[Any, Any], key: str, found: Stat) -> str | None:
    """The MD5 of the value: kept by the store (a gzipped S3 object, or the ETag of a
    single-part upload), or computed from a local file."""
    if known := found.md5 or _etag_md5(found):
        return known
    if isinstance(backend, FileSystemRawBackend):
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with backend.open(key) as reader:
                while chunk := reader.read(1 << 20):
                    digest.update(chunk)
        except KeyError:
            return None
        return digest.hexdigest()
    return None


def _verdict(
    source: BaseBackend[Any, Any],
    target: BaseBackend[Any, Any],
    key: str,
    mine: Stat | None,
    theirs: Stat | None,
) -> bool | None:
    """True: copy; False: identical, skip; None: read both values to know."""
    if mine is None or theirs is None:
        return None
    if mine.size != theirs.size:
        return True
    if _has_md5(source, mine) and _has_md5(target, theirs):
        one, two = _md5(source, key, mine), _md5(target, key, theirs)
        if one is not None and two is not None:
            return one != two
    if mine.last_modified and theirs.last_modified and theirs.last_modified >= mine.last_modified:
        return False  # aws s3 sync's rule, where no MD5 tells
    return None


def copy_all(
    source: BaseBackend[Any, Any],
    target: BaseBackend[Any, Any],
    prefix: str = "",
    progress: Callable[[int, int], None] = lambda keys, size: None,
    done: Copy | None = None,
) -> Copy:
    """Copy every key below ``prefix`` that differs; ``progress(keys, bytes)`` after each step.

    ``done`` (a new :class:`Copy` if None) is filled as the copy goes: after an error it
    still tells what was copied. The source's strays (a folder's, a bucket's names that
    are not keys) are in ``not_keys``; the keys the target refused in ``refused``.
    """
    done = Copy() if done is None else done
    lookup = _Lookup(target, prefix)
    batch: dict[str, tuple[bool, int | None]] = {}  # key: (read the target's value to know?, size)
    size = 0
    for key, mine in _listing(source, prefix):
        theirs = lookup(key)
        verdict = True if lookup.known and theirs is None else _verdict(source, target, key, mine, theirs)
        if verdict is False:
            done.skipped += 1
            done.bytes += mine.size if mine else 0
        elif mine is not None and mine.size > STREAM_OVER and _streams(source, target):
            if _stream(source, target, key, done):  # it differs, or may: a big value is not read twice
                done.bytes += mine.size
        else:
            batch[key] = (verdict is None, mine.size if mine else None)
            size += mine.size if mine else 0
            if len(batch) < BATCH_KEYS and size < BATCH_BYTES:
                continue
            _copy_batch(source, target, batch, done)
            batch, size = {}, 0
        progress(done.keys, done.bytes)
    _copy_batch(source, target, batch, done)
    progress(done.keys, done.bytes)
    done.not_keys = [f"{path}: {reason}" for path, reason in strays(source, prefix)]
    return done


def strays(backend: BaseBackend[Any, Any], prefix: str) -> Iterator[tuple[str, str]]:
    """What the store lists keys from holds below ``prefix`` that is not a key: a folder's or a
    bucket's strays (a tier's: its origin's, which it lists); nothing for other stores."""
    if isinstance(backend, TieredBackend):
        backend = backend.origin
    if isinstance(backend, SupportsStrays):
        yield from backend.strays(prefix)


def _size(value: Any) -> int:
    """The size of a value read, for the progress: bytes or text; 0 for other objects."""
    return len(value) if isinstance(value, (bytes, str)) else 0


def _streams(source: BaseBackend[Any, Any], target: BaseBackend[Any, Any]) -> bool:
    return isinstance(source, FileTransfers) and isinstance(target, FileTransfers)


def _stream(source: Any, target: Any, key: str, done: Copy) -> bool:
    """Copy one big raw value file to file: from the source's own file, or a spooled copy.

    Return whether it was copied (not: deleted since it was listed, or refused by the target).
    """
    try:
        if isinstance(source, FileSystemRawBackend):
            with source.open(key) as reader:
                target.dump_file(key, reader)
        else:
            with tempfile.TemporaryFile(prefix="backends-cp-") as spool:
                if not source.load_file(key, spool):
                    return False  # deleted since it was listed
                spool.seek(0)
                target.dump_file(key, spool)
    except KeyError:
        return False  # deleted since it was listed
    except (InvalidKeyError, KeyConflictError) as exc:
        done.refused.append(f"{key}: {exc.reason}")
        return False
    done.copied += 1
    return True


def _copy_batch(
    source: BaseBackend[Any, Any],
    target: BaseBackend[Any, Any],
    batch: dict[str, tuple[bool, int | None]],
    done: Copy,
) -> None:
    if not batch:
        return
    values = source.load_many(list(batch))
    unknown = [key for key in values if batch[key][0]]
    present = target.load_many(unknown) if unknown else {}
    changed = {key: value for key, value in values.items() if present.get(key, MISSING) != value}
    refused: set[str] = set()
    try:
        target.dump_many(changed)
    except (InvalidKeyError, KeyConflictError):
        # One at a time, to tell which keys the target cannot hold (a plain folder tree).
        for key, value in changed.items():
            try:
                target.dump(key, value)
            except (InvalidKeyError, KeyConflictError) as exc:
                done.refused.append(f"{key}: {exc.reason}")
                refused.add(key)
    done.copied += len(changed) - len(refused)
    done.skipped += len(values) - len(changed)  # identical: a refused key is not one
    done.bytes += sum(
        _size(value) if (size := batch[key][1]) is None else size
        for key, value in values.items()
        if key not in refused
    )


# -- the command ------------------------------------------------------------------------


def run_copy(args: argparse.Namespace, open_backend: Callable[..., BaseBackend[Any, Any]]) -> int:
    """``backends cp``: copy, print the summary, raise ValueError if anything was not copied.

    Every name left out is printed (escaped) on stderr, one line each; a copy an error
    stopped still prints what it had copied, then raises the error.
    """
    source = open_backend(args.source)
    target = open_backend(args.target)
    if refuses_writes(target):  # before anything is listed or copied
        raise ReadOnlyError(
            "the target is read-only (?readonly=1): nothing copied", backend=repr(target), operation="cp"
        )
    layout = _new_tree_layout(source, target, args.target)
    if layout is not None:
        target = open_backend(args.target, layout=layout)
    progress = _progress(args.quiet)
    start = time.monotonic()
    done = Copy()
    try:
        copy_all(source, target, args.prefix, progress, done)
    except (Exception, KeyboardInterrupt) as exc:  # what was copied is told, then the error
        progress(None, None)
        _summary(done, time.monotonic() - start, args.json, stopped=exc)
        raise
    progress(None, None)
    _summary(done, time.monotonic() - start, args.json)
    if done.not_copied:
        hint = "; ?layout=escaped on the target keeps every key" if done.refused else ""
        raise ValueError(
            f"{done.not_copied} not copied (named above): {len(done.not_keys)} names that are not keys, "
            f"{len(done.refused)} keys the target cannot hold{hint}"
        )
    return 0


def _summary(done: Copy, seconds: float, as_json: bool, stopped: BaseException | None = None) -> None:
    for stray in done.not_keys:
        warn(f"backends cp: not copied, not a key: {stray}")
    for refused in done.refused:
        warn(f"backends cp: not copied, the target cannot hold {refused}")
    if as_json:
        summary: dict[str, Any] = {
            "copied": done.copied,
            "skipped": done.skipped,
            "not_copied": done.not_copied,
            "keys": done.keys,
            "bytes": done.bytes,
            "seconds": round(seconds, 3),
            "not_keys": done.not_keys,
            "refused": done.refused,
        }
        if stopped is not None:
            summary["stopped"] = str(stopped) or type(stopped).__name__
        print_json(summary)
        return
    left = f"{done.not_copied} not copied, " if done.not_copied else ""
    end = ""
    if stopped is not None:
        end = ", then interrupted" if isinstance(stopped, KeyboardInterrupt) else ", then stopped by an error"
    say(
        f"copied {done.copied}, skipped {done.skipped} already identical, {left}{done.keys} keys "
        f"({done.bytes:,} bytes) in {seconds:.1f} s{end}"
    )


def _new_tree_layout(source: BaseBackend[Any, Any], target: BaseBackend[Any, Any], url: str) -> str | None:
    """The layout a new (or empty) target folder takes, when its URL names none.

    A copy of a folder is laid out as the folder was; a copy of anything else
    (S3, Redis) is an ordinary tree: key ``a/b`` as the file ``a/b``, as
    ``aws s3 cp --recursive`` makes it.
    """
    if not isinstance(target, FileSystemBackend) or isinstance(target, FileSystemCache):
        return None
    if "layout" in parse_qs(urlsplit(url.split("::", maxsplit=1)[0]).query) or (
        target.root.is_dir() and any(target.root.iterdir())
    ):
        return None
    wanted = source.layout.name if isinstance(source, FileSystemBackend) else "plain"
    return None if wanted == target.layout.name else wanted


def _progress(quiet: bool) -> Any:
    """A progress bar on stderr when it is a terminal (tqdm, from the [cli] extra); else nothing.

    It counts bytes where the listings tell sizes, and keys besides.
    """
    if quiet or not sys.stderr.isatty():
        return lambda keys, size: None
    try:
        from tqdm import tqdm
    except ImportError:
        print("(pip install 'backends[cli]' for a progress bar)", file=sys.stderr)
        return lambda keys, size: None
    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(keys: int | None, size: int | None) -> None:
        if keys is None:
            bar.close()
            return
        bar.set_postfix_str(f"{keys:,} keys", refresh=False)
        bar.update((size or 0) - bar.n)

    return update
