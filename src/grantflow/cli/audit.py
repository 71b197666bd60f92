"""`grantflow audit verify | checkpoint | list`. `list` reads /api/v1/audit; `verify` and
`checkpoint` work on the database itself (they check what the API would serve)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from grantflow.cli.client import connect
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out

app = typer.Typer(
    help="Read the audit log (verify and checkpoint: on the database).", no_args_is_help=True
)


@app.command("verify")
def verify(
    against: list[Path] = typer.Option(
        [],
        "--against",
        help="a checkpoint file (one JSON object, a list, or one a line); repeatable",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Walk the keyed hash chain, check the triggers and every checkpoint given; exit 1 and
    say what is wrong if the log was tampered with."""
    from grantflow import audit
    from grantflow.audit import checkpoints
    from grantflow.cli.direct import database

    with errors_as_lines():
        expected = [c for path in against for c in checkpoints.load(path)]
        with database() as db, db.transaction() as session:
            report = audit.verify(session, expected)
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "first_broken_id": report.first_broken_id,
                "reason": report.reason,
                "legacy_entries": report.legacy_entries,
                "missing_triggers": list(report.missing_triggers),
                "checkpoints_checked": report.checkpoints_checked,
            }
        )
    elif report.ok:
        against_text = (
            f", consistent with {report.checkpoints_checked} checkpoint(s)" if expected else ""
        )
        legacy = (
            f" ({report.legacy_entries} from before the keyed chain)"
            if report.legacy_entries
            else ""
        )
        out.print(
            f"audit chain intact: {report.checked} entries verified{legacy}{against_text}",
            markup=False,
        )
    elif report.first_broken_id is not None:
        out.print(
            f"audit chain BROKEN at entry {report.first_broken_id}: {report.reason} "
            f"({report.checked} entries before it verified)",
            markup=False,
        )
    else:
        out.print(f"audit chain BROKEN: {report.reason}", markup=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("checkpoint")
def checkpoint(
    to: Path = typer.Option(None, "--to", help="also append the checkpoint to this file"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Sign the chain's length and head hash now and write it to the configured destinations
    (GRANTFLOW_AUDIT_CHECKPOINT_FILE, _LOG, _URL) and `--to`; exit 1 if one failed."""
    from grantflow.audit import checkpoints
    from grantflow.cli.direct import database, settings

    loaded = settings()
    with errors_as_lines(), database(loaded) as db:
        taken, deliveries = checkpoints.write(db, loaded, to)
    failed = [d for d in deliveries if d.error]
    if as_json:
        emit_json(
            {
                "checkpoint": taken.to_json(),
                "written_to": [d.destination for d in deliveries if not d.error],
                "failed": [{"destination": d.destination, "error": d.error} for d in failed],
            }
        )
    else:
        out.print(json.dumps(taken.to_json(), sort_keys=True), markup=False)
        for delivery in deliveries:
            state = f"FAILED ({delivery.error})" if delivery.error else "written"
            out.print(f"{delivery.destination}: {state}", markup=False)
        if not deliveries:
            out.print(
                "no destination configured (GRANTFLOW_AUDIT_CHECKPOINT_FILE, "
                "GRANTFLOW_AUDIT_CHECKPOINT_URL, GRANTFLOW_AUDIT_CHECKPOINT_LOG): "
                "keep the line above, or pass --to FILE"
            )
    if failed:
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

    with errors_as_lines(), connect() as api:
        rows = api.items(
            "/audit",
            limit,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            since=aware(since),
            until=aware(until),
        )
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "at", "actor", "action", "target_type", "target_id"])
