"""The listeners at a run's end read only what the run can have: a manual run whose plan has no
person in it (no approval or task step, no escalation) ends with no look at tasks, occurrences,
incidents, lifecycle links or notifications — on the engine's hot path, in one write — on both
databases; a run a lifecycle event started still settles its identity, and a run with an
approval step still has its tasks looked at."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.access.models import Identity
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.engine import ACTOR, publish, running_worker, start, wait_status, workflow
from tests.support.processes import poll

LOOKED_AT = re.compile(
    r"\bFROM (job_occurrences|tasks|incidents|lifecycle_event_runs|notifications)\b", re.I
)


@contextmanager
def tables_read(database: Database) -> Iterator[list[str]]:
    """The tables of LOOKED_AT that statements sent through the engine read, in order."""
    found: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *_: object) -> None:
        found.extend(m.group(1).lower() for m in LOOKED_AT.finditer(statement))

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        yield found
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)


def set_step(step_id: str) -> dict[str, object]:
    return {"id": step_id, "type": "set", "config": {"values": {"done": step_id}}}


def test_a_plain_run_ends_looking_at_nothing_else(database: Database) -> None:
    wf = publish(database, workflow("Plain", set_step("a"), set_step("b"), set_step("c")))
    with tables_read(database) as read, running_worker(database):
        run_id = start(database, wf)
        assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
    assert read == []


def test_a_run_whose_step_escalates_still_looks_at_its_tasks(database: Database) -> None:
    document = workflow("Escalating", set_step("a"), set_step("b"))
    document["steps"][1]["on_failure"] = "escalate"
    wf = publish(database, document)
    with tables_read(database) as read, running_worker(database):
        run_id = start(database, wf)
        assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
    assert read == ["tasks"]


def test_a_lifecycle_run_still_settles_its_identity(database: Database) -> None:
    document = {
        "name": "Joiner",
        "trigger": {"type": "identity_joined"},
        "steps": [set_step("welcome")],
    }
    publish(database, document)
    with tables_read(database) as read, running_worker(database):
        with database.transaction() as session:
            ada = create_identity(
                session, ACTOR, DatabaseQueue(database), IdentityCreate(email="ada@example.com")
            )
            assert ada.lifecycle_state == "joiner"

        def settled() -> bool:
            with database.transaction() as session:
                found = session.get(Identity, ada.id)
                return found is not None and found.lifecycle_state == "active"

        poll(settled, timeout=60, what="the identity to settle")
    assert "lifecycle_event_runs" in read


def test_a_run_with_an_approval_step_still_looks_at_its_tasks(database: Database) -> None:
    ask = {
        "id": "ask",
        "type": "approval",
        "config": {"title": "Approve", "approvers": {"roles": ["approver"]}},
    }
    wf = publish(database, workflow("Asks", ask))
    with tables_read(database) as read, running_worker(database):
        run_id = start(database, wf)
        wait_status(database, run_id, "waiting", "failed")
    assert "tasks" in read
