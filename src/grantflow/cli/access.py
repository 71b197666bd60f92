"""`grantflow applications ...`."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError as PydanticError

from grantflow.access import applications as service
from grantflow.access.models import Application
from grantflow.auth.actor import Actor
from grantflow.cli.context import JSON_OPTION, database, emit_json, emit_table, errors_as_lines, out
from grantflow.errors import ValidationError

app = typer.Typer(help="Manage applications.", no_args_is_help=True)
CLI = Actor.system("cli")


def _row(a: Application) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "kind": a.kind,
        "description": a.description,
        "homepage_url": a.homepage_url,
        "owner_id": a.owner_id,
        "labels": a.labels,
    }


@app.command("list")
def list_applications(
    name: str = typer.Option(None, help="substring of the name"), as_json: bool = JSON_OPTION
) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        rows = [_row(a) for a in service.list_applications(session, name=name, limit=500).items]
    emit_json(rows) if as_json else emit_table(rows, ["id", "name", "kind", "description"])


@app.command("show")
def show(id_or_name: str, as_json: bool = JSON_OPTION) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        row = _row(service.find_application(session, id_or_name))
    emit_json(row) if as_json else emit_table([row], list(row))


@app.command("create")
def create(
    name: str = typer.Option(...),
    kind: service.ApplicationKind = typer.Option(service.ApplicationKind.SAAS),
    description: str = typer.Option(""),
    homepage_url: str = typer.Option(None),
    as_json: bool = JSON_OPTION,
) -> None:
    with errors_as_lines():
        try:
            data = service.ApplicationCreate.model_validate(
                {
                    "name": name,
                    "kind": kind,
                    "description": description,
                    "homepage_url": homepage_url,
                }
            )
        except PydanticError as exc:
            first = exc.errors()[0]
            raise ValidationError(
                f"--{first['loc'][0]}: {first['msg']}".replace("_", "-")
            ) from None
        with database() as db, db.transaction() as session:
            row = _row(service.create_application(session, CLI, data))
    emit_json(row) if as_json else out.print(f"created application {row['name']} ({row['id']})")


@app.command("delete")
def delete(id_or_name: str) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_application(session, id_or_name)
        service.delete_application(session, CLI, found.id)
    out.print(f"deleted application {id_or_name}")
