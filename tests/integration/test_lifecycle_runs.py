"""What lifecycle runs see and leave behind: a mover run reads what moved (old and new values)."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.store.database import Database
from tests.support.connections import API, ok
from tests.support.engine import publish, run_detail, running_worker, wait_status

IDENTITIES = f"{API}/identities"


def lifecycle_workflow(name: str, trigger: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "trigger": {"type": trigger}, "steps": list(steps)}


def latest_run(admin: httpx.Client, identity_id: str) -> str:
    events = ok(admin.get(f"{IDENTITIES}/{identity_id}/events"))
    [dispatched] = events[-1]["dispatch"]
    run_id: str = dispatched["run_id"]
    return run_id


def test_a_mover_run_reads_the_old_department(admin: httpx.Client, database: Database) -> None:
    """A move hands its run the changed fields with old and new values: a workflow computes the
    old department's group to leave and the new one to join."""
    publish(
        database,
        lifecycle_workflow(
            "Department groups",
            "identity_moved",
            {
                "id": "groups",
                "type": "set",
                "config": {
                    "values": {
                        "leave": "dept-{{ input.changes.department.old | lower }}",
                        "join": "dept-{{ input.changes.department.new | lower }}",
                        "who": "{{ identity.email }}",
                    }
                },
            },
        ),
    )
    ada = ok(
        admin.post(
            IDENTITIES,
            json={"email": "ada@example.com", "department": "Research", "title": "Engineer"},
        ),
        201,
    )
    ok(
        admin.patch(
            f"{IDENTITIES}/{ada['id']}",
            json={"department": "Sales", "title": "Lead", "end_date": "2030-01-31"},
        )
    )
    run_id = latest_run(admin, ada["id"])
    with running_worker(database):
        wait_status(database, run_id, "succeeded")
    shown = run_detail(database, run_id)
    assert shown["input"]["event"] == "identity_moved"
    assert shown["input"]["changed"] == ["department", "end_date", "title"]
    assert shown["input"]["changes"] == {
        "department": {"old": "Research", "new": "Sales"},
        "title": {"old": "Engineer", "new": "Lead"},
        "end_date": {"old": None, "new": "2030-01-31"},
    }
    assert shown["steps"][0]["output"] == {
        "leave": "dept-research",
        "join": "dept-sales",
        "who": "ada@example.com",
    }
    assert ok(admin.get(f"{IDENTITIES}/{ada['id']}"))["lifecycle_state"] == "active"
