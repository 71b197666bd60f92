"""`grantflow applications ...`, through /api/v1/applications."""

from __future__ import annotations

import typer

from grantflow.cli.client import connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out

app = typer.Typer(help="Manage applications.", no_args_is_help=True)
APPLICATION = typer.Argument(..., help="the application's id, name or id prefix")
KINDS = "saas, directory, internal or other"


@app.command("list")
def list_applications(
    name: str = typer.Option(None, help="substring of the name"),
    limit: int = typer.Option(500, min=1, help="at most this many"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Applications, by name."""
    with errors_as_lines(), connect() as api:
        rows = api.items("/applications", limit, name=name)
    emit_json(rows) if as_json else emit_table(rows, ["id", "name", "kind", "description"])


@app.command("show")
def show(application: str = APPLICATION, as_json: bool = JSON_OPTION) -> None:
    """One application."""
    with errors_as_lines(), connect() as api:
        row = api.get(f"/applications/{segment(application)}")
    emit_json(row) if as_json else emit_table([row], list(row))


@app.command("create")
def create(
    name: str = typer.Option(...),
    kind: str = typer.Option("saas", help=KINDS),
    description: str = typer.Option(""),
    homepage_url: str = typer.Option(None),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an application (then add a connection: `grantflow connections create`)."""
    body = {"name": name, "kind": kind, "description": description, "homepage_url": homepage_url}
    with errors_as_lines({}), connect() as api:
        row = api.post("/applications", {k: v for k, v in body.items() if v is not None})
    emit_json(row) if as_json else out.print(f"created application {row['name']} ({row['id']})")


@app.command("delete")
def delete(application: str = APPLICATION, as_json: bool = JSON_OPTION) -> None:
    """Delete an application (refused while grants or workflows use it)."""
    with errors_as_lines(), connect() as api:
        row = api.delete(f"/applications/{api.full_id('/applications', application)}")
    emit_json(row) if as_json else out.print(f"deleted application {application}")
