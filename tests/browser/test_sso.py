"""Single sign-on in Chromium against a local OpenID Connect provider (Authlib) on
127.0.0.1: sign in, an unverified e-mail refused, an unknown user refused without just-in-time
creation and created with it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.audit.models import AuditEntry
from grantflow.auth.models import ConsoleSession, User
from tests.browser.conftest import Console
from tests.support.browser import PageWatch
from tests.support.oidc import OidcProvider, running_oidc_provider


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with running_oidc_provider() as running:
        yield running


@pytest.fixture
def jit_role() -> str | None:
    return None


@pytest.fixture
def console_overrides(provider: OidcProvider, jit_role: str | None) -> dict[str, Any]:
    """The console's SSO pointed at the provider (the client registered at the first use)."""
    return {
        "oidc_issuer": provider.url,
        "oidc_client_id": "grantflow-console",
        "oidc_client_secret": "test-secret-1234",
        "oidc_jit_role": jit_role,
    }


@pytest.fixture
def refused(page_watch: PageWatch) -> None:
    """A refused sign-in answers 401 (the login page, saying why): the browser logs it."""
    page_watch.allow("status of 401")


@pytest.fixture
def registered(console: Console, provider: OidcProvider) -> Console:
    provider.register_client(f"{console.url}/login/sso/callback", secret="test-secret-1234")
    return console


def _sso(page: Page, email: str) -> None:
    page.goto("/login")
    page.get_by_role("link", name="Sign in with SSO").click()
    page.get_by_label("Provider e-mail").fill(email)
    page.get_by_role("button", name="Sign in at the provider").click()


def test_sso_signs_in_a_known_user(page: Page, registered: Console, provider: OidcProvider) -> None:
    """Clicking 'Sign in with SSO' and signing in at the provider lands on the home page
    signed in as the user with that verified e-mail; the session says sso; audited."""
    registered.user("approver", "ada@example.com", password=None)
    provider.add_user("ada@example.com", "Ada at the IdP")
    _sso(page, "ada@example.com")
    page.wait_for_url(f"{registered.url}/")
    expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()
    expect(page.get_by_title("My sessions")).to_have_text("ada")
    assert provider.token_requests[0]["code_verifier"]  # PKCE
    with registered.database.transaction() as session:
        row = session.execute(select(ConsoleSession)).scalar_one()
        assert row.method == "sso"
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "auth.login.succeeded")
        ).scalar_one()
        assert entry.actor == "ada@example.com"
        assert entry.summary["method"] == "sso"


@pytest.mark.usefixtures("refused")
def test_sso_refuses_an_unverified_email(
    page: Page, registered: Console, provider: OidcProvider
) -> None:
    """A provider account whose e-mail is not verified does not sign in, even though a user
    with that e-mail exists; the login page says why."""
    registered.user("admin", "eve@example.com", password=None)
    provider.add_user("eve@example.com", email_verified=False)
    _sso(page, "eve@example.com")
    page.wait_for_url("**/login/sso/callback**")
    expect(page.get_by_role("alert")).to_contain_text(
        "The provider has not verified the e-mail eve@example.com."
    )
    page.goto("/")
    page.wait_for_url("**/login")


@pytest.mark.usefixtures("refused")
def test_sso_refuses_an_unknown_user_without_jit(
    page: Page, registered: Console, provider: OidcProvider
) -> None:
    """Without GRANTFLOW_OIDC_JIT_ROLE a verified e-mail with no Grantflow user is refused,
    creates nothing, and is audited as auth.login.failed."""
    provider.add_user("newcomer@example.com")
    _sso(page, "newcomer@example.com")
    expect(page.get_by_role("alert")).to_contain_text(
        "There is no Grantflow user with the e-mail newcomer@example.com."
    )
    with registered.database.transaction() as session:
        assert session.execute(select(User)).scalars().all() == []
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "auth.login.failed")
        ).scalar_one()
        assert entry.summary["email"] == "newcomer@example.com"


@pytest.mark.parametrize("jit_role", ["approver"])
def test_sso_creates_an_unknown_user_with_jit(
    page: Page, registered: Console, provider: OidcProvider
) -> None:
    """With GRANTFLOW_OIDC_JIT_ROLE=approver a verified newcomer is created with that role and
    signed in."""
    provider.add_user("newcomer@example.com", "New Comer")
    _sso(page, "newcomer@example.com")
    page.wait_for_url(f"{registered.url}/")
    expect(page.get_by_title("My sessions")).to_have_text("New Comer")
    with registered.database.transaction() as session:
        user = session.execute(select(User)).scalar_one()
        assert (user.email, user.roles, user.password_hash) == (
            "newcomer@example.com",
            ["approver"],
            None,
        )
