"""Runs in the states the console's inbox and run pages show — waiting on an approval or a
task with a form, failed at an external call, waiting after a step with side effects acted —
made through the service layer, as the API makes them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from grantflow.people.models import Task
from grantflow.store.database import Database
from tests.support.engine import publish, start, wait_for, workflow

FORM = {
    "type": "object",
    "required": ["ticket"],
    "properties": {
        "ticket": {
            "type": "string",
            "title": "Ticket",
            "pattern": "^INC-[0-9]+$",
            "description": "the ticket that records the purchase",
        },
        "seats": {"type": "integer", "title": "Seats", "minimum": 1},
        "site": {"title": "Site", "enum": ["London", "Paris"]},
        "urgent": {"type": "boolean", "title": "Urgent"},
    },
    "additionalProperties": False,
}


def approval(step_id: str = "approve", **config: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "approval",
        "config": {
            "title": "Laptop for Ada Lovelace",
            "instructions": "Ada joins Research on Monday.",
            "approvers": {"roles": ["approver"]},
            **config,
        },
    }


def set_step(step_id: str = "done") -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": {"done": True}}}


def http_step(step_id: str, url: str, method: str = "POST", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": method, "url": url}, **fields}


def approval_workflow(db: Database, name: str = "Laptop request") -> str:
    """An approval by the approver role, then a step."""
    return publish(db, workflow(name, approval(), set_step()))


def task_workflow(db: Database, name: str = "Buy a licence") -> str:
    """A human task with a form, for the approver role, then a step."""
    task = {
        "id": "buy",
        "type": "task",
        "config": {
            "title": "Buy a design-tool licence",
            "instructions": "Order it in the vendor portal, then enter the ticket.",
            "assignees": {"roles": ["approver"]},
            "form": FORM,
        },
    }
    return publish(db, workflow(name, task, set_step()))


def failing_workflow(db: Database, url: str, name: str = "Create account") -> str:
    """One external call that fails at once when the target answers 503 (one attempt)."""
    step = http_step("create_account", url, retry={"max_attempts": 1})
    return publish(db, workflow(name, step, set_step()))


def acting_workflow(db: Database, url: str, name: str = "Provision then approve") -> str:
    """A call with side effects, then an approval the run waits on."""
    return publish(db, workflow(name, http_step("create_account", url), approval(), set_step()))


def start_run(db: Database, workflow_id: str, run_input: dict[str, Any] | None = None) -> str:
    return start(db, workflow_id, run_input or {"employee": "ada@example.com"})


def waiting_task(db: Database, run_id: str) -> str:
    """The id of the task the run waits on, once it waits."""
    wait_for(db, run_id, lambda d: d["status"] == "waiting" and d["waiting_for"] is not None)
    with db.transaction() as session:
        return str(
            session.execute(
                select(Task.id).where(Task.run_id == run_id, Task.status == "pending")
            ).scalar_one()
        )
