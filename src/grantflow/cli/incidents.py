"""`grantflow incidents list | show | resolve`: security incidents raised when a revocation
failed, and resolving one once evidence of the manual revocation is on its run."""

from __future__ import annotations

from typing import Any

import typer
from sqlalchemy.orm import Session

from grantflow.access import incidents as service
from grantflow.access.identities import find_identity
from grantflow.access.incidents import IncidentStatus
from grantflow.access.models import Identity, Incident
from grantflow.auth.actor import Actor
from grantflow.cli.context import JSON_OPTION, database, emit_json, errors_as_lines, out
from grantflow.cli.grants import fold_table, plain
from grantflow.errors import ValidationError

app = typer.Typer(help="Security incidents: revocations that failed.", no_args_is_help=True)
CLI = Actor.system("cli")
MAX_COMMENT = 2000


def incident_row(incident: Incident, identity: Identity | None = None) -> dict[str, Any]:
    """The incident as /api/v1/incidents shows it (plus the identity's email, for people)."""
    return {
        "id": incident.id,
        "kind": incident.kind,
        "status": incident.status,
        "identity_id": incident.identity_id,
        "identity": (identity.email or identity.user_name) if identity else None,
        "application_id": incident.application_id,
        "grant_id": incident.grant_id,
        "run_id": incident.run_id,
        "step_id": incident.step_id,
        "system": incident.system,
        "summary": incident.summary,
        "failure": incident.failure,
        "instruction": incident.instruction,
        "created_at": incident.created_at,
        "resolved_at": incident.resolved_at,
        "resolved_by": incident.resolved_by,
        "resolution": incident.resolution,
        "resolution_comment": incident.resolution_comment,
    }


def _row(session: Session, incident: Incident) -> dict[str, Any]:
    identity = session.get(Identity, incident.identity_id) if incident.identity_id else None
    return incident_row(incident, identity)


def _print(row: dict[str, Any], as_json: bool, headline: str | None = None) -> None:
    if as_json:
        emit_json(row)
        return
    if headline:
        out.print(headline, markup=False)
    out.print(f"incident {row['id']}  {row['status']}  {row['kind']}", markup=False)
    out.print(f"  {row['summary']}", markup=False)
    out.print(
        f"  identity: {row['identity'] or row['identity_id']}  system: {row['system']}  "
        f"run: {row['run_id'] or '-'}  step: {row['step_id'] or '-'}",
        markup=False,
    )
    out.print(f"  raised: {plain(row['created_at'])}", markup=False)
    if row["status"] == IncidentStatus.RESOLVED:
        comment = f": {row['resolution_comment']}" if row["resolution_comment"] else ""
        out.print(
            f"  resolved: {plain(row['resolved_at'])} by {row['resolved_by']} "
            f"({row['resolution']}){comment}",
            markup=False,
        )
    else:
        out.print(f"  what to do: {row['instruction']}", markup=False)


@app.command("list")
def list_incidents(
    status: IncidentStatus = typer.Option(None, "--status", help="open or resolved"),
    identity: str = typer.Option(None, "--identity", help="identity id, email or userName"),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Incidents, newest first."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        identity_id = find_identity(session, identity).id if identity else None
        page = service.list_incidents(session, status=status, identity_id=identity_id, limit=limit)
        rows = [_row(session, i) for i in page.items]
    if as_json:
        emit_json(rows)
    else:
        fold_table(rows, ["id", "status", "identity", "system", "step_id", "run_id", "created_at"])


@app.command("show")
def show(incident_id: str, as_json: bool = JSON_OPTION) -> None:
    """An incident: who, which system, which step failed and what to do."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        row = _row(session, service.get_incident(session, incident_id))
    _print(row, as_json)


@app.command("resolve")
def resolve(
    incident_id: str,
    comment: str = typer.Option("", "--comment", help="what was done (kept in the audit)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Resolve by hand: needs an evidence file on the run (`grantflow runs evidence add`) or a
    run that succeeded."""
    with errors_as_lines():
        comment = comment.strip()
        if len(comment) > MAX_COMMENT:
            raise ValidationError(f"--comment: at most {MAX_COMMENT} characters")
        with database() as db, db.transaction() as session:
            incident = service.resolve_incident(session, CLI, incident_id, comment)
            row = _row(session, incident)
    _print(row, as_json, headline="resolved")
