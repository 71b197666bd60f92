"""`grantflow users ...` and `grantflow tokens ...`, through /api/v1/users, /api/v1/tokens and
/api/v1/scim-tokens. `users create-admin` is the bootstrap: it opens the database directly (there
is no token yet to call the API with)."""

from __future__ import annotations

from typing import Any

import typer

from grantflow.cli import accounts
from grantflow.cli.client import ApiError, Client, connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out

users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
tokens_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
ROLES = "admin, editor, operator, approver, auditor or viewer"


def _print_token(created: dict[str, Any], email: str, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "user": email,
                "token_id": created["id"],
                "token": created["token"],
                "scope": created["scope"],
                "expires_at": created["expires_at"],
            }
        )
    else:
        out.print(f"API token for {email} (shown once, store it now):")
        out.print(created["token"], markup=False)


@users_app.command("create-admin")
def create_admin(
    email: str = typer.Option(..., "--email", help="the admin's email"),
    name: str = typer.Option(None, "--name", help="display name"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an admin user and print a one-time API token (on the database: the bootstrap)."""
    from grantflow.auth import tokens, users
    from grantflow.auth.actor import Actor
    from grantflow.auth.permissions import Role
    from grantflow.cli.direct import database, settings

    system = Actor.system("cli")
    loaded = settings()
    with errors_as_lines(), database(loaded) as db, db.transaction() as session:
        user = users.create_user(
            session, system, email=email, display_name=name, roles=[Role.ADMIN]
        )
        token, raw = tokens.create_token(
            session, system, user_id=user.id, name="created by create-admin",
            ttl_days=loaded.token_ttl_days,
        )  # fmt: skip
        created = {"id": token.id, "token": raw, "scope": token.scope,
                   "expires_at": token.expires_at}  # fmt: skip
        _print_token(created, user.email, as_json)


@users_app.command("create")
def create(
    email: str = typer.Option(..., "--email"),
    name: str = typer.Option(None, "--name"),
    role: list[str] = typer.Option([], "--role", help=f"{ROLES}; repeat for several"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a user with roles (no token; create one with `grantflow tokens create`)."""
    body = {"email": email, "display_name": name, "roles": list(role)}
    with errors_as_lines({"display_name": "--name", "roles": "--role"}), connect() as api:
        row = api.post("/users", body)
    emit_json(row) if as_json else out.print(f"created user {row['email']} ({row['id']})")


@users_app.command("list")
def list_users(
    limit: int = typer.Option(10_000, min=1, help="at most this many"), as_json: bool = JSON_OPTION
) -> None:
    """List users."""
    with errors_as_lines(), connect() as api:
        rows = api.items("/users", limit)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "email", "display_name", "active", "roles"])


def user_by_email(api: Client, email: str) -> dict[str, Any]:
    wanted = email.strip().lower()
    for user in api.items("/users", 10_000, email=wanted):
        if user["email"] == wanted:
            found: dict[str, Any] = user
            return found
    raise ApiError(404, f"no user with email {email}", "check `grantflow users list`")


@users_app.command("set")
def set_user(
    email: str = typer.Option(..., "--email"),
    active: bool = typer.Option(None, "--active/--inactive", help="activate or deactivate"),
    role: list[str] = typer.Option(None, "--role", help="replace the roles (repeat)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Activate, deactivate, or change the roles of a user."""
    body: dict[str, Any] = {}
    if active is not None:
        body["active"] = active
    if role:
        body["roles"] = list(role)
    with errors_as_lines({"roles": "--role"}), connect() as api:
        row = api.patch(f"/users/{user_by_email(api, email)['id']}", body)
    emit_json(row) if as_json else out.print(
        f"{row['email']}: active={row['active']} roles={','.join(row['roles'])}"
    )


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
    body = {"name": name, "ttl_days": ttl_days}
    with errors_as_lines({"ttl_days": "--ttl-days"}), connect() as api:
        if user is None and scope != "scim":
            raise ApiError(0, "--user: required for API tokens", "pass --user EMAIL")
        if user is None:
            created = api.post("/scim-tokens", body)
            email = api.get(f"/users/{created['user_id']}")["email"]
        else:
            owner = user_by_email(api, user)
            created = api.post(f"/users/{owner['id']}/tokens", {**body, "scope": scope})
            email = owner["email"]
    _print_token(created, email, as_json)


@tokens_app.command("revoke")
def revoke_token(
    token: str = typer.Argument(..., help="the token's id (or a unique prefix)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke an API token by id."""
    with errors_as_lines(), connect() as api:
        row = api.post(f"/tokens/{segment(token)}/revoke")
    emit_json(row) if as_json else out.print(f"revoked token {row['id']} ({row['prefix']}…)")


@tokens_app.command("list")
def list_tokens(
    user: str = typer.Option(None, "--user", help="email of the tokens' user (default: yours)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a user's tokens (metadata only; a token's secret is never shown again)."""
    with errors_as_lines(), connect() as api:
        if user is None:
            rows = api.get("/me/tokens")
        else:
            owner = user_by_email(api, user)
            rows = [{**t, "user": owner["email"]} for t in api.get(f"/users/{owner['id']}/tokens")]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "name", "prefix", "expires_at", "revoked_at", "last_used_at"])


accounts.register(users_app)  # set-password, invite, sign-in-link (on the database)
