"""`grantflow workflows webhook-secret|webhook|deliveries`: each a thin caller of the service
function behind one API route (named in each docstring)."""

from __future__ import annotations

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
from grantflow.definitions.workflows import find_workflow
from grantflow.safety import webhooks

CLI = Actor.system("cli")


def webhook_secret(workflow: str, as_json: bool = JSON_OPTION) -> None:
    """Create or rotate the webhook secret, printed once (POST /workflows/{id}/webhook-secret)."""
    loaded = settings()
    with errors_as_lines(), database(loaded) as db, db.transaction() as session:
        found = find_workflow(session, workflow)
        new = webhooks.set_secret(session, CLI, keyring_for(loaded), found.id)
    result = {
        "workflow_id": new.workflow_id,
        "secret": new.secret,
        "created_at": new.created_at,
        "rotated": new.rotated,
    }
    if as_json:
        emit_json(result)
        return
    out.print(f"secret: {new.secret}", markup=False)
    out.print(
        "shown once: store it with the sender now"
        + (" (the previous secret no longer works)" if new.rotated else ""),
        markup=False,
    )


def webhook(workflow: str, as_json: bool = JSON_OPTION) -> None:
    """The webhook's path and secret status, never the secret (GET /workflows/{id}/webhook)."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        status = webhooks.secret_status(session, find_workflow(session, workflow).id)
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
    with errors_as_lines(), database() as db, db.transaction() as session:
        rows = webhooks.deliveries(session, find_workflow(session, workflow).id, failed_only=failed)
    if as_json:
        emit_json(rows)
        return
    emit_table(rows, ["received_at", "outcome", "status_code", "delivery_id", "reason", "run_id"])


def register(workflows_app: typer.Typer) -> None:
    workflows_app.command("webhook-secret")(webhook_secret)
    workflows_app.command("webhook")(webhook)
    workflows_app.command("deliveries")(deliveries)
