"""API tokens: created once and shown once, stored as a hash, expiring and revocable."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.models import ApiToken, User
from grantflow.auth.permissions import Permission, permissions_for
from grantflow.auth.users import get_user
from grantflow.errors import Conflict, NotFound, Unauthenticated, ValidationError
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix

TOKEN_PREFIX = "gft_"
SCOPES = ("api", "scim")
SCIM_SERVICE_USER = "scim-provisioning@grantflow.invalid"
# what a scim-scoped token may do, whatever its user's roles: push identities and groups
SCIM_PERMISSIONS = frozenset({Permission.IDENTITY_READ, Permission.IDENTITY_WRITE})
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _require_owner_or_admin(actor: Actor, user_id: str) -> None:
    if actor.user_id != user_id:
        actor.require(Permission.USER_ADMIN)
    else:
        actor.require(Permission.SELF)


def create_token(
    session: Session,
    actor: Actor,
    *,
    user_id: str,
    name: str,
    ttl_days: int | None,
    scope: str = "api",
) -> tuple[ApiToken, str]:
    """Create a token for `user_id`; returns the row and the plaintext, which is never stored.
    A `scim` token works on /scim/v2 only and needs identity:write to create."""
    _require_owner_or_admin(actor, user_id)
    if scope not in SCOPES:
        raise ValidationError(
            f"scope: must be one of {', '.join(SCOPES)}, not {scope!r}",
            details=[{"field": "body.scope", "message": "unknown scope"}],
        )
    if scope == "scim":
        actor.require(Permission.IDENTITY_WRITE)
    user = get_user(session, user_id)
    if not user.active:
        raise Conflict(
            f"user {user.email} is deactivated; it cannot get new tokens",
            next_action="reactivate the user first",
        )
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=_hash(raw),
        prefix=raw[:12],
        scope=scope,
        expires_at=utcnow() + dt.timedelta(days=ttl_days) if ttl_days else None,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor,
        "token.created",
        "api_token",
        token.id,
        {"user": user.email, "name": name, "scope": scope, "expires_at": token.expires_at},
    )
    return token, raw


def get_token(session: Session, token_id: str) -> ApiToken:
    token = session.get(ApiToken, token_id) or by_prefix(session, ApiToken, token_id, "API token")
    if token is None:
        raise NotFound(f"API token {token_id} does not exist", target_type="api_token")
    return token


def revoke_token(session: Session, actor: Actor, token_id: str) -> ApiToken:
    token = get_token(session, token_id)
    _require_owner_or_admin(actor, token.user_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(
            session,
            actor,
            "token.revoked",
            "api_token",
            token.id,
            {"user": token.user.email, "name": token.name},
        )
    return token


def list_tokens(session: Session, actor: Actor, user_id: str) -> list[ApiToken]:
    _require_owner_or_admin(actor, user_id)
    return list(
        session.execute(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
        ).scalars()
    )


def authenticate_user(
    session: Session, raw: str, request_id: str | None = None
) -> tuple[Actor, User]:
    """The actor behind a bearer token and its user with the user's roles, as the one read
    found them (a route about the caller answers from it without reading the user again);
    every refusal is the same 401 without hints."""
    token = (
        session.execute(
            select(ApiToken)
            .where(ApiToken.token_hash == _hash(raw))
            .options(joinedload(ApiToken.user).joinedload(User.role_rows))  # one round trip
        )
        .unique()
        .scalar_one_or_none()
    )
    now = utcnow()
    if token is None:
        raise Unauthenticated("the API token is not valid")
    if token.revoked_at is not None:
        raise Unauthenticated("the API token was revoked", next_action="create a new token")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated("the API token has expired", next_action="create a new token")
    if not token.user.active:
        raise Unauthenticated("the user of this API token is deactivated")
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        token.last_used_at = now
    actor = Actor(
        label=token.user.email,
        user_id=token.user_id,
        permissions=(
            SCIM_PERMISSIONS if token.scope == "scim" else permissions_for(token.user.roles)
        ),
        token_id=token.id,
        request_id=request_id,
        scope=token.scope,
    )
    return actor, token.user


def scim_service_user(session: Session, actor: Actor) -> str:
    """The user that owns SCIM tokens created without naming one (created on first use)."""
    from grantflow.auth.users import create_user, find_user_by_email

    actor.require(Permission.IDENTITY_WRITE)
    user = find_user_by_email(session, SCIM_SERVICE_USER)
    if user is None:
        user = create_user(
            session, actor, email=SCIM_SERVICE_USER, display_name="SCIM provisioning", roles=[]
        )
    return user.id
