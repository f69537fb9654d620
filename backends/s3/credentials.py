"""The boto3 client's credentials, as the obstore engine's store asks for them.

obstore keeps the credential its ``credential_provider`` returned until
``refresh_threshold`` before the ``expires_at`` given with it; within that,
it asks again at most every 100 ms (its token cache's back-off). So the
expiry handed over is the credential's own, as botocore holds it: one an
hour from expiry is read once, not ten times a second, and one 5 minutes
from expiry is asked for again, which makes botocore refresh it (it must,
10 minutes before). A credential that lives less than 5 minutes is asked
for at every request 100 ms apart, each time refreshed, as boto3 itself
refreshes it at every request.

A source that fails to give credentials fails as botocore names it, on
either engine (:func:`checked`, :func:`guard_signing`): NoCredentialsError,
or CredentialRetrievalError naming the source and what it raised, never a
refresh's own exception (botocore's RuntimeError for refreshed credentials
still expired, an STS ClientError, the source's OSError)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # obstore is the extra of the obstore engine
    from obstore.store import S3Credential

__all__ = ["REFUSED", "SENDING", "ClientCredentials", "checked", "guard_signing"]

#: the text of the provider's refusal once its engine is closed (obstore's error carries it)
REFUSED: Final = "backends: the backend is closed; its request is not sent"

#: how many credentials' secrets an error is still cleaned of after they were rotated out
_KEPT: Final = 8

#: per thread, the open-check of the backend whose request the thread sends through boto3 (set
#: by the transport around each request): called once the credentials are read, as a refresh
#: may have waited while the backend was closed (its request is then not sent)
SENDING = threading.local()

#: the life given to a refreshable credential whose expiry botocore does not tell
#: (obstore asks again 5 minutes before it: every 10 minutes)
_UNKNOWN_LIFE: Final = timedelta(minutes=15)


class ClientCredentials:
    """obstore's ``credential_provider`` for one boto3 client: its chain, read when obstore asks."""

    #: how long before a credential's expiry obstore asks again (obstore reads this attribute;
    #: its own default, made explicit, and under botocore's 10-minute mandatory refresh)
    refresh_threshold: Final = timedelta(minutes=5)

    def __init__(self, client: Any, missing: type[Exception]) -> None:
        from botocore import exceptions as bx

        self._client = client
        self._missing = missing  # botocore's NoCredentialsError
        self._bx = bx
        #: what an error's text is cleaned of (S3 echoes a signed request's token): the
        #: secrets of the last few credentials, as a request signed before a rotation
        #: may fail after it (and echo the token it was signed with)
        self.secrets: tuple[str, ...] = ()
        #: set when the engine is closed: a request still waiting for credentials is not sent
        self.closed = False

    def __call__(self) -> S3Credential:
        self._refuse_if_closed()
        found = self._client._get_credentials()  # botocore's resolved chain
        if found is None:
            raise self._missing()
        frozen, expiry = checked(lambda: _read(found), found, self._bx, self.secrets)
        self._refuse_if_closed()  # the refresh may have waited while the engine was closed
        new = tuple(secret for secret in (frozen.secret_key, frozen.token) if secret)
        if new and self.secrets[: len(new)] != new:
            kept = tuple(secret for secret in self.secrets if secret not in new)
            self.secrets = (new + kept)[: 2 * _KEPT]
        if expiry is None and hasattr(found, "refresh_needed"):
            expiry = datetime.now(timezone.utc) + _UNKNOWN_LIFE
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": expiry,  # None: static, never asked again
        }

    def _refuse_if_closed(self) -> None:
        # obstore fails the request with this text; the engine, seeing itself closed, raises
        # the backend's StoreError instead.
        if self.closed:
            raise RuntimeError(REFUSED)


def _read(found: Any) -> tuple[Any, datetime | None]:
    """botocore's frozen credentials (refreshed if due) and an expiry they hold to at least.

    The expiry is read before them: a refresh in between only makes them
    newer (botocore publishes the credentials, then their expiry). Read
    again while a refresh moved it, so the first read after a refresh gives
    the new expiry.
    """
    for _ in range(3):
        expiry = getattr(found, "_expiry_time", None)  # RefreshableCredentials' own (no public name)
        frozen = found.get_frozen_credentials()
        if getattr(found, "_expiry_time", None) == expiry:
            break
    if not isinstance(expiry, datetime):
        return frozen, None
    # obstore takes UTC alone (botocore's is often dateutil's tzlocal: then obstore's call fails)
    utc = expiry.replace(tzinfo=timezone.utc) if expiry.tzinfo is None else expiry.astimezone(timezone.utc)
    return frozen, utc


