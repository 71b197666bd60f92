"""`grantflow grants list | show | grant | revoke | extend | dispatch`: the same services as
/api/v1/grants.

Granting and revoking start the application's workflows through the database queue; a running
worker (or `grantflow serve`) advances them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from rich.table import Column, Table
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.access import grants as service
from grantflow.access.applications import find_application
from grantflow.access.grants import GrantStatus
from grantflow.access.identities import find_identity
from grantflow.access.models import Application, Grant, Identity
from grantflow.auth.actor import Actor
from grantflow.cli.context import JSON_OPTION, database, emit_json, errors_as_lines, out
from grantflow.errors import ValidationError
from grantflow.queue.database import DatabaseQueue

app = typer.Typer(
    help="Grant, revoke and extend access; see each grant's automation.", no_args_is_help=True
)
CLI = Actor.system("cli")

NEVER = "never"
M = TypeVar("M", bound=BaseModel)


def _when(option: str, value: str | None) -> dt.datetime | None:
    """An ISO 8601 time from the command line; one without a zone is read as UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            f"{option}: {value!r} is not an ISO 8601 time (e.g. 2030-01-31T17:00:00Z)",
            details=[{"field": option, "message": "not an ISO 8601 time"}],
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def fold_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """A table whose long values (ids, emails) wrap instead of being cut: ids get copied."""
    table = Table(*(Column(c, overflow="fold") for c in columns))
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(plain(row.get(c))) for c in columns))
    out.print(table)


def plain(value: Any) -> Any:
    return timestamps.plain(value)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    """The request model, or a validation error naming the command-line option."""
    try:
        return model.model_validate(data)
    except PydanticError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "input"
        raise ValidationError(
            f"{option}: {first['msg']}", details=[{"field": option, "message": first["msg"]}]
        ) from None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None


def grant_row(session: Session, grant: Grant) -> dict[str, Any]:
    """The grant as /api/v1/grants shows it: who, what, status, expiry and the automation chip."""
    identity = session.get(Identity, grant.identity_id)
    application = session.get(Application, grant.application_id)
    chip = service.automation(session, grant)
    return {
        "id": grant.id,
        "identity": {
            "id": grant.identity_id,
            "email": identity.email if identity else None,
            "display_name": identity.display_name if identity else None,
        },
        "application": {
            "id": grant.application_id,
            "name": application.name if application else None,
        },
        "role": grant.role or None,
        "justification": grant.justification,
        "status": grant.status,
        "expires_at": _utc(grant.expires_at),
        "granted_by": grant.granted_by,
        "granted_at": _utc(grant.granted_at),
        "revoked_by": grant.revoked_by,
        "revoked_at": _utc(grant.revoked_at),
        "revoke_reason": grant.revoke_reason,
        "revoke_comment": grant.revoke_comment,
        "automation": {
            "state": str(chip.state),
            "runs": chip.runs,
            "no_run_reason": chip.no_run_reason,
            "event": chip.event,
        },
    }


def _detail(session: Session, grant: Grant) -> dict[str, Any]:
    row = grant_row(session, grant)
    row["events"] = [
        {
            "id": e.id,
            "kind": e.kind,
            "actor": e.actor,
            "details": e.details,
            "dispatch": e.dispatch,
            "no_run_reason": e.no_run_reason,
            "created_at": e.created_at,
        }
        for e in service.events_of(session, grant.id)
    ]
    return row


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
    expires = plain(row["expires_at"]) if row["expires_at"] else "never"
    out.print(f"  expires: {expires}", markup=False)
    if row["revoked_at"]:
        out.print(
            f"  revoked: {plain(row['revoked_at'])} by {row['revoked_by']} "
            f"({row['revoke_reason']})",
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
        out.print(f"  event {plain(event['created_at'])}  {event['kind']}", markup=False)


@app.command("list")
def list_grants(
    identity: str = typer.Option(None, "--identity", help="identity id, email or userName"),
    application: str = typer.Option(None, "--application", help="application id or name"),
    status: GrantStatus = typer.Option(None, "--status", help="active or revoked"),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Grants, oldest first, each with its automation chip."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        identity_id = find_identity(session, identity).id if identity else None
        app_id = find_application(session, application).id if application else None
        page = service.list_grants(
            session, identity_id=identity_id, application_id=app_id, status=status, limit=limit
        )
        rows = [grant_row(session, g) for g in page.items]
    if as_json:
        emit_json(rows)
    else:
        fold_table(
            [_flat(r) for r in rows],
            ["id", "identity", "application", "role", "status", "expires_at", "automation"],
        )


@app.command("show")
def show(grant_id: str, as_json: bool = JSON_OPTION) -> None:
    """A grant with its automation chip, its runs and its lifecycle events."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        row = _detail(session, service.get_grant(session, grant_id))
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
    with errors_as_lines():
        data = _validated(
            service.GrantCreate,
            {
                "identity": identity,
                "application": application,
                "role": role,
                "justification": justification,
                "expires_at": _when("--expires-at", expires_at),
            },
        )
        with database() as db:
            queue = DatabaseQueue(db)
            with db.transaction() as session:
                row = _detail(session, service.create_grant(session, CLI, queue, data))
    _print(row, as_json, headline="granted")


@app.command("revoke")
def revoke(
    grant_id: str,
    comment: str = typer.Option("", "--comment", help="why (kept on the grant and in the audit)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke access; starts the application's enabled access_revoked workflows."""
    with errors_as_lines():
        data = _validated(service.GrantRevoke, {"comment": comment})
        with database() as db:
            queue = DatabaseQueue(db)
            with db.transaction() as session:
                revoked = service.revoke_grant(session, CLI, queue, grant_id, comment=data.comment)
                row = _detail(session, revoked)
    _print(row, as_json, headline="revoked")


@app.command("extend")
def extend(
    grant_id: str,
    expires_at: str = typer.Option(
        ..., "--expires-at", help=f"new expiry (ISO 8601, UTC unless it has a zone) or {NEVER!r}"
    ),
    comment: str = typer.Option("", "--comment"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change the expiry of an active grant (or remove it with `--expires-at never`)."""
    with errors_as_lines():
        when = None if expires_at.strip().lower() == NEVER else _when("--expires-at", expires_at)
        data = _validated(service.GrantExtend, {"expires_at": when, "comment": comment})
        with database() as db, db.transaction() as session:
            row = _detail(session, service.extend_grant(session, CLI, grant_id, data))
    _print(row, as_json, headline="expiry changed")


@app.command("dispatch")
def dispatch(grant_id: str, as_json: bool = JSON_OPTION) -> None:
    """Start the grant's access_granted workflows again (e.g. once its workflow is enabled)."""
    with errors_as_lines(), database() as db:
        queue = DatabaseQueue(db)
        with db.transaction() as session:
            done = service.dispatch_grant(session, CLI, queue, grant_id)
            row = {**_detail(session, done.grant), "started": done.started, "skipped": done.skipped}
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
