"""S3RawBackend: bytes values, gzip for text assets, and files of any size through s3transfer."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import tempfile
import zlib
from typing import IO, Any

from ..codecs import RawCodec
from ..errors import CorruptValueError
from ..transfers import FileTransfers, PathOrFile, copy_stream, open_source
from .connection import MD5_META, SIZE_META
from .store import DEFAULT_GZIP, S3Backend

__all__ = ["S3RawBackend", "transfer_config"]

MiB = 1 << 20
SPOOL = 8 * MiB  # a stream to gzip or to send in one PUT is spooled to disk past this


def transfer_config(max_concurrency: int = 4) -> Any:
    """s3transfer settings that keep memory flat for files of any size.

    boto3's defaults (10 threads, up to 10 parts of 8 MiB read ahead from a
    file object, an I/O queue of 100 chunks) grow a process by about 120 MB
    for a 200 MiB file object; here 4 threads with as many parts in memory,
    and a 16-chunk I/O queue, hold about 40 MB, and 8 MiB parts still fill a
    link to S3.
    """
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=8 * MiB,
        multipart_chunksize=8 * MiB,
        max_concurrency=max_concurrency,
        max_io_queue=16,
        io_chunksize=256 * 1024,
        # The classic manager: its memory and its requests are the ones
        # measured; the CRT client, when installed, would be chosen otherwise.
        preferred_transfer_client="classic",
    )
    # Not arguments of boto3's TransferConfig, but read by s3transfer: the
    # parts read ahead of the upload threads, and the parts of a download
    # held before they are written.
    config.max_in_memory_upload_chunks = max_concurrency
    config.max_in_memory_download_chunks = max_concurrency
    return config


class _KnownObject:
    """Hands s3transfer the size and ETag from our HEAD, so it sends none of its own."""

    def __init__(self, size: int, etag: str | None) -> None:
        self.size, self.etag = size, etag

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        if self.etag:
            future.meta.provide_object_etag(self.etag)

    def on_progress(self, **kwargs: Any) -> None:
        pass

    def on_done(self, **kwargs: Any) -> None:
        pass


class S3RawBackend(FileTransfers, S3Backend[bytes]):
    """``bytes`` values; text assets gzipped; ``dump_file``/``load_file`` of any size.

    The content type is guessed from the key's extension. Keys ending in
    one of ``gzip_extensions`` (default: ``.js``, ``.css``, ``.html``, ``.svg``,
    ``.json`` ... see ``DEFAULT_GZIP``) are stored with ``Content-Encoding:
    gzip`` and come back ungzipped. Files stream through s3transfer
    (multipart, concurrent) with ``transfer_config`` settings.
    """

    default_gzip = DEFAULT_GZIP

    def __init__(
        self, bucket: str, region: str | None = None, *, transfer: Any = None, **options: Any
    ) -> None:
        super().__init__(bucket, region, **options)
        self.transfer = transfer if transfer is not None else transfer_config()
        self._manager: Any = None

    codec = RawCodec()

    def _transfers(self) -> Any:
        self._check_open()
        with self._lock:
            if self._manager is None:
                from boto3.s3.transfer import create_transfer_manager

                self._manager = create_transfer_manager(self.client, self.transfer)
            return self._manager

    # -- upload -------------------------------------------------------------------

    def _dump_stream(self, key: str, source: PathOrFile, if_absent: bool) -> bool:
        extra = {**self._put_args, "ContentType": self._guess_type(key)}
        if self._gzipped(key):
            extra["ContentEncoding"] = "gzip"
            with open_source(source) as reader, _spooled() as packed:
                digest = hashlib.md5(usedforsecurity=False)
                with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as writer:
                    size = copy_stream(reader, writer, digest)
                own = {SIZE_META: str(size), MD5_META: digest.hexdigest()}
                extra["Metadata"] = {**extra.get("Metadata", {}), **own}
                packed.seek(0)
                return self._send(key, packed, extra, if_absent)
        if isinstance(source, (str, os.PathLike)) and not if_absent:
            return self._send(key, os.fspath(source), extra, if_absent)  # s3transfer reads parts by range
        with open_source(source) as reader:
            return self._send(key, reader, extra, if_absent)

    def _send(self, key: str, source: str | IO[bytes], extra: dict[str, Any], if_absent: bool) -> bool:
        if if_absent:
            # s3transfer cannot send If-None-Match; one streamed PUT can (S3
            # takes up to 5 GiB in one PUT).
            return self._put_stream(key, source, extra)
        object_key = self._object_key(key)
        if isinstance(source, str):
            # s3transfer opens the path itself, again if it runs again.
            self._again_if_cut(lambda: self._with_bucket(lambda: self._upload(source, object_key, extra)))
            return True
        reader = _Borrowed(source)  # s3transfer closes what it is given: not the caller's file
        if not reader.seekable():
            # Read once: the bucket must exist before the first byte goes.
            self._ensure_bucket()
            self._upload(reader, object_key, extra)
            return True
        start = reader.tell()

        def upload() -> None:
            reader.seek(start)  # from the start again after creating a missing bucket
            self._upload(reader, object_key, extra)

        self._again_if_cut(lambda: self._with_bucket(upload))
        return True

    def _upload(self, source: object, object_key: str, extra: dict[str, Any]) -> None:
        self._transfers().upload(source, self.bucket, object_key, extra).result()

    def _put_stream(self, key: str, source: str | IO[bytes], extra: dict[str, Any]) -> bool:
        with open_source(source) as reader:
            if not reader.seekable():
                with _spooled() as spool:
                    copy_stream(reader, spool)
                    spool.seek(0)
                    return self._put_object(key, spool, {**extra, "IfNoneMatch": "*"})
            return self._put_object(key, reader, {**extra, "IfNoneMatch": "*"})

    # -- download -----------------------------------------------------------------

    def _load_stream(self, key: str, target: PathOrFile) -> bool:
        head = self._head(key)
        if head is None:
            return False
        if head.get("ContentEncoding") == "gzip":
            self._load_gzipped(key, target)
            return True
        known = _KnownObject(int(head.get("ContentLength", 0)), head.get("ETag"))
        if isinstance(target, (str, os.PathLike)):
            # s3transfer writes a temporary file and renames it: safe to run again.
            path = os.fspath(target)
            self._again_if_cut(lambda: self._download(key, path, known))
        elif _rewindable(target):
            start = target.tell()

            def download() -> None:
                target.seek(start)
                self._download(key, target, known)

            self._again_if_cut(download)
        else:
            self._download(key, target, known)  # written as it comes: not run again
        return True

    def _download(self, key: str, destination: object, known: _KnownObject) -> None:
        self._transfers().download(
            self.bucket, self._object_key(key), destination, subscribers=[known]
        ).result()

    def _load_gzipped(self, key: str, target: PathOrFile) -> None:
        """Decode a gzip-encoded object into ``target`` only once all of it decoded.

        It is decoded into a spool first: an object that does not decode
        raises CorruptValueError and leaves the target as it was (a path is
        then replaced by a rename, never truncated).
        """
        with _spooled() as spool:
            for attempt in range(self._retries + 1):
                spool.seek(0)
                spool.truncate()
                body = self._call("get_object", Key=self._object_key(key))["Body"]
                try:
                    with gzip.GzipFile(fileobj=body, mode="rb") as reader:
                        copy_stream(reader, spool)
                    break
                except self._cut_body:
                    # Cut off mid-read (a ReadTimeoutError is an OSError too): asked
                    # again from the start, as a GET of a value is.
                    if attempt == self._retries:
                        raise
                except (OSError, EOFError, zlib.error) as exc:
                    raise CorruptValueError(
                        f"stored gzip data is broken: {exc}",
                        backend=repr(self),
                        operation="load_file",
                        key=key,
                    ) from exc
            spool.seek(0)
            if isinstance(target, (str, os.PathLike)):
                _replace_file(os.fspath(target), spool)
            else:
                copy_stream(spool, target)

    def close(self) -> None:
        """Finish the transfer threads, then close the pool and the client."""
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            manager.shutdown()
        super().close()


class _Borrowed:
    """A caller's binary file, lent to s3transfer: everything but ``close``."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._fileobj = fileobj

    def read(self, size: int = -1) -> bytes:
        return self._fileobj.read(size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return _rewindable(self._fileobj)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fileobj.seek(offset, whence)

    def tell(self) -> int:
        return self._fileobj.tell()

    def close(self) -> None:
        """Leave the caller's file open: it is theirs to close."""


def _rewindable(fileobj: IO[bytes]) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _replace_file(path: str, source: IO[bytes]) -> None:
    """Write ``source`` to a temporary file beside ``path``, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".backends-", suffix=".tmp")
    try:
        with open(fd, "wb") as out:
            copy_stream(source, out)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _spooled() -> Any:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL)