def checked(read: Any, found: Any, bx: Any, secrets: Iterable[str] = ()) -> Any:
    """``read()`` (which reads ``found``'s credentials, refreshing them if due), or raise what
    botocore names the failure: its own credential errors as they are, anything else a refresh
    raised as CredentialRetrievalError naming the source, its type and its text cleaned of
    ``secrets`` and of ``found``'s last ones; raised outside the ``except``, so the refresh's
    own exception (whatever it holds) is in no chain."""
    try:
        return read()
    except bx.BotoCoreError:
        raise  # NoCredentialsError, PartialCredentialsError, CredentialRetrievalError: botocore's words
    except Exception as exc:  # a refresh function's own failure: any class
        text = f"{type(exc).__name__}: {exc}"
    own = (getattr(found, "_secret_key", None), getattr(found, "_token", None))  # no public name
    for secret in (*secrets, *own):
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "***")
    source = getattr(found, "method", None) or "the credential source"
    failure: BaseException = bx.CredentialRetrievalError(provider=source, error_msg=text[:500])
    raise failure


def guard_signing(client: Any) -> None:
    """Have ``client`` meet its credentials' failure as botocore's exception (:func:`checked`)
    before it signs: botocore's signer lets a refresh's own exception out as it is.

    One handler per client, whichever backends share it. Outside botocore's refresh
    windows it reads nothing. In its mandatory window it reads the credentials
    the signer reads next (refreshed then: no second refresh); in its advisory
    window, where a failed refresh is only logged and would be tried again by the
    signer, it hands the credentials it read to the signer (botocore's
    ``request_credentials``): one refresh per request, as boto3 alone makes.
    """
    import botocore
    from botocore import exceptions as bx
    from botocore.credentials import Credentials

    def check(
        request: Any = None, request_signer: Any = None, signature_version: Any = None, **_: Any
    ) -> None:
        found: Any = getattr(request_signer, "_credentials", None)  # what client._get_credentials() reads
        signing = request.context.setdefault("signing", {}) if request is not None else {}
        if signing.get("request_credentials") is signing.pop(_HANDED, False):
            del signing["request_credentials"]  # ours, for an earlier try of this request
        if signature_version is botocore.UNSIGNED or not hasattr(found, "refresh_needed"):
            pass  # static credentials (or none: botocore's NoCredentialsError) are never refreshed
        elif not found.refresh_needed():
            pass
        elif _due(found):  # a failed refresh raises: refreshed here, the signer's read is no refresh
            checked(found.get_frozen_credentials, found, bx)
        else:  # advisory: read once, here, and handed to the signer (which would refresh again)
            frozen = checked(found.get_frozen_credentials, found, bx)
            signing["request_credentials"] = signing[_HANDED] = Credentials(*frozen)
        refuse: Callable[[], None] | None = getattr(SENDING, "refuse", None)
        if refuse is not None:
            refuse()  # the backend's StoreError once it is closed: the request is not sent

    client.meta.events.register("before-sign.s3", check, unique_id="backends-credentials")
    _CLIENTS.add(client)


#: where the check keeps the credentials it handed to the signer in a request's signing context
_HANDED: Final = "backends-handed-credentials"


def _due(found: Any) -> bool:
    """Whether botocore's next read of ``found`` must refresh it (its mandatory window), where a
    failed refresh raises. In its advisory window a failure is only logged and the credentials
    still valid sign: read there, they would be refreshed twice per request (here, then by the
    signer), the failing source asked twice."""
    mandatory = getattr(found, "_mandatory_refresh_timeout", 600)  # botocore's own (no public name)
    return bool(found.refresh_needed(mandatory))


#: every client of a backend, for its child after a fork (:func:`_forked`)
_CLIENTS: weakref.WeakSet[Any] = weakref.WeakSet()


def _forked() -> None:
    """In a forked child: a new refresh lock for each client's credentials.

    The fork copies botocore's lock as it was: held, if another thread of the
    parent was refreshing; no thread of the child ever releases it, and the
    child's first refresh would wait for it forever.
    """
    for client in list(_CLIENTS):
        found = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        if found is not None and hasattr(found, "_refresh_lock"):  # RefreshableCredentials' own
            found._refresh_lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)
