"""Console sessions for HTTP tests (without a browser): a user signed in by a session row made
directly, its cookie on an httpx client, and the CSRF token its forms carry."""

from __future__ import annotations

import httpx

from grantflow.auth import sessions
from grantflow.auth.users import find_user_by_email
from grantflow.config import Settings, master_key
from grantflow.console.cookies import SESSION
from grantflow.console.keys import ConsoleKeys, mac
from grantflow.store.database import Database


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
    client = httpx.Client(base_url=base_url, cookies={SESSION: raw}, timeout=60)
    token = mac(ConsoleKeys.derive(master_key(settings)).csrf, f"session|{session_id}")
    return client, token
