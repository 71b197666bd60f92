"""What lifecycle runs see and leave behind: a mover run reads what moved (old and new values);
a lifecycle run that fails marks the identity with a link to it until a Retry succeeds."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.store.database import Database
from tests.support.connections import API, ok
from tests.support.engine import publish, run_detail, running_worker, wait_status
from tests.support.target import Reply, running_target

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


def test_a_failed_mover_run_marks_the_identity_until_a_retry_succeeds(
    admin: httpx.Client, database: Database
) -> None:
    """A mover run that fails leaves the identity marked (status, message, a link to the run and
    the Retry to take); taking that Retry once the system answers clears the mark."""
    with running_target() as hr:
        hr.on("/groups/dept-research/members", Reply(400, {"error": "locked"}), Reply(204))
        publish(
            database,
            lifecycle_workflow(
                "Leave old group",
                "identity_moved",
                {
                    "id": "leave_group",
                    "type": "http",
                    "config": {
                        "method": "DELETE",
                        "url": hr.url
                        + "/groups/dept-{{ input.changes.department.old | lower }}/members",
                    },
                },
            ),
        )
        ada = ok(
            admin.post(IDENTITIES, json={"email": "ada@example.com", "department": "Research"}), 201
        )
        assert ada["lifecycle_failures"] == []
        ok(admin.patch(f"{IDENTITIES}/{ada['id']}", json={"department": "Sales"}))
        run_id = latest_run(admin, ada["id"])
        with running_worker(database):
            wait_status(database, run_id, "failed")
        shown = ok(admin.get(f"{IDENTITIES}/{ada['id']}"))
        assert shown["lifecycle_state"] == "active"
        [mark] = shown["lifecycle_failures"]
        assert (mark["run_id"], mark["status"], mark["event_kind"], mark["workflow_name"]) == (
            run_id,
            "failed",
            "identity_moved",
            "Leave old group",
        )
        assert mark["message"]
        assert ok(admin.get(mark["run_url"]))["status"] == "failed"
        listed = ok(admin.get(IDENTITIES, params={"q": "ada"}))["items"]
        assert [i["lifecycle_failures"] for i in listed] == [[mark]]

        method, path = mark["next_action"].split(": ", 1)[1].split(" ", 1)
        assert (method, path) == ("POST", f"{API}/runs/{run_id}/retry")
        ok(admin.post(path))
        with running_worker(database):
            wait_status(database, run_id, "succeeded")
        assert ok(admin.get(f"{IDENTITIES}/{ada['id']}"))["lifecycle_failures"] == []
        assert len(hr.calls("/groups/dept-research/members")) == 2


def test_a_failed_joiner_run_is_marked_until_a_replay_succeeds(
    admin: httpx.Client, database: Database
) -> None:
    """A joiner whose onboarding run fails becomes active with the failure marked; a Replay of
    that run that succeeds clears the mark."""
    with running_target() as it:
        it.on("/accounts", Reply(400, {"error": "quota"}), Reply(201, {"id": "a-1"}))
        publish(
            database,
            lifecycle_workflow(
                "Create account",
                "identity_joined",
                {
                    "id": "account",
                    "type": "http",
                    "config": {"method": "POST", "url": it.url + "/accounts"},
                },
            ),
        )
        ada = ok(admin.post(IDENTITIES, json={"email": "ada@example.com"}), 201)
        assert ada["lifecycle_state"] == "joiner"
        run_id = latest_run(admin, ada["id"])
        with running_worker(database):
            wait_status(database, run_id, "failed")
            shown = ok(admin.get(f"{IDENTITIES}/{ada['id']}"))
            assert shown["lifecycle_state"] == "active"
            assert [m["run_id"] for m in shown["lifecycle_failures"]] == [run_id]
            replay = ok(admin.post(f"{API}/runs/{run_id}/replay"), 201)
            wait_status(database, replay["id"], "succeeded")
        assert ok(admin.get(f"{IDENTITIES}/{ada['id']}"))["lifecycle_failures"] == []
