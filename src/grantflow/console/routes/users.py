"""/users (user:admin): users, their roles (change), deactivate / reactivate, add a user and
invite them by e-mail to choose a password, and each user's API tokens with revoke. /tokens
(everyone): my API tokens — create (the token is shown once, on the page that answers the form,
and never again) and revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.auth import tokens, users
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission, Role
from grantflow.console.guard import Page
from grantflow.console.tables import Column, RowAction, Table
from grantflow.console.templating import render
from grantflow.console.views import back_to, database, next_page, perform, refused, services
from grantflow.errors import GrantflowError, PermissionDenied, ValidationError
from grantflow.people import account_email
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

USERS = Table(
    columns=(
        Column("E-mail", "email", "link", link="url"),
        Column("Name", "display_name"),
        Column("Roles", "roles", "list"),
        Column("State", "state", "chip"),
        Column("Created", "created_at", "when"),
    ),
    actions=(
        RowAction(
            "Deactivate",
            "/users/{id}/deactivate",
            Permission.USER_ADMIN,
            when="active",
            style="danger",
        ),
        RowAction("Reactivate", "/users/{id}/activate", Permission.USER_ADMIN, when="inactive"),
    ),
    empty="No users match.",
)

TOKENS = Table(
    columns=(
        Column("Name", "name"),
        Column("Starts with", "prefix", "code"),
        Column("Scope", "scope", "code"),
        Column("State", "state", "chip"),
        Column("Created", "created_at", "when"),
        Column("Expires", "expires_at", "when"),
        Column("Last used", "last_used_at", "when"),
    ),
    actions=(
        RowAction("Revoke", "/tokens/{id}/revoke", Permission.SELF, when="live", style="danger"),
    ),
    empty="No API tokens.",
)


def _user_row(user: Any) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "url": f"/users/{user.id}",
        "display_name": user.display_name,
        "roles": user.roles,
        "active": user.active,
        "inactive": not user.active,
        "state": "active" if user.active else "deactivated",
        "created_at": user.created_at,
    }


def _token_rows(session: Session, actor: Actor, user_id: str) -> list[dict[str, Any]]:
    from grantflow.store.base import utcnow

    now = utcnow()
    rows = []
    for t in tokens.list_tokens(session, actor, user_id):
        expired = t.expires_at is not None and t.expires_at <= now
        state = "revoked" if t.revoked_at else ("expired" if expired else "active")
        rows.append(
            {
                "id": t.id,
                "name": t.name,
                "prefix": t.prefix + "…",
                "scope": t.scope,
                "state": state,
                "live": state == "active",
                "created_at": t.created_at,
                "expires_at": t.expires_at,
                "last_used_at": t.last_used_at,
            }
        )
    return rows


@router.get("/users")
def list_page(
    request: Request,
    email: str = Query("", max_length=320),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.USER_ADMIN)),
) -> Response:
    """Users with their roles and state."""
    with database(request).transaction() as session:
        page = users.list_users(session, email=email or None, cursor=cursor, limit=DEFAULT_LIMIT)
        rows = [_user_row(u) for u in page.items]
    context = {
        "table": USERS,
        "rows": USERS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"email": email},
        "all_roles": [r.value for r in Role],
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "users/list.html", context)


@router.get("/users/{user_id}")
def detail_page(
    user_id: str, request: Request, actor: Actor = Depends(Page(Permission.USER_ADMIN))
) -> Response:
    """A user: roles (change), deactivate / reactivate, API tokens (revoke)."""
    with database(request).transaction() as session:
        user = _user_row(users.get_user(session, user_id))
        rows = _token_rows(session, actor, user_id)
    context = {
        "user": user,
        "all_roles": [r.value for r in Role],
        "table": TOKENS,
        "rows": TOKENS.rows(rows),
        "is_me": user_id == actor.user_id,
    }
    return render(request, "users/detail.html", context)


def _roles(values: list[str]) -> list[Role]:
    try:
        return [Role(v) for v in values]
    except ValueError:
        raise ValidationError(
            f"roles: unknown role among {', '.join(values)}",
            details=[{"field": "roles", "message": f"one of {', '.join(Role)}"}],
        ) from None


@router.post("/users/{user_id}/roles")
def change_roles(
    user_id: str,
    request: Request,
    roles: list[str] = Form([]),
    actor: Actor = Depends(Page(Permission.USER_ADMIN)),
) -> Response:
    """Set the user's roles (the boxes ticked)."""

    def work(session: Session) -> str:
        user = users.update_user(session, actor, user_id, roles=_roles(roles))
        return f"{user.email} now has the roles: {', '.join(user.roles) or 'none'}."

    return perform(request, f"/users/{user_id}", work)


