"""Small workflows for connector tests: a chain of steps under an application, published and
run to a status by a worker holding the tests' keyring."""

from __future__ import annotations

from typing import Any

from grantflow.connections.crypto import Keyring
from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, start, wait_status


def chain(
    application_id: str, *steps: dict[str, Any], name: str = "Connector test"
) -> dict[str, Any]:
    """A manual workflow running `steps` in order."""
    linked = [
        {**step, "next": steps[i + 1]["id"]} if i + 1 < len(steps) else step
        for i, step in enumerate(steps)
    ]
    return {
        "name": name,
        "application": application_id,
        "trigger": {"type": "manual"},
        "steps": linked,
    }


def step(step_id: str, kind: str, connection: str, **config: Any) -> dict[str, Any]:
    return {"id": step_id, "type": kind, "config": {"connection": connection, **config}}


def run_to(
    db: Database,
    keyring: Keyring,
    document: dict[str, Any],
    *statuses: str,
    run_input: dict[str, Any] | None = None,
    **worker: Any,
) -> dict[str, Any]:
    """Publish `document`, start a run, and let a worker take it to one of `statuses`."""
    run_id = start(db, publish(db, document), run_input or {})
    with running_worker(db, keyring=keyring, **worker):
        return wait_status(db, run_id, *statuses)
