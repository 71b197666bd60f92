"""Console sessions over HTTP: cookie flags, expiry, what ends a session, and the sign-in
throttle per account and per address."""

from __future__ import annotations

import datetime as dt
import hashlib

import httpx
from sqlalchemy import select, update

from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.models import ConsoleSession, SignInAttempt
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user, set_password, update_user
from grantflow.config import Settings
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.console import post_login, serving_console

PASSWORD = "correct horse battery staple"


def _user(database: Database, email: str, role: Role = Role.VIEWER) -> str:
    with database.transaction() as session:
        return create_user(
            session, Actor.system("test"), email=email, roles=[role], password=PASSWORD
        ).id


def _session_cookie(response: httpx.Response) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if "grantflow_session=" in h]
    return header


def test_session_cookie_flags_and_the_token_is_not_stored(
    settings: Settings, database: Database
) -> None:
    """The session cookie is HttpOnly, SameSite=Lax, Path=/, lasts the absolute lifetime, is not
    Secure over plain http; the database holds only its SHA-256."""
    _user(database, "flags@example.com")
    with serving_console(settings, database) as (url, _), httpx.Client(base_url=url) as client:
        response = post_login(client, "flags@example.com", PASSWORD)
    assert response.status_code == 303
    header = _session_cookie(response)
    assert "HttpOnly" in header
    assert "SameSite=lax" in header
    assert "Path=/" in header
    assert f"Max-Age={7 * 86400}" in header
    assert "Secure" not in header
    raw = header.split(";")[0].split("=", 1)[1]
    with database.transaction() as session:
        row = session.execute(select(ConsoleSession)).scalar_one()
        assert row.token_hash == hashlib.sha256(raw.encode()).hexdigest()
        assert (row.method, row.idle_timeout_seconds) == ("password", 12 * 3600)


def test_cookie_is_secure_when_served_over_https(settings: Settings, database: Database) -> None:
    """With GRANTFLOW_PUBLIC_URL on https (a TLS proxy in front), the cookies are Secure."""
    _user(database, "tls@example.com")
    public = {"public_url": "https://grantflow.example.com"}
    with (
        serving_console(settings, database, **public) as (url, _),
        httpx.Client(base_url=url) as client,
    ):
        token_page = client.get("/login")
        assert "Secure" in token_page.headers["set-cookie"]
        # the anonymous cookie is Secure, so this plain-http client does not send it back:
        # the login form is refused (403) rather than accepted without its CSRF binding
        token = token_page.text.split('name="csrf_token" value="')[1].split('"')[0]
        refused = client.post(
            "/login", data={"csrf_token": token, "email": "tls@example.com", "password": PASSWORD}
        )
    assert refused.status_code == 403


def test_absolute_expiry_and_deactivation_end_a_session(
    settings: Settings, database: Database
) -> None:
    """A session past its absolute expiry, or of a user deactivated since, no longer opens
    pages (redirect to /login)."""
    user_id = _user(database, "ends@example.com")
    with serving_console(settings, database) as (url, _):
        with httpx.Client(base_url=url) as client:
            assert post_login(client, "ends@example.com", PASSWORD).status_code == 303
            assert client.get("/").status_code == 200
            with database.transaction() as session:
                session.execute(
                    update(ConsoleSession).values(expires_at=utcnow() - dt.timedelta(seconds=1))
                )
            assert client.get("/").headers["location"] == "/login"
        with httpx.Client(base_url=url) as client:
            assert post_login(client, "ends@example.com", PASSWORD).status_code == 303
            with database.transaction() as session:
                update_user(session, Actor.system("test"), user_id, active=False)
            assert client.get("/").status_code == 303


def test_a_new_password_ends_every_session(settings: Settings, database: Database) -> None:
    """Setting a password (an admin's reset, or the user's own) signs out the user's sessions."""
    user_id = _user(database, "reset@example.com")
    with serving_console(settings, database) as (url, _), httpx.Client(base_url=url) as client:
        assert post_login(client, "reset@example.com", PASSWORD).status_code == 303
        with database.transaction() as session:
            set_password(session, Actor.system("cli"), user_id, "a completely new one")
        assert client.get("/").status_code == 303
        with database.transaction() as session:
            row = session.execute(select(ConsoleSession)).scalar_one()
            assert row.revoked_at is not None


def test_throttle_per_address_and_its_end(settings: Settings, database: Database) -> None:
    """Failures from one address across several accounts lock that address (429, in words);
    once the lockout has passed, the right password signs in again."""
    _user(database, "victim@example.com")
    limits = {"signin_max_failures_per_address": 3, "signin_lockout_minutes": 10}
    with (
        serving_console(settings, database, **limits) as (url, _),
        httpx.Client(base_url=url) as client,
    ):
        for n in range(3):
            assert post_login(client, f"guess{n}@example.com", "x" * 12).status_code == 401
        locked = post_login(client, "victim@example.com", PASSWORD)
        assert locked.status_code == 429
        assert "try again in 10 minutes" in locked.text
        with database.transaction() as session:  # eleven minutes later
            for attempt in session.execute(select(SignInAttempt)).scalars():
                attempt.at -= dt.timedelta(minutes=11)
        assert post_login(client, "victim@example.com", PASSWORD).status_code == 303


def test_signing_in_again_ends_the_browsers_previous_session(
    settings: Settings, database: Database
) -> None:
    """A browser signed in as one user that signs in as another keeps one session: the first
    is ended, and the audit entry names it."""
    _user(database, "first@example.com")
    _user(database, "second@example.com")
    with serving_console(settings, database) as (url, _), httpx.Client(base_url=url) as client:
        assert post_login(client, "first@example.com", PASSWORD).status_code == 303
        with database.transaction() as session:
            first = session.execute(select(ConsoleSession)).scalar_one()
            first_id = first.id
        page = client.get("/login/link/" + "x" * 43)  # a public page, still signed in
        assert page.status_code == 404
        # sign in as the second user through the form (the login page redirects a signed-in
        # browser, so post the form with this session's CSRF token)
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        response = client.post(
            "/login",
            data={"csrf_token": token, "email": "second@example.com", "password": PASSWORD},
        )
        assert response.status_code == 303
    with database.transaction() as session:
        rows = {r.user.email: r for r in session.execute(select(ConsoleSession)).scalars()}
        assert rows["first@example.com"].revoked_at is not None
        assert rows["second@example.com"].revoked_at is None
        (entry,) = [
            e
            for e in session.execute(select(AuditEntry)).scalars()
            if e.action == "auth.login.succeeded" and e.actor == "second@example.com"
        ]
        assert entry.summary["replaced_session_id"] == first_id
