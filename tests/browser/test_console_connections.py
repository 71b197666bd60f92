"""Connections in the console (Chromium), against a real OAuth 2.0 server on 127.0.0.1: a
refresh the server refuses (invalid_grant) turns the connection reauth_required with a banner
saying why and since when; replacing the credential through the write-only form clears it, and
no page ever carries the secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Response, expect

from grantflow.access import applications
from grantflow.auth.actor import Actor
from grantflow.connections import service
from grantflow.connections.crypto import keyring_for
from grantflow.connections.models import Connection
from grantflow.connections.schemas import ConnectionCreate
from tests.browser.conftest import PASSWORD, Console
from tests.support.browser import screenshot, sign_in
from tests.support.oauth import OAuthServer, running_oauth_server

SYSTEM = Actor.system("test")


@pytest.fixture
def console_overrides() -> dict[str, Any]:
    """The served Grantflow may reach the OAuth server on 127.0.0.1 (outbound allowlist)."""
    return {"outbound_allow": "127.0.0.1"}


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server(expires_in=600, rotate=True) as server:
        yield server


class Bodies:
    """Every answer the console gave a browser context (read as it arrives), to search for
    secrets afterwards."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def watch(self, context: BrowserContext) -> None:
        context.on("response", self._seen)

    def _seen(self, response: Response) -> None:
        if 300 <= response.status < 400:
            return  # a redirect: no body
        self.texts.append(response.body().decode("utf-8", "replace"))


def _connection(console: Console, oauth: OAuthServer) -> tuple[str, dict[str, str]]:
    client = oauth.register_client()
    secret = {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "refresh_token": oauth.issue_refresh_token(client.client_id),
    }
    with console.database.transaction() as session:
        app = applications.create_application(
            session, SYSTEM, applications.ApplicationCreate(name="Acme CRM")
        )
        connection = service.create_connection(
            session,
            SYSTEM,
            app.id,
            ConnectionCreate.model_validate(
                {
                    "name": "crm",
                    "base_url": f"{oauth.url}/api",
                    "auth_kind": "oauth_refresh_token",
                    "auth_settings": {"token_url": oauth.token_url},
                }
            ),
        )
        keyring = keyring_for(console.settings)
        service.set_credential(session, SYSTEM, keyring, connection.id, secret)
        return connection.id, secret


def test_a_reauth_banner_appears_and_clears_after_the_credential_is_replaced(
    console: Console,
    oauth: OAuthServer,
    new_context: Callable[[], BrowserContext],
) -> None:
    """The authorization server revokes the refresh token; Test connection makes the
    connection reauth_required and a banner says why (invalid_grant) and since when. The
    editor replaces the credential through the write-only form: the banner is gone, the next
    test passes, the health history shows both changes — and neither the old nor the new
    secret is in any page the console served, to the editor or to an admin reading the audit."""
    connection_id, old = _connection(console, oauth)
    oauth.revoke_refresh()
    bodies = Bodies()
    context = new_context()
    bodies.watch(context)
    page = context.new_page()
    sign_in(page, console.url, console.user("editor"), PASSWORD)

    page.goto(f"/connections/{connection_id}")
    expect(page.locator(".banner")).to_have_count(0)
    page.get_by_role("button", name="Test connection").click()
    banner = page.locator(".banner.bad")
    expect(banner.locator(".banner-title")).to_have_text("Reauthorisation required")
    expect(banner).to_contain_text("invalid_grant")
    expect(banner).to_contain_text("Since 20")
    expect(banner).to_contain_text("Next: replace the credential")
    expect(page.locator(".flash-error")).to_contain_text("Test connection failed")
    screenshot(page, "connection-reauth-required")
    page.goto("/connections")
    first = page.locator("table.list tbody tr").first
    expect(first.locator(".chip")).to_have_text("reauth required")

    page.goto(f"/connections/{connection_id}")
    page.get_by_role("link", name="Replace credential").click()
    new = {
        "client_id": old["client_id"],
        "client_secret": old["client_secret"],
        "refresh_token": oauth.issue_refresh_token(old["client_id"]),
    }
    page.get_by_label("Client id").fill(new["client_id"])
    page.get_by_label("Client secret").fill(new["client_secret"])
    page.get_by_label("Refresh token").fill(new["refresh_token"])
    page.get_by_role("button", name="Replace credential").click()
    page.wait_for_url(f"**/connections/{connection_id}")
    expect(page.get_by_text("The credential is replaced.")).to_be_visible()
    expect(page.locator(".banner")).to_have_count(0)
    expect(page.locator(".facts .chip").first).to_have_text("connected")
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator(".flash-success")).to_contain_text("Test connection passed")
    history = page.locator("table.list").last
    expect(history).to_contain_text("status reauth_required → connected")
    expect(history).to_contain_text("status connected → reauth_required")

    admin_context = new_context()
    bodies.watch(admin_context)
    admin = admin_context.new_page()
    sign_in(admin, console.url, console.user("admin"), PASSWORD)
    for path in ("/audit", f"/connections/{connection_id}", f"/audit?target_id={connection_id}"):
        admin.goto(path)
        expect(admin.locator("main")).to_be_visible()

    texts = bodies.texts
    assert len([t for t in texts if t.startswith("<!doctype html>")]) >= 8
    for name in ("client_secret", "refresh_token"):
        for value in (old[name], new[name]):
            leaked = [t[:200] for t in texts if value in t]
            assert not leaked, (name, leaked)
    with console.database.transaction() as session:
        connection = session.get(Connection, connection_id)
        assert connection is not None
        assert (connection.status, connection.status_reason) == ("connected", None)
