"""Single sign-on believes only a valid round trip: the ID token's signature (a key the
provider publishes), issuer, audience and nonce, and the round trip's state, are checked; any
failure is refused with the reason on the login page and no session."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from grantflow.api import create_app
from grantflow.auth.actor import Actor
from grantflow.auth.models import ConsoleSession
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.support.oidc import OidcProvider, running_oidc_provider
from tests.support.server import serve_in_thread
from tests.support.services import free_port

SECRET = "test-secret-1234"


@dataclass
class Sso:
    url: str
    provider: OidcProvider
    database: Database


@pytest.fixture
def sso(settings: Settings, database: Database) -> Iterator[Sso]:
    """Grantflow with SSO against a local provider that knows ada@example.com (verified), who
    is a Grantflow approver."""
    with running_oidc_provider() as provider:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        served = Settings(
            **{
                **settings.model_dump(),
                "public_url": url,
                "oidc_issuer": provider.url,
                "oidc_client_id": "grantflow-console",
                "oidc_client_secret": SECRET,
            }
        )
        provider.register_client(f"{url}/login/sso/callback", secret=SECRET)
        provider.add_user("ada@example.com", "Ada")
        with database.transaction() as session:
            create_user(
                session, Actor.system("test"), email="ada@example.com", roles=[Role.APPROVER]
            )
        with serve_in_thread(create_app(served, database), port=port):
            yield Sso(url=url, provider=provider, database=database)


def _round_trip(sso: Sso, client: httpx.Client, email: str = "ada@example.com") -> str:
    """Start SSO, sign in at the provider; the callback URL the provider sends back to."""
    start = client.get("/login/sso")
    assert start.status_code == 303, start.text
    authorize = httpx.URL(start.headers["location"])
    assert authorize.params["code_challenge_method"] == "S256"
    assert authorize.params["nonce"]
    answer = httpx.post(
        f"{sso.provider.url}/authorize",
        data={"query": authorize.query.decode(), "email": email},
        timeout=60,
    )
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def _sessions(sso: Sso) -> int:
    with sso.database.transaction() as session:
        return len(session.execute(select(ConsoleSession)).scalars().all())


def test_a_valid_round_trip_signs_in(sso: Sso) -> None:
    """The untampered flow ends signed in (303 to /, a session cookie, one session row)."""
    with httpx.Client(base_url=sso.url, timeout=60) as client:
        done = client.get(_round_trip(sso, client))
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/"
        assert client.get("/").status_code == 200
    assert _sessions(sso) == 1


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("unpublished_key", "ID token is not valid"),
        ("issuer", "issuer 'https://elsewhere.example' is not"),
        ("audience", "it was issued to another client (aud)"),
        ("nonce", "its nonce does not match this sign-in"),
    ],
)
def test_a_tampered_id_token_is_refused(sso: Sso, tamper: str, reason: str) -> None:
    """An ID token signed with a key the provider does not publish, or naming another issuer,
    another audience or another nonce, is refused (401, the reason shown); no session."""
    sso.provider.tamper = tamper
    with httpx.Client(base_url=sso.url, timeout=60) as client:
        done = client.get(_round_trip(sso, client))
    assert done.status_code == 401, done.text
    assert reason in html.unescape(done.text)
    assert _sessions(sso) == 0


def test_a_callback_with_another_state_is_refused(sso: Sso) -> None:
    """A callback whose state is not the one this browser started with (a forged or replayed
    redirect) is refused before the code is used."""
    with httpx.Client(base_url=sso.url, timeout=60) as client:
        callback = httpx.URL(_round_trip(sso, client))
        forged = callback.copy_merge_params({"state": "not-the-state"})
        done = client.get(str(forged))
    assert done.status_code == 401
    assert "This sign-in did not start here" in done.text
    assert sso.provider.token_requests == []
    assert _sessions(sso) == 0


def test_a_callback_in_another_browser_is_refused(sso: Sso) -> None:
    """The provider's redirect opened in a browser that did not start the sign-in (no round
    trip cookie) signs nobody in."""
    with httpx.Client(base_url=sso.url, timeout=60) as starter:
        callback = _round_trip(sso, starter)
    with httpx.Client(base_url=sso.url, timeout=60) as other:
        done = other.get(callback)
    assert done.status_code == 401
    assert _sessions(sso) == 0
