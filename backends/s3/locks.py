"""S3Lock: a per-key lease held as a lock object, taken with a create-only PUT.

The lock object of a key is ``<prefix>\\x7flocks/<sha256 of the key>``: the
DEL character makes it a name no key can have, so it never shows in
``keys()``, ``len`` or ``list()``. Every change is conditional, so there is
no check-then-write race (the flaw of older S3 tile caches):

- acquire: PUT with ``If-None-Match: *``; one of any number of racers wins;
- a waiter that sees the same lock object (same ETag) for the whole lease
  its holder wrote into it, on the waiter's own clock, takes it over with a
  PUT ``If-Match`` that ETag; clocks on different machines need not agree;
- renew: PUT ``If-Match`` our ETag; release: DELETE ``If-Match`` our ETag,
  so a holder whose lease was taken over never deletes the new holder's lock.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from typing import Any, Final

from ..locks import Lock
from .errors import ABSENT, CONFLICT, PRECONDITION_FAILED, error_code

__all__ = ["LOCK_AREA", "S3Lock"]

LOCK_AREA: Final = "\x7flocks/"
#: a conditional request on the lock object failed: it is not (or no longer) ours as we knew it
_LOST = PRECONDITION_FAILED | ABSENT | CONFLICT


class S3Lock(Lock):
    """A lease on S3 (or any store with conditional writes: MinIO, SeaweedFS, moto)."""

    max_delay = 0.25  # each try is one or two requests

    def __init__(
        self,
        key: str,
        timeout: float | None,
        ttl: float,
        name: str,
        *,
        call: Callable[..., Any],
        client_error: type[Exception],
        **context: Any,
    ) -> None:
        """``name``: the lock object's key in the bucket; ``call(operation, **params)``
        sends one request (retried, rewound); ``client_error``: the error an
        answered request raises, whose code :func:`.errors.error_code` reads."""
        super().__init__(key, timeout, ttl, **context)
        self._call = call
        self._client_error = client_error
        self._object = name
        self._etag: str | None = None
        self._until = 0.0  # when our lease runs out, on our clock
        self._sent = 0.0  # when the last conditional write was sent: a lease it began starts then
        self._seen: tuple[str, float] | None = None  # a holder's ETag, and when we first saw it

    def _body(self) -> bytes:
        # A fresh nonce per write: a renewal must change the ETag that waiters watch.
        lease = {
            "key": self.key,
            "owner": f"{socket.gethostname()}:{os.getpid()}",
            "ttl": self.ttl,
            "token": self.token,
            "nonce": os.urandom(8).hex(),
        }
        return json.dumps(lease).encode()

    def _conditional(self, operation: str, **condition: str) -> dict[str, Any] | None:
        """One conditional request on the lock object; None when its condition fails."""
        params: dict[str, Any] = {"Key": self._object, **condition}
        if operation == "put_object":
            params.update(Body=self._body(), ContentType="application/json")
        self._sent = self._now()
        try:
            response: dict[str, Any] = self._call(operation, **params)
        except self._client_error as exc:
            if error_code(exc) in _LOST:
                return None
            raise
        return response

    def _try_acquire(self) -> bool:
        created = self._conditional("put_object", IfNoneMatch="*")
        if created is not None:
            self._hold(created["ETag"])
            return True
        holder = self._holder()
        if holder is None:
            return False  # released between our PUT and GET: the next try may win
        etag, ttl, token = holder
        if token == self.token:
            # Our own PUT was applied and its answer lost (botocore's retry
            # then failed its condition): the lock is ours.
            self._hold(etag)
            return True
        return self._take_over(etag, ttl)

    def _take_over(self, etag: str, ttl: float) -> bool:
        """Take the lock over once we have seen its holder's ETag unchanged for a whole lease."""
        now = self._now()
        if self._seen is None or self._seen[0] != etag:
            self._seen = (etag, now)  # a new lease (or a renewal): its ttl starts now for us
            return False
        if now - self._seen[1] < ttl:
            return False
        taken = self._conditional("put_object", IfMatch=etag)
        if taken is not None:
            self._hold(taken["ETag"])
            return True
        return self._still_ours()  # another waiter took it over first, or our answer was lost

    def _holder(self) -> tuple[str, float, str | None] | None:
        """The current lock object's ETag, lease and holder's token, or None if there is none."""
        try:
            response = self._call("get_object", Key=self._object)
        except self._client_error as exc:
            if error_code(exc) in ABSENT:
                return None
            raise
        body = response["Body"].read()
        try:
            lease = json.loads(body)
            ttl, token = float(lease["ttl"]), str(lease["token"])
        except (ValueError, KeyError, TypeError):
            ttl, token = self.ttl, None  # not written by us: judge it by our own lease
        return response["ETag"], ttl, token

    def _still_ours(self) -> bool:
        """After a failed condition: whether the lock object is ours after all (an answer was lost).

        Each write puts our token in the object, so a write of ours that was
        applied, though botocore saw its answer lost and its retry fail, is
        recognised, and its ETag taken as the one we hold.
        """
        holder = self._holder()
        if holder is None or holder[2] != self.token:
            return False
        self._hold(holder[0])
        return True

    def _abandon(self) -> bool:
        # A PUT of ours may have been applied unanswered: if the lock object
        # holds our token, delete it (only while it still has that ETag).
        if not self._still_ours():
            return True
        etag, self._etag = self._etag, None
        return etag is None or self._delete_if(etag)

    def _hold(self, etag: str) -> None:
        """The lock object is ours with ``etag``: our lease runs ttl seconds from when we sent
        the write, on our clock (a waiter may see the object before its answer reaches us)."""
        self._etag = etag
        self._until = self._sent + self.ttl

    def _taken(self) -> bool:
        holder = self._holder()
        return holder is not None and holder[2] != self.token

    def _renew(self) -> bool:
        if self._etag is None or self._now() >= self._until:
            return False  # ran out: a waiter may have taken it over (and released it) meanwhile
        renewed = self._conditional("put_object", IfMatch=self._etag)
        if renewed is None:
            return self._still_ours()
        self._hold(renewed["ETag"])
        return True

    def _release(self) -> bool:
        etag, self._etag, self._seen = self._etag, None, None
        for _ in range(2):
            if etag is None:
                return False
            if self._delete_if(etag):
                return True
            # The condition failed: a renewal of ours applied unanswered
            # (delete with its ETag), or another holder took the lock over.
            if not self._still_ours():
                # Another holder, within our lease: none can take a running lease
                # over, so our DELETE was applied, its answer lost, and botocore's
                # retry met the next holder. Released, not "taken".
                return self._now() < self._until
            etag, self._etag = self._etag, None
        return False

    def _delete_if(self, etag: str) -> bool:
        """DELETE the lock object if it still has ``etag``; True when it is gone, False if not ours."""
        try:
            self._call("delete_object", Key=self._object, IfMatch=etag)
        except self._client_error as exc:
            code = error_code(exc)
            if code in ABSENT:
                return True  # already gone: our DELETE was applied and its answer lost
            if code in _LOST:
                return False
            raise
        return True
