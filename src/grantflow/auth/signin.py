"""Signing in to the console: by password (throttled), and the session any sign-in starts.

Every outcome is audited: `auth.login.succeeded` (with the method: password, sso, link),
`auth.login.failed` (wrong e-mail or password, no password set, deactivated — the page says
only "the e-mail or password is not right"), `auth.login.throttled`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth import throttle
from grantflow.auth.actor import Actor
from grantflow.auth.models import ConsoleSession, User
from grantflow.auth.passwords import hash_password, verify_password
from grantflow.auth.sessions import SessionPolicy, start_session
from grantflow.auth.users import find_user_by_email, normalise_email
from grantflow.errors import GrantflowError, Unauthenticated
from grantflow.store.base import utcnow


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the e-mail has no account (or no password): the same work either
    way. Made on first use, not at import (hashing costs a CLI command 0.15 s)."""
    return hash_password("grantflow: no such account")


NOT_RIGHT = "the e-mail or password is not right"


class SignInThrottled(GrantflowError):
    code = "sign_in_throttled"
    http_status = 429
    failure_class = Unauthenticated.failure_class


@dataclass(frozen=True)
class Client:
    """Where a sign-in comes from."""

    address: str
    user_agent: str | None = None
    request_id: str | None = None
    replaces: str | None = None  # the session this browser had: it ends with this sign-in


def begin(
    session: Session, user: User, policy: SessionPolicy, client: Client, *, method: str
) -> tuple[ConsoleSession, str]:
    """Start a session for `user` and audit the sign-in (`auth.login.succeeded`); the session
    the browser had before ends."""
    previous = session.get(ConsoleSession, client.replaces) if client.replaces else None
    if previous is not None and previous.revoked_at is None:
        previous.revoked_at = utcnow()
    row, raw = start_session(
        session,
        user,
        policy,
        method=method,
        user_agent=client.user_agent,
        address=client.address,
    )
    actor = Actor(label=user.email, user_id=user.id, request_id=client.request_id)
    audit.record(
        session,
        actor,
        "auth.login.succeeded",
        "user",
        user.id,
        {
            "method": method,
            "address": client.address,
            "session_id": row.id,
            "replaced_session_id": previous.id if previous else None,
        },
    )
    return row, raw


def refuse(
    session: Session, client: Client, email: str, reason: str, user: User | None = None
) -> None:
    """Audit a refused sign-in (`auth.login.failed`) in the caller's transaction."""
    audit.record(
        session,
        Actor(label="anonymous", request_id=client.request_id),
        "auth.login.failed",
        "user",
        user.id if user else None,
        {"email": email, "address": client.address, "reason": reason},
    )


def sign_in_with_password(
    session: Session,
    email: str,
    password: str,
    client: Client,
    *,
    policy: SessionPolicy,
    limits: throttle.ThrottlePolicy,
) -> tuple[ConsoleSession, str] | GrantflowError:
    """A new session, or the error to show. Returned rather than raised: a failure is
    recorded (attempt and audit entry) and must commit."""
    email = normalise_email(email)[:320]
    now = utcnow()
    lock = throttle.lock_for(session, limits, email, client.address, now)
    if lock is not None:
        audit.record(
            session,
            Actor(label="anonymous", request_id=client.request_id),
            "auth.login.throttled",
            "user",
            None,
            {"email": email, "address": client.address, "locked": lock.scope, "until": lock.until},
        )
        minutes = lock.minutes_left(now)
        return SignInThrottled(
            f"too many failed sign-in attempts; try again in {minutes} "
            f"minute{'s' if minutes != 1 else ''}",
            next_action="wait, or reset your password with the 'Forgot your password?' link",
        )
    user = find_user_by_email(session, email)
    stored = user.password_hash if user is not None and user.password_hash else None
    matches = verify_password(stored or _dummy_hash(), password) and stored is not None
    if user is None or not matches or not user.active:
        reason = (
            "no such user"
            if user is None
            else "wrong password"
            if stored and not matches
            else "no password set"
            if not stored
            else "user deactivated"
        )
        throttle.record_attempt(session, limits, email, client.address, succeeded=False, now=now)
        refuse(session, client, email, reason, user)
        return Unauthenticated(
            NOT_RIGHT, next_action="check them and try again", code="sign_in_failed"
        )
    throttle.record_attempt(session, limits, email, client.address, succeeded=True, now=now)
    return begin(session, user, policy, client, method="password")