def _invited(status: str, email: str) -> str:
    if status == "skipped":
        return (
            f"E-mail is off (GRANTFLOW_SMTP_HOST is not set): no invitation went to {email}; "
            f"`grantflow users invite {email} --print-link` prints one to hand over."
        )
    return f"An invitation to choose a password is on its way to {email}."


@router.post("/users")
def create(
    request: Request,
    email: str = Form("", max_length=320),
    display_name: str = Form("", max_length=200),
    roles: list[str] = Form([]),
    invite: str = Form("", max_length=10),
    actor: Actor = Depends(Page(Permission.USER_ADMIN)),
) -> Response:
    """Add a user with these roles (as POST /api/v1/users), and e-mail them an invitation to
    choose a password when asked."""

    def work(session: Session) -> tuple[str, str]:
        if not email.strip():
            raise ValidationError(
                "email: required",
                details=[{"field": "email", "message": "required"}],
                next_action="enter the person's e-mail",
            )
        if not roles:
            raise ValidationError(
                "roles: tick at least one role",
                details=[{"field": "roles", "message": "at least one"}],
                next_action="tick viewer for read-only access",
            )
        user = users.create_user(
            session,
            actor,
            email=email,
            display_name=display_name.strip() or None,
            roles=_roles(roles),
        )
        message = f"{user.email} added with the roles: {', '.join(user.roles)}."
        if invite:
            status = account_email.invite(session, actor, services(request).settings, user)
            message += " " + _invited(status, user.email)
        return message, f"/users/{user.id}"

    return perform(request, "/users", work)


@router.post("/users/{user_id}/invite")
def invite_again(
    user_id: str, request: Request, actor: Actor = Depends(Page(Permission.USER_ADMIN))
) -> Response:
    """E-mail the user an invitation to choose a password (a new link; earlier ones still work
    until they expire or are used)."""

    def work(session: Session) -> str:
        user = users.get_user(session, user_id)
        status = account_email.invite(session, actor, services(request).settings, user)
        return _invited(status, user.email)

    return perform(request, f"/users/{user_id}", work)


def _set_active(request: Request, actor: Actor, user_id: str, active: bool, back: str) -> Response:
    def work(session: Session) -> str:
        user = users.update_user(session, actor, user_id, active=active)
        if active:
            return f"{user.email} is active again."
        return f"{user.email} is deactivated: signed out everywhere, tokens refused."

    return perform(request, back_to(back, f"/users/{user_id}"), work)


@router.post("/users/{user_id}/deactivate")
def deactivate(
    user_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.USER_ADMIN)),
) -> Response:
    """Deactivate: the user can no longer sign in or use a token."""
    return _set_active(request, actor, user_id, False, next)


@router.post("/users/{user_id}/activate")
def activate(
    user_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.USER_ADMIN)),
) -> Response:
    """Reactivate a deactivated user."""
    return _set_active(request, actor, user_id, True, next)


def _my_tokens(
    request: Request,
    actor: Actor,
    *,
    created: dict[str, Any] | None = None,
    error: GrantflowError | None = None,
) -> Response:
    with database(request).transaction() as session:
        rows = _token_rows(session, actor, actor.user_id or "")
    context = {
        "table": TOKENS,
        "rows": TOKENS.rows(rows),
        "created": created,
        "error": error,
        "ttl_default": services(request).settings.token_ttl_days,
    }
    return render(
        request, "users/tokens.html", context, status_code=error.http_status if error else 200
    )


@router.get("/tokens")
def my_tokens(request: Request, actor: Actor = Depends(Page(Permission.SELF))) -> Response:
    """My API tokens."""
    return _my_tokens(request, actor)


@router.post("/tokens")
def create_token(
    request: Request,
    name: str = Form("", max_length=200),
    ttl_days: int | None = Form(None, ge=1, le=3650),
    actor: Actor = Depends(Page(Permission.SELF)),
) -> Response:
    """Create a token of mine; this answer shows it once (it is stored only as a hash)."""
    if not name.strip():
        error = ValidationError(
            "name: give the token a name (what uses it)",
            details=[{"field": "name", "message": "required"}],
        )
        return _my_tokens(request, actor, error=error)
    ttl = ttl_days or services(request).settings.token_ttl_days
    try:
        with database(request).transaction() as session:
            token, raw = tokens.create_token(
                session, actor, user_id=actor.user_id or "", name=name.strip(), ttl_days=ttl
            )
            created = {"name": token.name, "token": raw, "expires_at": token.expires_at}
    except PermissionDenied as error:
        refused(request, error)
    except GrantflowError as error:
        return _my_tokens(request, actor, error=error)
    return _my_tokens(request, actor, created=created)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    token_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.SELF)),
) -> Response:
    """Revoke one of my tokens (or, with user:admin, anyone's)."""

    def work(session: Session) -> str:
        token = tokens.revoke_token(session, actor, token_id)
        return f"Token {token.name} is revoked."

    return perform(request, back_to(next, "/tokens"), work)
