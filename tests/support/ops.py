"""Runs in the states the console's inbox and run pages show — waiting on an approval or a
task with a form, failed at an external call, waiting after a step with side effects acted —
made through the service layer, as the API makes them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity, leave
from grantflow.access.identity_lookup import find_identity
from grantflow.access.models import Incident
from grantflow.connections.models import ConnectionStatus
from grantflow.connections.service import get_connection, set_status
from grantflow.governance import controls
from grantflow.people.models import Task
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules.jobs import BuiltInJobCreate, create_built_in
from grantflow.schedules.overdue import mark_overdue
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.engine import ACTOR, publish, start, wait_for, workflow
from tests.support.provisioning import make_application, make_connection
from tests.support.target import Reply, Target

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


def looping_workflow(db: Database, passes: int, name: str = "Poll the HR system") -> str:
    """A loop of a step and the condition that goes round again, bounded at `passes`: its run
    fails with `loop_bound_exceeded` after 2 x `passes` step runs (a long run's history)."""
    poll = {"id": "poll", "type": "set", "config": {"values": {"answer": "pending"}}}
    again = {
        "id": "again",
        "type": "condition",
        "branches": [{"when": "true", "next": "poll"}],
        "max_iterations": passes,
    }
    return publish(db, workflow(name, poll, again))


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


@dataclass
class Attention:
    """One of everything the home page lists, by id."""

    failed_run: str
    waiting_run: str
    task: str
    connection: str
    job: str
    incident: str


def attention_world(db: Database, target: Target, approvers_role: str = "admin") -> Attention:
    """A failed run, a run waiting on an approval for `approvers_role`, an unhealthy
    connection (so the connections_unhealthy control fails), an overdue job and an open
    security incident (a leaver's grant in an application no workflow revokes) — each made
    by the service that makes it in production."""
    target.on("/accounts", Reply(503, {"error": "maintenance"}))
    failed = start_run(db, failing_workflow(db, f"{target.url}/accounts"))
    wf = publish(
        db, workflow("Laptop request", approval(approvers={"roles": [approvers_role]}), set_step())
    )
    waiting = start_run(db, wf)
    task = waiting_task(db, waiting)
    wait_for(db, failed, lambda d: d["status"] == "failed")
    app_id = make_application(db, "Payroll")
    connection_id = make_connection(db, None, app_id, "api", "https://payroll.example.com")
    later = utcnow() + dt.timedelta(days=2)
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        connection = get_connection(session, connection_id)
        set_status(session, connection, ConnectionStatus.UNHEALTHY, "health check: HTTP 500")
    with db.transaction() as session:
        controls.evaluate(session, ACTOR, {"controls": ["connections_unhealthy"]}, now=later)
        job = create_built_in(
            session,
            ACTOR,
            BuiltInJobCreate(name="Nightly controls", kind="control_evaluation", cron="0 6 * * *"),
        )
        mark_overdue(session, later)
        job_id = job.id
    with db.transaction() as session:
        create_application(
            session, ACTOR, ApplicationCreate(name="Wiki", kind=ApplicationKind.SAAS)
        )
        leaver = create_identity(session, ACTOR, queue, IdentityCreate(email="leo@example.com"))
        create_grant(session, ACTOR, queue, GrantCreate(identity=leaver.email, application="Wiki"))
    with db.transaction() as session:
        leave(session, ACTOR, queue, find_identity(session, "leo@example.com"))
    with db.transaction() as session:
        incident_id = session.execute(select(Incident.id)).scalar_one()
    return Attention(failed, waiting, task, connection_id, job_id, incident_id)
