"""`grantflow users ...` and `grantflow tokens ...`."""

from __future__ import annotations

from typing import Any

import typer

from grantflow.auth import tokens, users
from grantflow.auth.actor import Actor
from grantflow.auth.models import ApiToken, User
from grantflow.auth.permissions import Role
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    errors_as_lines,
    out,
    settings,
)
from grantflow.errors import NotFound, ValidationError

users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)

CLI = Actor.system("cli")


def _user_row(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "active": user.active,
        "roles": user.roles,
    }


def _token_row(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "scope": token.scope,
        "user": token.user.email,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
        "last_used_at": token.last_used_at,
    }


def _print_token(
    user_email: str, token: ApiToken, raw: str, as_json: bool, scope: str = "api"
) -> None:
    if as_json:
        emit_json(
            {
                "user": user_email,
                "token_id": token.id,
                "token": raw,
                "scope": scope,
                "expires_at": token.expires_at,
            }
        )
    else:
        out.print(f"API token for {user_email} (shown once, store it now):")
        out.print(raw, markup=False)


@users_app.command("create-admin")
def create_admin(
    email: str = typer.Option(..., "--email", help="the admin's email"),
    name: str = typer.Option(None, "--name", help="display name"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an admin user and print a one-time API token."""
    loaded = settings()
    with errors_as_lines(), database(loaded) as db, db.transaction() as session:
        user = users.create_user(session, CLI, email=email, display_name=name, roles=[Role.ADMIN])
        token, raw = tokens.create_token(
            session,
            CLI,
            user_id=user.id,
            name="created by create-admin",
            ttl_days=loaded.token_ttl_days,
        )
        _print_token(user.email, token, raw, as_json)


@users_app.command("create")
def create(
    email: str = typer.Option(..., "--email"),
    name: str = typer.Option(None, "--name"),
    role: list[Role] = typer.Option([], "--role", help="repeat for several roles"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a user with roles (no token; create one with `grantflow tokens create`)."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        user = users.create_user(session, CLI, email=email, display_name=name, roles=role)
        row = _user_row(user)
    emit_json(row) if as_json else out.print(f"created user {row['email']} ({row['id']})")


@users_app.command("list")
def list_users(as_json: bool = JSON_OPTION) -> None:
    """List users."""
    rows: list[dict[str, Any]] = []
    with errors_as_lines(), database() as db, db.transaction() as session:
        cursor = None
        while True:
            page = users.list_users(session, cursor=cursor, limit=500)
            rows.extend(_user_row(u) for u in page.items)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "email", "display_name", "active", "roles"])


@users_app.command("set")
def set_user(
    email: str = typer.Option(..., "--email"),
    active: bool = typer.Option(None, "--active/--inactive", help="activate or deactivate"),
    role: list[Role] = typer.Option(None, "--role", help="replace the roles (repeat)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Activate, deactivate, or change the roles of a user."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        user = _by_email(session, email)
        user = users.update_user(session, CLI, user.id, active=active, roles=role or None)
        row = _user_row(user)
    emit_json(row) if as_json else out.print(
        f"{row['email']}: active={row['active']} roles={','.join(row['roles'])}"
    )


def _by_email(session: Any, email: str) -> User:
    user = users.find_user_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with email {email}", next_action="check `grantflow users list`")
    return user


@tokens_app.command("create")
def create_token(
    user: str = typer.Option(
        None, "--user", help="email of the token's user (optional with --scope scim)"
    ),
    name: str = typer.Option("cli", "--name"),
    scope: str = typer.Option(
        "api", "--scope", help="api (the REST API) or scim (the inbound /scim/v2 endpoint only)"
    ),
    ttl_days: int = typer.Option(
        None, "--ttl-days", min=1, max=3650, help="lifetime (default GRANTFLOW_TOKEN_TTL_DAYS)"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API token for a user and print it once. A `--scope scim` token is for an HR
    system or identity provider pushing people to /scim/v2; without --user it belongs to the
    built-in SCIM provisioning user."""
    loaded = settings()
    with errors_as_lines(), database(loaded) as db, db.transaction() as session:
        if user is None and scope != "scim":
            raise ValidationError(
                "--user: required for API tokens", next_action="pass --user EMAIL"
            )
        owner = (
            _by_email(session, user)
            if user
            else users.get_user(session, tokens.scim_service_user(session, CLI))
        )
        token, raw = tokens.create_token(
            session,
            CLI,
            user_id=owner.id,
            name=name,
            ttl_days=ttl_days or loaded.token_ttl_days,
            scope=scope,
        )
        _print_token(owner.email, token, raw, as_json, scope=token.scope)


@tokens_app.command("revoke")
def revoke_token(token_id: str, as_json: bool = JSON_OPTION) -> None:
    """Revoke an API token by id."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        row = _token_row(tokens.revoke_token(session, CLI, token_id))
    emit_json(row) if as_json else out.print(f"revoked token {row['id']} ({row['prefix']}…)")


@tokens_app.command("list")
def list_tokens(
    user: str = typer.Option(..., "--user", help="email of the tokens' user"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a user's tokens (metadata only; a token's secret is never shown again)."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        owner = _by_email(session, user)
        rows = [_token_row(t) for t in tokens.list_tokens(session, CLI, owner.id)]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "name", "prefix", "expires_at", "revoked_at", "last_used_at"])
