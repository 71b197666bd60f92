"""Signing in, in Chromium: a wrong password and the throttle, idle expiry, one-time links,
invitations and password resets by e-mail (captured with aiosmtpd), and my sessions."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.models import ConsoleSession
from grantflow.auth.signin_links import Purpose, mint
from grantflow.auth.users import find_user_by_email
from grantflow.people import account_email, email
from grantflow.store.base import utcnow
from tests.browser.conftest import PASSWORD, Console
from tests.support.browser import PageWatch, sign_in
from tests.support.smtp import Sink, smtp_sink

LINK = re.compile(r"http://127\.0\.0\.1:\d+/password/set/[A-Za-z0-9_-]+")


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def console_overrides(sink: Sink) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_security": "none"}


def _actions(console: Console, action: str) -> list[AuditEntry]:
    with console.database.transaction() as session:
        rows = session.execute(select(AuditEntry).where(AuditEntry.action == action))
        return list(rows.scalars())


def _fill(page: Page, email_address: str, password: str) -> None:
    page.get_by_label("E-mail").fill(email_address)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def test_wrong_password_then_the_throttle(
    page: Page, console: Console, page_watch: PageWatch
) -> None:
    """A wrong password says 'the e-mail or password is not right'; after 5 failures even the
    right password is refused with 'too many failed sign-in attempts; try again in 15 minutes';
    failures and the throttle are audited."""
    page_watch.allow("status of 401")
    page_watch.allow("status of 429")
    address = console.user("viewer")
    page.goto("/login")
    for _ in range(5):
        _fill(page, address, "not the password")
        expect(page.get_by_role("alert")).to_contain_text("The e-mail or password is not right.")
    _fill(page, address, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text(
        "Too many failed sign-in attempts; try again in 15 minutes."
    )
    assert page.url.endswith("/login")
    assert len(_actions(console, "auth.login.failed")) == 5
    (throttled,) = _actions(console, "auth.login.throttled")
    assert throttled.summary["locked"] == "account"
    assert _actions(console, "auth.login.succeeded") == []


def test_an_idle_session_goes_back_to_login(
    signed_in_page: Callable[..., Page], console: Console
) -> None:
    """A session unused for longer than its idle timeout (12 hours) is signed out: the next
    page asks to sign in again, then comes back."""
    page = signed_in_page("viewer")
    page.goto("/account/sessions")
    with console.database.transaction() as session:
        session.execute(
            update(ConsoleSession).values(last_seen_at=utcnow() - dt.timedelta(hours=13))
        )
    page.reload()
    page.wait_for_url("**/login?next=/account/sessions")
    _fill(page, "viewer@example.com", PASSWORD)
    page.wait_for_url("**/account/sessions")


def test_a_one_time_link_signs_in_once(page: Page, console: Console, page_watch: PageWatch) -> None:
    """A sign-in link (as `grantflow users sign-in-link` prints) signs in after 'Continue';
    opened again after signing out, it says it was already used."""
    page_watch.allow("status of 410")
    address = console.user("admin", password=None)
    with console.database.transaction() as session:
        user = find_user_by_email(session, address)
        assert user is not None
        _link, url = mint(session, Actor.system("cli"), console.settings, user, Purpose.SIGN_IN)
    page.goto(url)
    page.get_by_role("button", name=f"Continue as {address}").click()
    page.wait_for_url(f"{console.url}/")
    expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    response = page.goto(url)
    assert response is not None
    assert response.status == 410
    expect(page.get_by_text("This link was already used; a link works once.")).to_be_visible()
    assert [e.summary["method"] for e in _actions(console, "auth.login.succeeded")] == ["link"]


def test_an_invitation_by_email_sets_a_password(page: Page, console: Console, sink: Sink) -> None:
    """`grantflow users invite` e-mails a link; it opens a form that sets the password and
    signs in; the password then works on the login form."""
    address = console.user("approver", "new@example.com", password=None)
    with console.database.transaction() as session:
        user = find_user_by_email(session, address)
        assert user is not None
        account_email.queue_invite(session, console.settings, user, invited_by="admin@example.com")
    email.deliver_due(console.database, console.settings)
    (received,) = sink.wait_for(1)
    assert received.message["Subject"] == "You are invited to Grantflow"
    link = LINK.search(received.body)
    assert link is not None, received.body
    page.goto(link.group(0))
    expect(page.get_by_role("heading", name="Welcome: choose your password")).to_be_visible()
    page.get_by_label("New password").fill("a brand new passphrase")
    page.get_by_label("Repeat it").fill("a brand new passphrase")
    page.get_by_role("button", name="Set password and sign in").click()
    page.wait_for_url(f"{console.url}/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    _fill(page, address, "a brand new passphrase")
    page.wait_for_url(f"{console.url}/")


def test_forgot_password_says_the_same_either_way_and_resets(
    page: Page, console: Console, sink: Sink
) -> None:
    """The forgot-password form gives the same answer for an unknown e-mail and a real one; the
    real one gets a reset link that sets a new password; the old one stops working."""
    address = console.user("viewer", "forgetful@example.com")
    answers = []
    for typed in ("nobody@example.com", address):
        page.goto("/login")
        page.get_by_role("link", name="Forgot your password?").click()
        page.get_by_label("E-mail").fill(typed)
        page.get_by_role("button", name="Send the link").click()
        answers.append(page.get_by_role("status").inner_text())
    assert answers[0] == answers[1]
    assert "If an account exists for that address" in answers[0]
    email.deliver_due(console.database, console.settings)
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == [address]
    link = LINK.search(received.body)
    assert link is not None
    page.goto(link.group(0))
    page.get_by_label("New password").fill("another long passphrase")
    page.get_by_label("Repeat it").fill("another long passphrase")
    page.get_by_role("button", name="Set password and sign in").click()
    page.wait_for_url(f"{console.url}/")
    with console.database.transaction() as session:
        user = find_user_by_email(session, address)
        assert user is not None
        assert user.password_hash is not None
    requested = _actions(console, "auth.password_reset.requested")
    assert [(e.summary["email"], e.summary["sent"]) for e in requested] == [
        ("nobody@example.com", False),
        (address, True),
    ]


def test_my_sessions_sign_out_one_and_everywhere(
    signed_in_page: Callable[..., Page], console: Console, new_context: Callable[..., Any]
) -> None:
    """My sessions lists both browsers; signing the other one out (htmx) removes it and that
    browser must sign in again; 'Sign out everywhere' ends this one too."""
    page = signed_in_page("operator")
    other = new_context().new_page()
    sign_in(other, console.url, "operator@example.com", PASSWORD)
    page.goto("/account/sessions")
    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(2)
    rows.filter(has_not_text="this browser").get_by_role("button", name="Sign out").click()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("this browser")
    other.goto("/")
    other.wait_for_url("**/login")
    page.get_by_role("button", name="Sign out everywhere").click()
    page.wait_for_url("**/login")
    expect(page.get_by_text("Signed out everywhere (1 session).")).to_be_visible()
    page.goto("/account/sessions")
    page.wait_for_url("**/login?next=/account/sessions")
