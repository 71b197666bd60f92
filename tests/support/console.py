"""The console for HTTP tests (without a browser): a served app with chosen settings, a user
signed in by a session row made directly (its cookie on an httpx client, and the CSRF token its
forms carry), or through the login form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from grantflow.api import create_app
from grantflow.auth import sessions
from grantflow.auth.users import find_user_by_email
from grantflow.config import Settings, master_key
from grantflow.connections.outbound import tls_context
from grantflow.console.cookies import SESSION
from grantflow.console.keys import ConsoleKeys, mac
from grantflow.store.database import Database
from tests.support.server import serve_in_thread
from tests.support.services import free_port


def signed_in_client(
    base_url: str, database: Database, settings: Settings, email: str
) -> tuple[httpx.Client, str]:
    """An httpx client carrying a fresh session cookie of `email`, and that session's CSRF
    token (what `csrf_field()` renders on its pages)."""
    with database.transaction() as session:
        user = find_user_by_email(session, email)
        assert user is not None, email
        row, raw = sessions.start_session(
            session,
            user,
            sessions.SessionPolicy.of(settings),
            method="password",
            user_agent="test",
            address="127.0.0.1",
        )
        session_id = row.id
    client = httpx.Client(
        base_url=base_url, cookies={SESSION: raw}, timeout=60, verify=tls_context()
    )
    token = mac(ConsoleKeys.derive(master_key(settings)).csrf, f"session|{session_id}")
    return client, token


@contextmanager
def serving_console(
    settings: Settings, database: Database, **overrides: Any
) -> Iterator[tuple[str, Settings]]:
    """Grantflow served on a free port of 127.0.0.1 with its public URL (and `overrides`) set;
    yields the URL and the settings it runs with."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    served = Settings(**{**settings.model_dump(), "public_url": url, **overrides})
    with serve_in_thread(create_app(served, database), port=port):
        yield url, served


def login_form_token(client: httpx.Client) -> str:
    """The CSRF token of the login form this client (its anonymous cookie) is shown."""
    page = client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return match.group(1)


def post_login(client: httpx.Client, email: str, password: str) -> httpx.Response:
    """Sign in through the login form, as a browser without JavaScript would."""
    token = login_form_token(client)
    data = {"csrf_token": token, "email": email, "password": password, "next": "/"}
    return client.post("/login", data=data)
