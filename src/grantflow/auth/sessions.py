"""Console sessions: server-side rows behind an opaque cookie, with idle and absolute expiry.

The cookie holds a 256-bit random token; the row keeps its SHA-256 only, so a copy of the
database holds no usable session. A session ends when it is signed out (revoked), when it was
not used for its idle timeout, at its absolute expiry, or when its user is deactivated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.models import ConsoleSession, User
from grantflow.auth.permissions import Permission, permissions_for
from grantflow.config import Settings
from grantflow.errors import NotFound
from grantflow.store.base import utcnow

# last_seen_at is written at most this often: a page view is not a write each time
_SEEN_RESOLUTION = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class SessionPolicy:
    idle: dt.timedelta
    absolute: dt.timedelta

    @classmethod
    def of(cls, settings: Settings) -> SessionPolicy:
        return cls(
            idle=dt.timedelta(minutes=settings.session_idle_minutes),
            absolute=dt.timedelta(days=settings.session_max_days),
        )


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def start_session(
    session: Session,
    user: User,
    policy: SessionPolicy,
    *,
    method: str,
    user_agent: str | None,
    address: str | None,
) -> tuple[ConsoleSession, str]:
    """A new session for `user`; returns the row and the cookie's token (never stored).
    The caller audits the sign-in that led here."""
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    row = ConsoleSession(
        user_id=user.id,
        token_hash=_hash(raw),
        method=method,
        created_at=now,
        last_seen_at=now,
        expires_at=now + policy.absolute,
        idle_timeout_seconds=int(policy.idle.total_seconds()),
        user_agent=(user_agent or "")[:300] or None,
        address=(address or "")[:64] or None,
    )
    session.add(row)
    session.flush()
    return row, raw


def is_live(row: ConsoleSession, now: dt.datetime) -> bool:
    idle = dt.timedelta(seconds=row.idle_timeout_seconds)
    return (
        row.revoked_at is None
        and row.expires_at > now
        and row.last_seen_at + idle > now
        and row.user.active
    )


def find_session(session: Session, raw: str) -> ConsoleSession | None:
    """The live session a cookie's token names (its last use recorded), or None."""
    if not raw or len(raw) > 100:
        return None
    row = session.execute(
        select(ConsoleSession).where(ConsoleSession.token_hash == _hash(raw))
    ).scalar_one_or_none()
    now = utcnow()
    if row is None or not is_live(row, now):
        return None
    if now - row.last_seen_at > _SEEN_RESOLUTION:
        row.last_seen_at = now
    return row


def actor_of(row: ConsoleSession, request_id: str | None = None) -> Actor:
    """The signed-in user as an `Actor`, with the same role -> permission mapping as tokens."""
    return Actor(
        label=row.user.email,
        user_id=row.user_id,
        permissions=permissions_for(row.user.roles),
        request_id=request_id,
        scope="console",
    )


def end_session(session: Session, actor: Actor, session_id: str) -> ConsoleSession:
    """Sign one session out: the user's own (self), or anyone's (user:admin)."""
    row = session.get(ConsoleSession, session_id)
    if row is None or (
        row.user_id != actor.user_id and Permission.USER_ADMIN not in actor.permissions
    ):
        raise NotFound(f"session {session_id} does not exist", target_type="console_session")
    actor.require(Permission.SELF)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            session,
            actor,
            "auth.logout",
            "user",
            row.user_id,
            {"session_id": row.id, "user": row.user.email},
        )
    return row


def end_all_sessions(
    session: Session, actor: Actor, user_id: str, *, reason: str = "sign out everywhere"
) -> int:
    """Sign out every live session of a user (theirs: self; anyone's: user:admin);
    returns how many ended."""
    if user_id != actor.user_id:
        actor.require(Permission.USER_ADMIN)
    result = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.user_id == user_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    ended = int(getattr(result, "rowcount", 0) or 0)
    if ended:
        user = session.get(User, user_id)
        audit.record(
            session,
            actor,
            "auth.logout",
            "user",
            user_id,
            {"everywhere": True, "sessions": ended, "reason": reason, "user": user and user.email},
        )
    return ended


def list_sessions(session: Session, user_id: str) -> list[ConsoleSession]:
    """A user's sessions that are still live, the newest first."""
    now = utcnow()
    rows = session.execute(
        select(ConsoleSession)
        .where(ConsoleSession.user_id == user_id, ConsoleSession.revoked_at.is_(None))
        .where(ConsoleSession.expires_at > now)
        .order_by(ConsoleSession.created_at.desc())
    ).scalars()
    return [row for row in rows if is_live(row, now)]
