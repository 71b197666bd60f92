"""`grantflow worker`, `grantflow runs ...`, `grantflow queue status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    errors_as_lines,
    out,
    settings,
)
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import policy_for
from grantflow.definitions.source import parse_text
from grantflow.definitions.workflows import find_workflow
from grantflow.engine import detail, operations
from grantflow.engine.runs import start_run
from grantflow.engine.worker import Worker, live_workers
from grantflow.errors import BadRequest
from grantflow.queue.database import DatabaseQueue

runs_app = typer.Typer(help="Start, inspect and operate on runs.", no_args_is_help=True)
queue_app = typer.Typer(help="Inspect the queue.", no_args_is_help=True)
CLI = Actor.system("cli")


def worker(
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=256),
    poll_seconds: float = typer.Option(
        1.0,
        "--poll-seconds",
        min=0.01,
        help="how often to look for work that no wake-up announced (SQLite across processes)",
    ),
    lease_seconds: float = typer.Option(
        30.0, "--lease-seconds", min=1.0, help="how long a dead worker's runs stay held"
    ),
) -> None:
    """Run a worker process: it advances runs until SIGTERM, then finishes or hands back."""
    from grantflow.definitions import sandbox
    from grantflow.safety import config as safety_config

    loaded = settings(log_level=None)
    sandbox.configure(loaded)  # the template limits this worker enforces
    safety_config.configure(loaded)  # its breakers' defaults, the spend-cap timezone
    with errors_as_lines(), database(loaded) as db:
        queue = DatabaseQueue(db)
        Worker(
            db,
            queue,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
            keyring=keyring_for(loaded),
            outbound=policy_for(loaded.outbound_allow),
            health_check_seconds=loaded.health_check_seconds or None,
        ).run_until_signalled()
        queue.close()


def _print_run(data: dict[str, Any], as_json: bool) -> None:
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
        if action:
            out.print(f"  {action['label']}: {action['cli']}", markup=False)
    for step in data.get("steps", []):
        out.print(
            f"  {step['sequence']:>3} {step['step_id']:<24} {step['status']:<10} "
            f"attempts={step['attempts']}",
            markup=False,
        )


@runs_app.command("start")
def start(
    workflow: str,
    input_file: Path = typer.Option(None, "--input", help="YAML/JSON file with the input"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a run of a workflow's active version."""
    with errors_as_lines():
        data = parse_text(input_file.read_text(), name=str(input_file)) if input_file else {}
        if not isinstance(data, dict):
            raise BadRequest("--input: the input must be a mapping (an object)")
        with database() as db:
            queue = DatabaseQueue(db)
            with db.transaction() as session:
                run = start_run(session, CLI, queue, find_workflow(session, workflow).id, data)
                shown = detail.run_detail(session, run, queue)
    _print_run(shown, as_json)


@runs_app.command("list")
def list_runs(
    workflow: str = typer.Option(None, help="workflow id or name"),
    status: str = typer.Option(None),
    stuck: bool = typer.Option(None, "--stuck/--not-stuck"),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        queue = DatabaseQueue(db)
        wf_id = find_workflow(session, workflow).id if workflow else None
        page = detail.list_runs(session, workflow_id=wf_id, status=status, stuck=stuck, limit=limit)
        rows = []
        for run in page.items:
            row = detail.run_summary(run)
            row["stuck"] = bool(detail.stuck_report(session, run, queue))
            rows.append(row)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["id", "status", "waiting_reason", "current_step", "created_at", "stuck"])


@runs_app.command("show")
def show(run_id: str, as_json: bool = JSON_OPTION) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        shown = detail.run_detail(session, operations.get_run(session, run_id), DatabaseQueue(db))
    _print_run(shown, as_json)


@runs_app.command("timeline")
def timeline(run_id: str, as_json: bool = JSON_OPTION) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        events = detail.timeline(session, operations.get_run(session, run_id))
    if as_json:
        emit_json(events)
        return
    for e in events:
        extra = json.dumps(e.get("data")) if e.get("data") else ""
        out.print(
            f"{e['at']}  {e['kind']:<16} {e['step_id'] or '':<20} {e['actor'] or ''} {extra}",
            markup=False,
        )


def _operate(name: str, run_id: str, as_json: bool, **kwargs: Any) -> None:
    with errors_as_lines(), database() as db:
        queue = DatabaseQueue(db)
        with db.transaction() as session:
            result = getattr(operations, name)(session, CLI, queue, run_id, **kwargs)
            shown = detail.run_detail(session, result, queue)
    _print_run(shown, as_json)


@runs_app.command("retry")
def retry(run_id: str, as_json: bool = JSON_OPTION) -> None:
    """Resume a failed run from its failed step, on the same version."""
    _operate("retry", run_id, as_json)


@runs_app.command("replay")
def replay(
    run_id: str,
    latest: bool = typer.Option(False, "--latest", help="on the active version"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start a new run with the same input (as-is, or on the active version)."""
    _operate("replay", run_id, as_json, latest=latest)


@runs_app.command("cancel")
def cancel(
    run_id: str, force: bool = typer.Option(False, "--force"), as_json: bool = JSON_OPTION
) -> None:
    _operate("cancel", run_id, as_json, force=force)


@runs_app.command("pause")
def pause(run_id: str, as_json: bool = JSON_OPTION) -> None:
    _operate("pause", run_id, as_json)


@runs_app.command("resume")
def resume(run_id: str, as_json: bool = JSON_OPTION) -> None:
    _operate("resume", run_id, as_json)


@queue_app.command("status")
def queue_status(as_json: bool = JSON_OPTION) -> None:
    """Queue depth, the oldest ready run's age, and live workers."""
    with errors_as_lines(), database() as db:
        stats = DatabaseQueue(db).stats()
        workers = [
            {"id": w.id, "concurrency": w.concurrency, "heartbeat_at": w.heartbeat_at}
            for w in live_workers(db, detail.LIVE_WORKER)
        ]
    data = {
        "ready": stats.ready,
        "scheduled": stats.scheduled,
        "leased": stats.leased,
        "oldest_ready_age_seconds": stats.oldest_ready_age_seconds,
        "workers": workers,
    }
    if as_json:
        emit_json(data)
        return
    out.print(
        f"ready {stats.ready}, scheduled {stats.scheduled}, leased {stats.leased}, "
        f"oldest ready {stats.oldest_ready_age_seconds or 0:.1f}s"
    )
    emit_table(workers, ["id", "concurrency", "heartbeat_at"])


def register(root: typer.Typer) -> None:
    root.command("worker")(worker)
    root.add_typer(runs_app, name="runs")
    root.add_typer(queue_app, name="queue")
