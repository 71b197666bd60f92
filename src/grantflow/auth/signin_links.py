"""Sign-in links: single-use, expiring URLs that sign a user in once (`sign_in`: the demo's,
`grantflow users sign-in-link`) or let them choose a password (`invite`, `reset`).

A token is 256 random bits. The database keeps only an HMAC-SHA256 of it under a key derived
(HKDF-SHA256, label "grantflow sign-in links") from the master key, so a copy of the database
holds no usable link, and a token minted under another key is unknown here. A link works once,
until it expires, and only while its user is active; a new link of the same purpose for the
same user replaces the unused older ones.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.models import SignInLink, User
from grantflow.auth.permissions import Permission
from grantflow.config import Settings, master_keys
from grantflow.connections.crypto import derive_key
from grantflow.errors import Conflict, GrantflowError, NotFound
from grantflow.store.base import utcnow

LABEL = b"grantflow sign-in links"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
NOT_VALID = "this link is not valid"


class Purpose(enum.StrEnum):
    SIGN_IN = "sign_in"  # signs the user in once
    INVITE = "invite"  # a new user chooses a password
    RESET = "reset"  # a user who forgot their password chooses a new one


PATHS = {
    Purpose.SIGN_IN: "/login/link/",
    Purpose.INVITE: "/password/set/",
    Purpose.RESET: "/password/set/",
}


class LinkGone(GrantflowError):
    """A link that existed but can no longer be used (used, expired, replaced)."""

    code = "link_gone"
    http_status = 410


def _keys(settings: Settings) -> list[bytes]:
    """One per master key, the current first: links outlive a key rotation until they expire."""
    return [derive_key(key, LABEL) for key in master_keys(settings)]


def _hash(key: bytes, token: str) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def ttl_of(settings: Settings, purpose: Purpose) -> dt.timedelta:
    return {
        Purpose.SIGN_IN: dt.timedelta(minutes=settings.signin_link_minutes),
        Purpose.INVITE: dt.timedelta(hours=settings.invite_link_hours),
        Purpose.RESET: dt.timedelta(minutes=settings.reset_link_minutes),
    }[purpose]


def mint(
    session: Session, actor: Actor, settings: Settings, user: User, purpose: Purpose
) -> tuple[SignInLink, str]:
    """A new link for `user` and its URL (shown or sent once, never stored). Minting a
    sign-in link for someone else, or an invitation, needs user:admin; audited."""
    if purpose != Purpose.RESET and actor.user_id != user.id:
        actor.require(Permission.USER_ADMIN)
    if not user.active:
        raise Conflict(f"user {user.email} is deactivated", next_action="reactivate the user first")
    now = utcnow()
    session.execute(  # one live link per purpose: older unused ones stop working
        update(SignInLink)
        .where(
            SignInLink.user_id == user.id,
            SignInLink.purpose == purpose,
            SignInLink.used_at.is_(None),
            SignInLink.expires_at > now,
        )
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    token = secrets.token_urlsafe(32)
    link = SignInLink(
        user_id=user.id,
        purpose=purpose,
        token_hash=_hash(_keys(settings)[0], token),
        created_at=now,
        expires_at=now + ttl_of(settings, purpose),
        created_by=actor.label,
    )
    session.add(link)
    session.flush()
    audit.record(
        session,
        actor,
        f"auth.link.{purpose}",
        "user",
        user.id,
        {"user": user.email, "link_id": link.id, "expires_at": link.expires_at},
    )
    return link, f"{settings.public_url}{PATHS[purpose]}{token}"


def resolve(
    session: Session, settings: Settings, token: str, purposes: set[Purpose], *, lock: bool
) -> SignInLink:
    """The usable link a token names: NotFound (404, nothing more said) for anything that is
    not a link of these purposes; LinkGone (410) when it was used, expired or replaced."""
    if not _TOKEN.match(token or ""):
        raise NotFound(NOT_VALID, code="link_not_valid")
    hashes_ = [_hash(key, token) for key in _keys(settings)]
    stmt = select(SignInLink).where(SignInLink.token_hash.in_(hashes_))
    if lock:
        stmt = stmt.with_for_update(of=SignInLink)  # (not the joined user row)
    link = session.execute(stmt).scalar_one_or_none()
    if link is None or link.purpose not in purposes:
        raise NotFound(NOT_VALID, code="link_not_valid")
    if link.used_at is not None:
        raise LinkGone(
            "this link was already used; a link works once",
            next_action="sign in, or ask for a new link",
            code="link_used",
        )
    if link.expires_at <= utcnow():
        raise LinkGone(
            "this link has expired (or a newer one replaced it)",
            next_action="ask for a new link (on the login page: 'Forgot your password?')",
            code="link_expired",
        )
    if not link.user.active:
        raise LinkGone("this link's user is deactivated", code="link_user_deactivated")
    return link


def use(link: SignInLink) -> None:
    link.used_at = utcnow()
