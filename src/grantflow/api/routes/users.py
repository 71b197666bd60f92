"""/api/v1/users (admins) and /api/v1/me (everyone, about themselves), with API tokens."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from grantflow import strict
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import AppState, app_state, database
from grantflow.auth import tokens, users
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission, Role
from grantflow.errors import PermissionDenied
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT
from grantflow.strict import Bool, Int, NotNull

router = APIRouter(prefix=API_PREFIX, tags=["users"])

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
TokenName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    display_name: str
    active: bool
    roles: list[str]
    created_at: dt.datetime


class MeOut(UserOut):
    permissions: list[str]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    display_name: DisplayName | None = None
    roles: list[Role] = Field(default_factory=list, max_length=len(Role))
    password: Annotated[str, StringConstraints(min_length=12, max_length=200)] | None = None


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: NotNull[DisplayName] = None
    active: NotNull[Bool] = None
    roles: NotNull[list[Role]] = Field(default=None, max_length=len(Role))


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TokenName
    ttl_days: Int | None = Field(
        default=None, ge=1, le=3650, description="lifetime in days; default from configuration"
    )
    scope: Literal["api", "scim"] = Field(
        "api", description="api: the REST API; scim: the inbound SCIM endpoint /scim/v2 only"
    )


class ScimTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TokenName
    ttl_days: strict.Int | None = Field(default=None, ge=1, le=3650)


class TokenOut(BaseModel):
    """Token metadata; the secret itself is never returned after creation."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str
    user_id: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; store it now")


@router.get("/users", response_model=PageOut[UserOut])
def list_users(
    email: str | None = Query(None, max_length=320, description="substring of the email"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> PageOut[UserOut]:
    with db.transaction() as session:
        page = users.list_users(session, email=email, cursor=cursor, limit=limit)
        return PageOut(
            items=[UserOut.model_validate(u) for u in page.items], next_cursor=page.next_cursor
        )


@router.post("/users", status_code=201, response_model=UserOut)
def create_user(
    body: UserCreate,
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> UserOut:
    with db.transaction() as session:
        user = users.create_user(
            session,
            actor,
            email=body.email,
            display_name=body.display_name,
            roles=body.roles,
            password=body.password,
        )
        return UserOut.model_validate(user)


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(
    user_id: str,
    _: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> UserOut:
    with db.transaction() as session:
        return UserOut.model_validate(users.get_user(session, user_id))


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(
    user_id: str,
    body: UserUpdate,
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> UserOut:
    with db.transaction() as session:
        user = users.update_user(
            session,
            actor,
            user_id,
            display_name=body.display_name,
            active=body.active,
            roles=body.roles,
        )
        return UserOut.model_validate(user)


@router.get("/users/{user_id}/tokens", response_model=list[TokenOut])
def list_user_tokens(
    user_id: str,
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> list[TokenOut]:
    with db.transaction() as session:
        users.get_user(session, user_id)
        return [TokenOut.model_validate(t) for t in tokens.list_tokens(session, actor, user_id)]


@router.post("/users/{user_id}/tokens", status_code=201, response_model=TokenCreated)
def create_user_token(
    user_id: str,
    body: TokenCreate,
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
    state: AppState = Depends(app_state),
) -> TokenCreated:
    return _create_token(db, actor, user_id, body, state)


@router.get("/me", response_model=MeOut)
async def me(
    request: Request,
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> MeOut:
    # `async`: a token's user, as the request's authentication read it with its roles, is the
    # answer (no thread hop, no second read); the local CLI's actor is read in a thread.
    user = getattr(request.state, "token_user", None)
    if user is None or user.id != actor.user_id:
        return await run_in_threadpool(_me, db, actor)
    return MeOut(**UserOut.model_validate(user).model_dump(), permissions=sorted(actor.permissions))


def _me(db: Database, actor: Actor) -> MeOut:
    with db.reads() as session:  # (reads only: no transaction round trips on PostgreSQL)
        user = users.get_user(session, _own(actor))
        out = UserOut.model_validate(user).model_dump()
    return MeOut(**out, permissions=sorted(actor.permissions))


@router.get("/me/tokens", response_model=list[TokenOut])
def list_my_tokens(
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> list[TokenOut]:
    with db.transaction() as session:
        return [TokenOut.model_validate(t) for t in tokens.list_tokens(session, actor, _own(actor))]


@router.post("/me/tokens", status_code=201, response_model=TokenCreated)
def create_my_token(
    body: TokenCreate,
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
    state: AppState = Depends(app_state),
) -> TokenCreated:
    return _create_token(db, actor, _own(actor), body, state)


@router.post("/scim-tokens", status_code=201, response_model=TokenCreated)
def create_scim_token(
    body: ScimTokenCreate,
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
    state: AppState = Depends(app_state),
) -> TokenCreated:
    """A `scim` token (for /scim/v2 only) owned by the built-in SCIM provisioning user, for an
    HR system or identity provider pushing people (needs identity:write too)."""
    with db.transaction() as session:
        owner = tokens.scim_service_user(session, actor)
    return _create_token(db, actor, owner, TokenCreate(**body.model_dump(), scope="scim"), state)


@router.post("/tokens/{token_id}/revoke", response_model=TokenOut)
def revoke_token(
    token_id: str,
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> TokenOut:
    """Revoke one of your own tokens, or (with user:admin) anyone's."""
    with db.transaction() as session:
        return TokenOut.model_validate(tokens.revoke_token(session, actor, token_id))


def _own(actor: Actor) -> str:
    """The acting user's id; the CLI on the local database acts as system:cli, not a user."""
    if actor.user_id is None:
        raise PermissionDenied(
            f"{actor.label} is not a user: this endpoint is about the caller's own account",
            next_action="use a user's API token (locally: GRANTFLOW_TOKEN)",
        )
    return actor.user_id


def _create_token(
    db: Database, actor: Actor, user_id: str, body: TokenCreate, state: AppState
) -> TokenCreated:
    ttl = body.ttl_days or state.settings.token_ttl_days
    with db.transaction() as session:
        token, raw = tokens.create_token(
            session, actor, user_id=user_id, name=body.name, ttl_days=ttl, scope=body.scope
        )
        return TokenCreated(**TokenOut.model_validate(token).model_dump(), token=raw)
