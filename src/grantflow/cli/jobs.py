"""`grantflow jobs list | show | preview | pause | resume | enable | disable | run-now |
occurrences`: scheduled jobs, through /api/v1/jobs."""

from __future__ import annotations

from typing import Any

import typer

from grantflow.cli.client import connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.errors import BadRequest

app = typer.Typer(
    help="Scheduled jobs: status, preview, Run now, occurrences.", no_args_is_help=True
)
JOB = typer.Argument(..., help="job id (or a unique prefix) or name")


def _print_job(data: dict[str, Any]) -> None:
    out.print(f"job {data['name']}  ({data['kind']}, id {data['id']})", markup=False)
    out.print(
        f"  status: {data['status']} (by {data['status_changed_by']} at "
        f"{_text(data['status_changed_at'])})",
        markup=False,
    )
    out.print(f"  schedule: {data['cron']}  {data['description']}", markup=False)
    if data["next_fire_at"]:
        out.print(
            f"  next: {data['next_fire_at_local']}  ({_text(data['next_fire_at'])} UTC)",
            markup=False,
        )
    else:
        out.print("  next: none", markup=False)
    if data["overdue"]:
        out.print(
            f"  OVERDUE since {_text(data['overdue_since'])}: the occurrence has not started "
            "(is a scheduler running?)",
            markup=False,
        )
    last = data.get("last_occurrence")
    if last:
        out.print(
            f"  last occurrence: {last['scheduled_for_local']}  {last['status']}"
            + (f" -> {last['outcome']}" if last["outcome"] else "")
            + (" (manual)" if last["manual"] else "")
            + (f": {last['reason']}" if last["reason"] else ""),
            markup=False,
        )
    settings = data["settings"]
    out.print(
        f"  misfire {settings['misfire_policy']} (catch-up window "
        f"{settings['catchup_window_seconds']:g}s), overlap {settings['overlap_policy']}, "
        f"grace {settings['grace_seconds']:g}s",
        markup=False,
    )
    if data.get("workflow"):
        out.print(
            f"  workflow: {data['workflow']['name']} ({data['workflow']['status']})", markup=False
        )
    if data.get("health_note"):
        out.print(f"  note: {data['health_note']}", markup=False)


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(data)
    else:
        _print_job(data)


@app.command("list")
def list_jobs(
    kind: str | None = typer.Option(
        None, help="workflow, access_review, control_evaluation, report"
    ),
    status: str | None = typer.Option(None, help="enabled, paused, disabled"),
    overdue: bool | None = typer.Option(None, "--overdue/--not-overdue"),
    limit: int = typer.Option(100, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Jobs: status, next fire time, last occurrence and outcome, overdue."""
    with errors_as_lines(), connect() as api:
        rows = api.items("/jobs", limit, kind=kind, status=status, overdue=overdue)
    if as_json:
        emit_json(rows)
        return
    table = [
        {
            "name": r["name"],
            "kind": r["kind"],
            "status": r["status"],
            "cron": f"{r['cron']} {r['timezone']}",
            "next (local)": r["next_fire_at_local"],
            "last": (
                f"{r['last_occurrence']['status']}"
                + (f"/{r['last_occurrence']['outcome']}" if r["last_occurrence"]["outcome"] else "")
                if r["last_occurrence"]
                else None
            ),
            "overdue": "yes" if r["overdue"] else "",
        }
        for r in rows
    ]
    emit_table(table, ["name", "kind", "status", "cron", "next (local)", "last", "overdue"])


@app.command("show")
def show(job: str = JOB, as_json: bool = JSON_OPTION) -> None:
    """One job in detail, with the health note when Run now succeeds but the schedule fails."""
    with errors_as_lines(), connect() as api:
        data = api.get(f"/jobs/{segment(job)}")
    _show(data, as_json)


@app.command("preview")
def preview(
    job: str | None = typer.Argument(None, help="job id or name (or give --cron)"),
    cron_expression: str | None = typer.Option(None, "--cron", help="an expression not saved yet"),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA timezone for --cron"),
    count: int = typer.Option(10, "--count", "-n", min=1, max=100),
    as_json: bool = JSON_OPTION,
) -> None:
    """The next fire times in the job's timezone, a description, and warnings."""
    with errors_as_lines():
        if (job is None) == (cron_expression is None):
            raise BadRequest("give a job, or --cron (with --timezone), not both")
        with connect() as api:
            if job is not None:
                data = api.get(f"/jobs/{segment(job)}/preview", count=count)
            else:
                body = {"cron": cron_expression, "timezone": timezone, "count": count}
                data = api.post("/jobs/preview", body)
    if as_json:
        emit_json(data)
        return
    out.print(f"{data['cron']}  ({data['timezone']}): {data['description']}", markup=False)
    for at in data["next"]:
        out.print(f"  {at['local']}   {at['utc']} UTC", markup=False)
    if not data["next"]:
        out.print("  (no fire times)", markup=False)
    for warning in data["warnings"]:
        out.print(f"  warning: {warning}", markup=False)


def _status(job: str, action: str, as_json: bool) -> None:
    with errors_as_lines(), connect() as api:
        data = api.post(f"/jobs/{segment(job)}/{action}")
    _show(data, as_json)


@app.command("pause")
def pause(job: str = JOB, as_json: bool = JSON_OPTION) -> None:
    """Pause: each scheduled time is recorded as skipped, naming who paused it."""
    _status(job, "pause", as_json)


@app.command("resume")
def resume(job: str = JOB, as_json: bool = JSON_OPTION) -> None:
    """Resume a paused job (enabled again)."""
    _status(job, "resume", as_json)


@app.command("enable")
def enable(job: str = JOB, as_json: bool = JSON_OPTION) -> None:
    """Enable; a disabled job starts from the next time after now."""
    _status(job, "enable", as_json)


@app.command("disable")
def disable(job: str = JOB, as_json: bool = JSON_OPTION) -> None:
    """Disable: no occurrences at all until enabled (Run now still works)."""
    _status(job, "disable", as_json)


@app.command("run-now")
def run_now(job: str = JOB, as_json: bool = JSON_OPTION) -> None:
    """Start an occurrence now, recorded as manual."""
    with errors_as_lines(), connect() as api:
        data = api.post(f"/jobs/{segment(job)}/run-now")
    if as_json:
        emit_json(data)
        return
    out.print(
        f"occurrence {data['id']}: {data['status']}"
        + (f", run {data['run_id']}" if data["run_id"] else "")
        + (f" ({data['reason']})" if data["reason"] else ""),
        markup=False,
    )


@app.command("occurrences")
def occurrences(
    job: str = JOB,
    limit: int = typer.Option(20, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """The job's occurrences, newest first: status, reason, run, outcome, lag."""
    with errors_as_lines(), connect() as api:
        rows = api.items(f"/jobs/{segment(job)}/occurrences", limit)
    if as_json:
        emit_json(rows)
        return
    emit_table(
        [{**r, "manual": "yes" if r["manual"] else ""} for r in rows],
        ["scheduled_for_local", "status", "manual", "run_id", "outcome", "lag_ms", "reason"],
    )
