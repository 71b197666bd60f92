"""`grantflow runs ...` and `grantflow queue status`, through /api/v1/runs and /api/v1/queue."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import Client, connect, segment
from grantflow.cli.context import (
    JSON_OPTION,
    emit_json,
    emit_table,
    errors_as_lines,
    fail_with,
    out,
)
from grantflow.cli.evidence import register as register_evidence
from grantflow.cli.files import read_document
from grantflow.strict import MAX_INT

runs_app = typer.Typer(help="Start, inspect and operate on runs.", no_args_is_help=True)
queue_app = typer.Typer(help="Inspect the queue.", no_args_is_help=True)
RUN_ID = typer.Argument(..., help="the run's id (or a unique prefix of it)")
SHOWN_STEPS = 50  # a run's last step runs its text shows (`runs steps` lists every one)


def run_id(api: Client, raw: str) -> str:
    return api.full_id("/runs", raw)


def print_run(data: dict[str, Any], as_json: bool, steps_shown: int = SHOWN_STEPS) -> None:
    if as_json:
        emit_json(data)
        return
    out.print(
        f"run {data['id']}  {data['workflow']} v{data['version']}  {data['status']}"
        + (f" ({data['waiting_reason']})" if data.get("waiting_reason") else ""),
        markup=False,
    )
    failure = data.get("failure")
    if failure:
        out.print(f"  {failure['class']}: {failure['message']}", markup=False)
    paused = data.get("paused")
    if paused:
        verb = "pause requested" if paused.get("requested") else "paused"
        out.print(
            f"  {verb} by {paused.get('by') or 'unknown'} at {paused.get('at')}", markup=False
        )
    if data.get("stuck"):
        out.print(f"  STUCK: {data['stuck']['explanation']}", markup=False)
    advised = data.get("next") or (
        {"next_action": failure.get("next_action"), "action": failure.get("action")}
        if failure
        else None
    )
    if advised and advised.get("next_action"):
        out.print(f"  next: {advised['next_action']}", markup=False)
        action = advised.get("action")
        if action and action.get("cli"):
            out.print(f"  {action['label']}: {action['cli']}", markup=False)
    steps = data.get("steps", [])[-steps_shown:]  # (an operation answers with every one)
    earlier = data.get("steps_total", len(data.get("steps", []))) - len(steps)
    if earlier > 0:
        out.print(
            f"  ... {earlier} earlier step runs (grantflow runs steps {data['id']})", markup=False
        )
    for step in steps:
        out.print(
            f"  {step['sequence']:>3} {step['step_id']:<24} {step['status']:<10} "
            f"attempts={step['attempts']}",
            markup=False,
        )


@runs_app.command("start")
def start(
    workflow: str = typer.Argument(..., help="the workflow's id, name or id prefix"),
    input_file: Path = typer.Option(None, "--input", help="YAML/JSON file with the input"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a run of a workflow's active version."""
    with errors_as_lines():
        data = read_document(input_file, "--input") if input_file else {}
        with connect() as api:
            workflow_id = api.full_id("/workflows", workflow)
            shown = api.post(f"/workflows/{workflow_id}/runs", {"input": data})
    print_run(shown, as_json)


@runs_app.command("list")
def list_runs(
    workflow: str = typer.Option(None, help="workflow id or name"),
    version: int = typer.Option(
        None, min=1, max=MAX_INT, help="only the workflow's version N (--workflow)"
    ),
    status: str = typer.Option(None),
    stuck: bool = typer.Option(None, "--stuck/--not-stuck"),
    since: str = typer.Option(None, help="created at or after (ISO 8601)"),
    until: str = typer.Option(None, help="created before (ISO 8601)"),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Runs, newest first."""
    begins, ends = _moment("--since", since), _moment("--until", until)
    if version is not None and workflow is None:
        fail_with(
            f"--version {version}: a version number belongs to one workflow; give --workflow too",
            f"grantflow runs list --workflow NAME --version {version}",
            exit_code=2,
        )
    with errors_as_lines(), connect() as api:
        workflow_id = api.full_id("/workflows", workflow) if workflow else None
        rows = api.items(
            "/runs",
            limit,
            workflow_id=workflow_id,
            version=version,
            status=status,
            stuck=stuck,
            since=begins,
            until=ends,
        )
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            [{**r, "stuck": bool(r.get("stuck"))} for r in rows],
            ["id", "workflow", "status", "waiting_reason", "current_step", "created_at", "stuck"],
        )


def _moment(option: str, value: str | None) -> str | None:
    """An ISO 8601 time as the API takes it (UTC unless it says its zone), or the refusal
    naming the option."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        fail_with(
            f"{option} {value!r}: not an ISO 8601 date or time",
            f"give one such as 2026-01-31 or 2026-01-31T09:00:00Z to {option}",
            exit_code=2,
        )
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat()


