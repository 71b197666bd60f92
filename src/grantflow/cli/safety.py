"""`grantflow workflows webhook-secret|webhook|deliveries|resume-safety` and `grantflow usage
[set-cap]`: through the API like every data command (each docstring names its route)."""

from __future__ import annotations

from typing import Any

import typer

from grantflow.cli.client import Client, connect
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out


def _workflow_id(api: Client, workflow: str) -> str:
    return api.full_id("/workflows", workflow)


def webhook_secret(workflow: str, as_json: bool = JSON_OPTION) -> None:
    """Create or rotate the webhook secret, printed once (POST /workflows/{id}/webhook-secret)."""
    with errors_as_lines(), connect() as api:
        result: dict[str, Any] = api.post(
            f"/workflows/{_workflow_id(api, workflow)}/webhook-secret"
        )
    if as_json:
        emit_json(result)
        return
    out.print(f"secret: {result['secret']}", markup=False)
    out.print(
        "shown once: store it with the sender now"
        + (" (the previous secret no longer works)" if result.get("rotated") else ""),
        markup=False,
    )


def webhook(workflow: str, as_json: bool = JSON_OPTION) -> None:
    """The webhook's path and secret status, never the secret (GET /workflows/{id}/webhook)."""
    with errors_as_lines(), connect() as api:
        status = api.get(f"/workflows/{_workflow_id(api, workflow)}/webhook")
    if as_json:
        emit_json(status)
        return
    for key in ("path", "secret_set", "created_at", "created_by", "rotated_at", "rotated_by"):
        out.print(f"{key}: {status[key]}", markup=False)


def deliveries(
    workflow: str,
    failed: bool = typer.Option(False, "--failed", help="only the refused deliveries"),
    as_json: bool = JSON_OPTION,
) -> None:
    """The newest deliveries: time, outcome, reason (GET /workflows/{id}/deliveries)."""
    with errors_as_lines(), connect() as api:
        found = api.get(f"/workflows/{_workflow_id(api, workflow)}/deliveries", failed=failed)
    rows = found["items"]
    if as_json:
        emit_json(rows)
        return
    emit_table(rows, ["received_at", "outcome", "status_code", "delivery_id", "reason", "run_id"])


def resume_safety(workflow: str, as_json: bool = JSON_OPTION) -> None:
    """Resume a workflow paused for safety; its held runs go on, oldest first
    (POST /workflows/{id}/resume-safety)."""
    with errors_as_lines(), connect() as api:
        found = api.post(f"/workflows/{_workflow_id(api, workflow)}/resume-safety")
    result = {"workflow_id": found["id"], "name": found["name"], "status": found["status"]}
    if as_json:
        emit_json(result)
    else:
        out.print(f"{result['name']}: resumed ({result['status']})", markup=False)


usage_app = typer.Typer(help="Usage against the spend caps.", invoke_without_command=True)


@usage_app.callback()
def usage(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Runs, executed steps and external calls this day and month (GET /usage)."""
    if ctx.invoked_subcommand is not None:
        return
    with errors_as_lines(), connect() as api:
        shown = api.get("/usage")
    if as_json:
        emit_json(shown)
        return
    out.print(f"day {shown['day']}, month {shown['month']} ({shown['timezone']})", markup=False)
    rows = [{"scope": "workspace", **row} for row in shown["workspace"]["usage"]]
    for workflow in shown["workflows"]:
        rows += [{"scope": workflow["name"], **row} for row in workflow["usage"]]
    emit_table(rows, ["scope", "kind", "period", "used", "cap", "percent", "rolls_over_at"])


@usage_app.command("set-cap")
def set_cap(
    kind: str = typer.Option(..., "--kind", help="runs, steps or external_calls"),
    period: str = typer.Option(..., "--period", help="day or month"),
    cap: int = typer.Option(None, "--cap", help="the cap; leave out with --remove"),
    workflow: str = typer.Option(None, "--workflow", help="a workflow's cap (else the workspace)"),
    remove: bool = typer.Option(False, "--remove", help="remove the cap"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Set or remove a spend cap (PUT /spend-caps); runs it frees go on at once."""
    body = {"workflow": workflow, "kind": kind, "period": period, "cap": None if remove else cap}
    with errors_as_lines(options={}), connect() as api:
        result = api.put("/spend-caps", body)
    if as_json:
        emit_json(result)
    else:
        out.print(f"cap set: {result}", markup=False)


def register(workflows_app: typer.Typer) -> None:
    workflows_app.command("webhook-secret")(webhook_secret)
    workflows_app.command("webhook")(webhook)
    workflows_app.command("deliveries")(deliveries)
    workflows_app.command("resume-safety")(resume_safety)
