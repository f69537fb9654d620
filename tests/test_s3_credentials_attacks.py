"""Attacks on the obstore engine's refreshable credentials (#29): edge expiries, rotations, secrets."""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import NoCredentialsError

from backends.s3.credentials import ClientCredentials


class Client:
    """boto3's client as the provider reads it: its resolved credentials (botocore's own objects)."""

    def __init__(self, found: Any) -> None:
        self.found = found

    def _get_credentials(self) -> Any:
        return self.found


class Rotating:
    """A refresh function handing out a new secret each time, with the expiry it is given."""

    def __init__(self, *expiries: datetime) -> None:
        self.expiries = list(expiries)
        self.calls = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        expiry = self.expiries[min(self.calls - 1, len(self.expiries) - 1)]
        return {
            "access_key": "AKIDEXAMPLE",
            "secret_key": f"SECRET-{self.calls}",
            "token": f"TOKEN-{self.calls}",
            "expiry_time": expiry.isoformat(),
        }


def refreshable(refresh: Rotating) -> RefreshableCredentials:
    return RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")


def test_none_is_botocores_no_credentials_error() -> None:
    with pytest.raises(NoCredentialsError):
        ClientCredentials(Client(None), NoCredentialsError)()


def test_static_credentials_never_expire_and_are_secrets() -> None:
    provider = ClientCredentials(Client(Credentials("AK", "S3CR3T", "T0K3N")), NoCredentialsError)
    got = provider()
    assert got["expires_at"] is None and {"S3CR3T", "T0K3N"} <= set(provider.secrets)
    assert "S3CR3T" not in repr(provider) and "T0K3N" not in repr(provider)


@pytest.mark.parametrize(
    "zone", [timezone.utc, timezone(timedelta(hours=5)), timezone(timedelta(hours=-9, minutes=-30))]
)
def test_an_expiry_in_any_zone_is_handed_over_in_utc_at_the_same_instant(zone: timezone) -> None:
    expiry = (datetime.now(timezone.utc) + timedelta(hours=1)).astimezone(zone).replace(microsecond=0)
    got = ClientCredentials(Client(refreshable(Rotating(expiry))), NoCredentialsError)()
    assert got["expires_at"] is not None
    assert got["expires_at"].utcoffset() == timedelta(0) and got["expires_at"] == expiry


def test_an_expiry_in_the_past_is_refreshed_before_it_is_handed_over() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    refresh = Rotating(now - timedelta(hours=1), now + timedelta(hours=1))
    provider = ClientCredentials(Client(refreshable(refresh)), NoCredentialsError)
    got = provider()
    assert got["secret_access_key"] == "SECRET-2" and got["expires_at"] == now + timedelta(hours=1)


def test_secrets_of_a_rotated_credential_are_still_cleaned() -> None:
    """A request signed before a rotation may fail after it: its echoed token must still be scrubbed."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    refresh = Rotating(now + timedelta(minutes=20), now + timedelta(hours=1))
    found = refreshable(refresh)
    provider = ClientCredentials(Client(found), NoCredentialsError)
    first = provider()
    assert first["token"] == "TOKEN-1"
    found._expiry_time = now + timedelta(minutes=5)  # due: botocore refreshes at the next read
    second = provider()
    assert second["token"] == "TOKEN-2" and second["expires_at"] == now + timedelta(hours=1)
    assert {"SECRET-1", "TOKEN-1", "SECRET-2", "TOKEN-2"} <= set(provider.secrets)


def test_an_expiry_that_moves_backwards_is_handed_over_as_it_is() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    refresh = Rotating(now + timedelta(hours=2), now + timedelta(minutes=30))
    found = refreshable(refresh)
    provider = ClientCredentials(Client(found), NoCredentialsError)
    assert provider()["expires_at"] == now + timedelta(hours=2)
    found._expiry_time = now + timedelta(minutes=1)
    assert provider()["expires_at"] == now + timedelta(minutes=30)


def test_a_provider_that_raises_leaks_no_secret_of_ours() -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    calls = [0]

    def refresh() -> dict[str, str]:
        calls[0] += 1
        if calls[0] > 1:
            raise OSError("metadata service down")
        return Rotating(now + timedelta(minutes=20))()

    found = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    provider = ClientCredentials(Client(found), NoCredentialsError)
    provider()
    found._expiry_time = now - timedelta(minutes=1)  # mandatory refresh: it fails
    with pytest.raises(Exception) as caught:
        provider()
    text = "".join(traceback.format_exception(caught.value))
    assert "SECRET-1" not in text and "TOKEN-1" not in text
