"""`grantflow reports generate | list | download`: reports over grants, run outcomes and the
audit log, stored with their SHA-256."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer

from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    err,
    errors_as_lines,
    fail,
    out,
)
from grantflow.errors import ValidationError
from grantflow.schedules import reports as service

app = typer.Typer(help="Generate, list and download reports.", no_args_is_help=True)
CLI = Actor.system("cli")
_COLUMNS = ["id", "kind", "format", "rows", "size", "sha256", "created_by", "created_at"]


def _params(values: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(
                ValidationError(
                    f"--param: {value!r} is not NAME=VALUE",
                    next_action="e.g. --param status=all or --param since=2025-01-01T00:00:00Z",
                )
            )
        parsed[key] = text
    return parsed


def _write(path: Path, content: bytes) -> None:
    try:
        path.write_bytes(content)
    except OSError as exc:
        err.print(f"error: cannot write {path}: {exc.strerror or exc}", markup=False)
        raise typer.Exit(1) from None


@app.command("generate")
def generate(
    kind: service.ReportKind = typer.Argument(..., help="the kind of report"),
    fmt: service.ReportFormat = typer.Option(service.ReportFormat.CSV, "--format", "-f"),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        help="NAME=VALUE (repeatable): status, application, identity; since, until; action",
    ),
    output: Path = typer.Option(
        None, "--output", "-o", dir_okay=False, help="also write the content to this file"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate a report and store it; print its id, rows and SHA-256."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        report = service.generate(session, CLI, kind, fmt, _params(param or []), where="")
        shown = service.view(report)
        content = report.content
    if output is not None:
        _write(output, content)
    if as_json:
        emit_json(shown)
        return
    out.print(
        f"report {shown['id']} ({shown['kind']}, {shown['format']}): {shown['rows']} row(s), "
        f"{shown['size']} bytes, sha256 {shown['sha256']}",
        markup=False,
    )
    if output is not None:
        out.print(f"written to {output}", markup=False)


@app.command("list")
def list_reports(
    kind: service.ReportKind = typer.Option(None, "--kind", help="only this kind"),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Stored reports, newest first."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        rows = [
            service.view(r) for r in service.list_reports(session, kind=kind, limit=limit).items
        ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, _COLUMNS)


@app.command("download")
def download(
    report_id: str = typer.Argument(..., help="the report's id"),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False, help="the file to write"),
) -> None:
    """Write a stored report to a file, checking its SHA-256 first."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        got = service.download(session, CLI, report_id)
    digest = hashlib.sha256(got.content).hexdigest()
    if digest != got.sha256:
        err.print(
            f"error: report {report_id} does not match its stored SHA-256 "
            f"({digest} != {got.sha256}); it was altered in the database",
            markup=False,
        )
        raise typer.Exit(1)
    _write(output, got.content)
    out.print(f"{output}: {len(got.content)} bytes, sha256 {digest}", markup=False)
