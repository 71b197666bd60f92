"""The console's frame in Chromium: sign-in guard, sign out, error pages, CSRF, and that a
session cookie never reaches the API."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.audit.models import AuditEntry
from tests.browser.conftest import Console
from tests.support.browser import PageWatch


def _path(page: Page) -> str:
    url = urlsplit(page.url)
    return url.path + (f"?{url.query}" if url.query else "")


def test_sign_in_and_out(signed_in_page: Callable[..., Page]) -> None:
    """A user signs in through the form, sees the home page with their name, signs out and is
    back on the login page; the home page then asks to sign in again."""
    page = signed_in_page("approver")
    expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()
    expect(page.get_by_title("My sessions")).to_have_text("approver")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto("/")
    assert _path(page) == "/login"


def test_a_page_asks_to_sign_in_then_comes_back(page: Page, console: Console) -> None:
    """Opening a page signed out leads to /login?next=<page>; signing in lands on that page."""
    email = console.user("viewer")
    page.goto("/account/sessions")
    assert _path(page) == "/login?next=/account/sessions"
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("**/account/sessions")
    expect(page.get_by_role("heading", name="My sessions")).to_be_visible()
    expect(page.get_by_text("this browser")).to_be_visible()


def test_unknown_page_is_a_404_page(
    signed_in_page: Callable[..., Page], page_watch: PageWatch
) -> None:
    """A console path that does not exist shows the 404 page in words, not JSON."""
    page_watch.allow("status of 404")
    page = signed_in_page("viewer")
    response = page.goto("/no/such/page")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_text("There is no page at /no/such/page.")).to_be_visible()


def test_a_post_without_csrf_token_is_refused_and_audited(
    signed_in_page: Callable[..., Page], console: Console
) -> None:
    """A forged POST (the session cookie, no CSRF token) is a 403 page, changes nothing (the
    session stays signed in), and is audited as console.csrf_refused."""
    page = signed_in_page("operator")
    response = page.request.post("/account/sessions/end-all", form={"x": "1"})
    assert response.status == 403
    assert "security token is missing or out of date" in response.text()
    page.goto("/")
    assert _path(page) == "/"  # still signed in
    with console.database.transaction() as session:
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "console.csrf_refused")
        ).scalar_one()
        assert (entry.actor, entry.target_id) == (
            "operator@example.com",
            "/account/sessions/end-all",
        )


def test_a_session_cookie_does_not_authorise_the_api(signed_in_page: Callable[..., Page]) -> None:
    """Signed in to the console, the browser's cookie gets 401 from /api/v1 and /scim/v2."""
    page = signed_in_page("admin")
    for path in ("/api/v1/runs", "/api/v1/users", "/scim/v2/Users"):
        response = page.request.get(path)
        assert response.status == 401, path
