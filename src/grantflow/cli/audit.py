"""`grantflow audit verify | list`."""

from __future__ import annotations

import datetime as dt

import typer

from grantflow import audit
from grantflow.cli.context import JSON_OPTION, database, emit_json, emit_table, errors_as_lines, out

app = typer.Typer(help="Read and verify the audit log.", no_args_is_help=True)


@app.command("verify")
def verify(as_json: bool = JSON_OPTION) -> None:
    """Walk the hash chain; exit 1 and name the first broken entry if it was tampered with."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        report = audit.verify(session)
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "first_broken_id": report.first_broken_id,
                "reason": report.reason,
            }
        )
    elif report.ok:
        out.print(f"audit chain intact: {report.checked} entries verified")
    else:
        out.print(
            f"audit chain BROKEN at entry {report.first_broken_id}: {report.reason} "
            f"({report.checked} entries before it verified)"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command("list")
def list_entries(
    actor: str = typer.Option(None, help="actor email or user id"),
    action: str = typer.Option(None, help="action, or a prefix like application.*"),
    target_type: str = typer.Option(None),
    target_id: str = typer.Option(None),
    since: dt.datetime = typer.Option(None, help="ISO time, UTC unless it has a zone"),
    until: dt.datetime = typer.Option(None),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Newest entries first, filtered."""

    def aware(value: dt.datetime | None) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value and value.tzinfo is None else value

    with errors_as_lines(), database() as db, db.transaction() as session:
        page = audit.query(
            session,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            since=aware(since),
            until=aware(until),
            limit=limit,
        )
        rows = [
            {
                "id": e.id,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "target_type": e.target_type,
                "target_id": e.target_id,
                "summary": e.summary,
                "request_id": e.request_id,
            }
            for e in page.items
        ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "at", "actor", "action", "target_type", "target_id"])
