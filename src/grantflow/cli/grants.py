"""`grantflow grants list | show | grant | revoke | extend | dispatch`, through /api/v1/grants.

Granting and revoking start the application's workflows; a running worker (or `grantflow
serve`) advances them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from grantflow import timestamps
from grantflow.cli.client import Client, connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.errors import ValidationError

app = typer.Typer(
    help="Grant, revoke and extend access; see each grant's automation.", no_args_is_help=True
)
NEVER = "never"
GRANT = typer.Argument(..., help="the grant's id (or a unique prefix)")
STATUSES = ("active", "revoked")


def _when(option: str, value: str | None) -> str | None:
    """An ISO 8601 time from the command line, as RFC 3339; one without a zone is UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"{option}: {value!r} is not an ISO 8601 time (e.g. 2030-01-31T17:00:00Z)",
            details=[{"field": option, "message": "not an ISO 8601 time"}],
        ) from None
    return timestamps.rfc3339(parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC))


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """One table line per grant."""
    return {
        "id": row["id"],
        "identity": row["identity"]["email"] or row["identity"]["id"],
        "application": row["application"]["name"],
        "role": row["role"],
        "status": row["status"],
        "expires_at": row["expires_at"],
        "automation": row["automation"]["state"],
    }


def _print(row: dict[str, Any], as_json: bool, headline: str | None = None) -> None:
    if as_json:
        emit_json(row)
        return
    if headline:
        out.print(headline, markup=False)
    flat = _flat(row)
    role = f" as {flat['role']}" if flat["role"] else ""
    out.print(
        f"grant {row['id']}  {flat['identity']} -> {flat['application']}{role}  {row['status']}",
        markup=False,
    )
    out.print(f"  expires: {row['expires_at'] or 'never'}", markup=False)
    if row["revoked_at"]:
        out.print(
            f"  revoked: {row['revoked_at']} by {row['revoked_by']} ({row['revoke_reason']})",
            markup=False,
        )
    chip = row["automation"]
    out.print(f"  automation: {chip['state']}", markup=False)
    if chip["no_run_reason"]:
        out.print(f"    no run started: {chip['no_run_reason']}", markup=False)
    for run in chip["runs"]:
        waiting = f" ({run['waiting_reason']})" if run.get("waiting_reason") else ""
        out.print(f"    run {run['id']}  {run['status']}{waiting}", markup=False)
    for event in row.get("events", []):
        out.print(f"  event {event['created_at']}  {event['kind']}", markup=False)


def grant_id(api: Client, raw: str) -> str:
    return api.full_id("/grants", raw)


@app.command("list")
def list_grants(
    identity: str = typer.Option(None, "--identity", help="identity id, email or userName"),
    application: str = typer.Option(None, "--application", help="application id or name"),
    status: str = typer.Option(None, "--status", help="active or revoked"),
    automation: str = typer.Option(
        None, "--automation", help="only this chip: synced, pending, needs_attention or none"
    ),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Grants, oldest first, each with its automation chip."""
    with errors_as_lines(), connect() as api:
        identity_id = api.get(f"/identities/{segment(identity)}")["id"] if identity else None
        app_id = api.full_id("/applications", application) if application else None
        rows = api.items(
            "/grants",
            limit,
            identity_id=identity_id,
            application_id=app_id,
            status=status,
            automation=automation,
        )
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            [_flat(r) for r in rows],
            ["id", "identity", "application", "role", "status", "expires_at", "automation"],
        )


@app.command("show")
def show(grant: str = GRANT, as_json: bool = JSON_OPTION) -> None:
    """A grant with its automation chip, its runs and its lifecycle events."""
    with errors_as_lines(), connect() as api:
        row = api.get(f"/grants/{segment(grant)}")
    _print(row, as_json)


@app.command("grant")
def grant(
    identity: str = typer.Option(..., "--identity", help="identity id, email or userName"),
    application: str = typer.Option(..., "--application", help="application id or name"),
    role: str = typer.Option("", "--role", help="role or entitlement (empty: the app itself)"),
    justification: str = typer.Option("", "--justification"),
    expires_at: str = typer.Option(
        None, "--expires-at", help="ISO 8601 time (UTC unless it has a zone); revoked then"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Grant access; starts the application's enabled access_granted workflows."""
    with errors_as_lines({}):
        body = {
            "identity": identity,
            "application": application,
            "role": role,
            "justification": justification,
            "expires_at": _when("--expires-at", expires_at),
        }
        with connect() as api:
            row = api.post("/grants", body)
    _print(row, as_json, headline="granted")


@app.command("revoke")
def revoke(
    grant: str = GRANT,
    comment: str = typer.Option("", "--comment", help="why (kept on the grant and in the audit)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke access; starts the application's enabled access_revoked workflows."""
    with errors_as_lines({}), connect() as api:
        row = api.post(f"/grants/{grant_id(api, grant)}/revoke", {"comment": comment})
    _print(row, as_json, headline="revoked")


@app.command("extend")
def extend(
    grant: str = GRANT,
    expires_at: str = typer.Option(
        ..., "--expires-at", help=f"new expiry (ISO 8601, UTC unless it has a zone) or {NEVER!r}"
    ),
    comment: str = typer.Option("", "--comment"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change the expiry of an active grant (or remove it with `--expires-at never`)."""
    with errors_as_lines({}):
        when = None if expires_at.strip().lower() == NEVER else _when("--expires-at", expires_at)
        with connect() as api:
            row = api.post(
                f"/grants/{grant_id(api, grant)}/extend", {"expires_at": when, "comment": comment}
            )
    _print(row, as_json, headline="expiry changed")


@app.command("dispatch")
def dispatch(grant: str = GRANT, as_json: bool = JSON_OPTION) -> None:
    """Start the grant's access_granted workflows again (e.g. once its workflow is enabled)."""
    with errors_as_lines(), connect() as api:
        row = api.post(f"/grants/{grant_id(api, grant)}/dispatch")
    if as_json:
        emit_json(row)
        return
    for run in row["started"]:
        out.print(f"started run {run['run_id']} of workflow {run['workflow_name']!r}", markup=False)
    for held in row["skipped"]:
        action = f" ({held['next_action']})" if held.get("next_action") else ""
        out.print(
            f"not started: workflow {held['workflow_name']!r}: {held['skipped']}{action}",
            markup=False,
        )
    _print(row, False)