@runs_app.command("show")
def show(
    run: str = RUN_ID,
    steps: int = typer.Option(
        SHOWN_STEPS, "--steps", min=1, max=500, help="the last N step runs (`runs steps`: all)"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """A run: status, failure reason and next action, its last steps with attempts, stuck
    facts."""
    with errors_as_lines(), connect() as api:
        shown = api.get(f"/runs/{segment(run)}", steps_limit=steps)
    print_run(shown, as_json, steps)


@runs_app.command("steps")
def list_steps(
    run: str = RUN_ID,
    limit: int = typer.Option(100, min=1, help="at most this many, newest first"),
    as_json: bool = JSON_OPTION,
) -> None:
    """The run's step runs with their attempts, newest first."""
    with errors_as_lines(), connect() as api:
        rows = api.items(f"/runs/{segment(run)}/steps", limit)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["sequence", "step_id", "type", "status", "attempts", "finished_at"])


@runs_app.command("timeline")
def timeline(
    run: str = RUN_ID,
    last: int = typer.Option(None, "--last", min=1, max=500, help="only the last N events"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Every event of the run (or its last ones), oldest first."""
    with errors_as_lines(), connect() as api:
        events = api.get(f"/runs/{segment(run)}/timeline", limit=last)["events"]
    if as_json:
        emit_json(events)
        return
    for e in events:
        extra = json.dumps(e.get("data")) if e.get("data") else ""
        out.print(
            f"{e['at']}  {e['kind']:<16} {e['step_id'] or '':<20} {e['actor'] or ''} {extra}",
            markup=False,
        )


def _operate(action: str, raw: str, as_json: bool, body: Any = None, **params: Any) -> None:
    with errors_as_lines(), connect() as api:
        shown = api.post(f"/runs/{run_id(api, raw)}/{action}", body, **params)
    print_run(shown, as_json)


@runs_app.command("retry")
def retry(run: str = RUN_ID, as_json: bool = JSON_OPTION) -> None:
    """Resume a failed run from its failed step, on the same version."""
    _operate("retry", run, as_json)


@runs_app.command("replay")
def replay(
    run: str = RUN_ID,
    latest: bool = typer.Option(False, "--latest", help="on the active version"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a new run with the same input (as-is, or on the active version)."""
    _operate("replay", run, as_json, latest=latest)


@runs_app.command("cancel")
def cancel(
    run: str = RUN_ID,
    force: bool = typer.Option(False, "--force", help="even after steps with side effects"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Cancel a run (after a step with side effects acted, only with --force)."""
    _operate("cancel", run, as_json, {"force": force})


@runs_app.command("pause")
def pause(run: str = RUN_ID, as_json: bool = JSON_OPTION) -> None:
    """Stop the run at its next step boundary."""
    _operate("pause", run, as_json)


@runs_app.command("resume")
def resume(run: str = RUN_ID, as_json: bool = JSON_OPTION) -> None:
    """Resume a paused run."""
    _operate("resume", run, as_json)


@queue_app.command("status")
def queue_status(as_json: bool = JSON_OPTION) -> None:
    """Queue depth, the oldest ready run's age, the transport (up, or down since when), and
    the workers: live, and lost (a worker whose lease ran out in the last day: it died) with
    the runs still in its hand."""
    with errors_as_lines(), connect() as api:
        data = api.get("/queue")
    if as_json:
        emit_json(data)
        return
    out.print(
        f"ready {data['ready']}, scheduled {data['scheduled']}, leased {data['leased']}, "
        f"oldest ready {data['oldest_ready_age_seconds'] or 0:.1f}s"
    )
    out.print(_transport_line(data.get("transport_status") or {}), markup=False)
    columns = [
        "id",
        "state",
        "hostname",
        "pid",
        "concurrency",
        "runs_in_hand",
        "heartbeat_at",
        "transport",
    ]
    emit_table(data["workers"] + data.get("lost_workers", []), columns)


def _transport_line(shown: dict[str, Any]) -> str:
    kind = shown.get("kind", "database")
    where = f" at {shown['location']}" if shown.get("location") else ""
    if shown.get("status") == "down":
        return (
            f"transport {kind}{where}: DOWN since {shown.get('down_since')} "
            f"({shown.get('error')}); runs are accepted and stay queued until it returns"
        )
    if shown.get("entries") is None:
        return f"transport {kind}{where}: up"
    return (
        f"transport {kind}{where}: up, {shown['entries']} announcements in the stream, "
        f"{shown.get('pending_entries') or 0} read and not yet acknowledged"
    )


register_evidence(runs_app)
