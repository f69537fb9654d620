"""The boto3 client's credentials, as the obstore engine's store asks for them.

obstore keeps the credential its ``credential_provider`` returned until
``refresh_threshold`` before the ``expires_at`` given with it; within that,
it asks again at most every 100 ms (its token cache's back-off). So the
expiry handed over is the credential's own, as botocore holds it: one an
hour from expiry is read once, not ten times a second, and one 5 minutes
from expiry is asked for again, which makes botocore refresh it (it must,
10 minutes before). A credential that lives less than 5 minutes is asked
for at every request 100 ms apart, each time refreshed, as boto3 itself
refreshes it at every request."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # obstore is the extra of the obstore engine
    from obstore.store import S3Credential

__all__ = ["ClientCredentials"]

#: how many credentials' secrets an error is still cleaned of after they were rotated out
_KEPT: Final = 8

#: the life given to a refreshable credential whose expiry botocore does not tell
#: (obstore asks again 5 minutes before it: every 10 minutes)
_UNKNOWN_LIFE: Final = timedelta(minutes=15)


class ClientCredentials:
    """obstore's ``credential_provider`` for one boto3 client: its chain, read when obstore asks."""

    #: how long before a credential's expiry obstore asks again (obstore reads this attribute;
    #: its own default, made explicit, and under botocore's 10-minute mandatory refresh)
    refresh_threshold: Final = timedelta(minutes=5)

    def __init__(self, client: Any, missing: type[Exception]) -> None:
        self._client = client
        self._missing = missing  # botocore's NoCredentialsError
        #: what an error's text is cleaned of (S3 echoes a signed request's token): the
        #: secrets of the last few credentials, as a request signed before a rotation
        #: may fail after it (and echo the token it was signed with)
        self.secrets: tuple[str, ...] = ()

    def __call__(self) -> S3Credential:
        found = self._client._get_credentials()  # botocore's resolved chain
        if found is None:
            raise self._missing()
        frozen, expiry = _read(found)
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
