"""`grantflow incidents list | show | resolve`: security incidents raised when a revocation
failed, and resolving one once evidence of the manual revocation is on its run; through
/api/v1/incidents."""

from __future__ import annotations

from typing import Any

import typer

from grantflow.cli.client import connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out

app = typer.Typer(help="Security incidents: revocations that failed.", no_args_is_help=True)
INCIDENT = typer.Argument(..., help="the incident's id (or a unique prefix)")


def _print(row: dict[str, Any], as_json: bool, headline: str | None = None) -> None:
    if as_json:
        emit_json(row)
        return
    if headline:
        out.print(headline, markup=False)
    out.print(f"incident {row['id']}  {row['status']}  {row['kind']}", markup=False)
    out.print(f"  {row['summary']}", markup=False)
    out.print(
        f"  identity: {row.get('identity') or row['identity_id']}  system: {row['system']}  "
        f"run: {row['run_id'] or '-'}  step: {row['step_id'] or '-'}",
        markup=False,
    )
    out.print(f"  raised: {row['created_at']}", markup=False)
    if row["status"] == "resolved":
        comment = f": {row['resolution_comment']}" if row["resolution_comment"] else ""
        out.print(
            f"  resolved: {row['resolved_at']} by {row['resolved_by']} "
            f"({row['resolution']}){comment}",
            markup=False,
        )
    else:
        out.print(f"  what to do: {row['instruction']}", markup=False)


@app.command("list")
def list_incidents(
    status: str = typer.Option(None, "--status", help="open or resolved"),
    identity: str = typer.Option(None, "--identity", help="identity id, email or userName"),
    limit: int = typer.Option(100, "--limit", min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Incidents, newest first."""
    with errors_as_lines(), connect() as api:
        identity_id = api.get(f"/identities/{segment(identity)}")["id"] if identity else None
        rows = api.items("/incidents", limit, status=status, identity_id=identity_id)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "status", "identity", "system", "step_id", "run_id", "created_at"])


@app.command("show")
def show(incident: str = INCIDENT, as_json: bool = JSON_OPTION) -> None:
    """An incident: who, which system, which step failed and what to do."""
    with errors_as_lines(), connect() as api:
        row = api.get(f"/incidents/{segment(incident)}")
    _print(row, as_json)


@app.command("resolve")
def resolve(
    incident: str = INCIDENT,
    comment: str = typer.Option("", "--comment", help="what was done (kept in the audit)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Resolve by hand: needs an evidence file on the run (`grantflow runs evidence add`) or a
    run that succeeded."""
    with errors_as_lines({}), connect() as api:
        incident_id = api.full_id("/incidents", incident)
        row = api.post(f"/incidents/{incident_id}/resolve", {"comment": comment.strip()})
    _print(row, as_json, headline="resolved")
