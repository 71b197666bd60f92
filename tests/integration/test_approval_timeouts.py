"""Timeout policies of approvals and human tasks, run by the real app and a real worker:
escalation to fallback approvers, automatic rejection and approval, reminders, a task's
skip / fail at its timeout, and the publish gate refusing a timeout without a policy."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.auth.permissions import Role
from grantflow.auth.users import find_user_by_email
from grantflow.people.models import Task
from grantflow.people.notifications import Notification
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker

ALICE = "alice@example.com"  # the approver (or assignee) a step names
BOB = "bob@example.com"  # the fallback approver
CAROL = "carol@example.com"  # a second approver


@dataclass
class Desk:
    """The API as an admin and as named people, with a worker running behind it."""

    api: Api
    admin: httpx.Client
    people: dict[str, httpx.Client] = field(default_factory=dict)

    def person(self, email: str, *roles: Role) -> httpx.Client:
        client = self.api.client(self.api.user_token(email, *(roles or (Role.APPROVER,))))
        self.people[email] = client
        return client

    def publish(self, document: dict[str, Any]) -> str:
        created = self.admin.post("/api/v1/workflows", json=document)
        assert created.status_code == 201, created.text
        workflow_id: str = created.json()["workflow"]["id"]
        published = self.admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
        assert published.status_code == 200, published.text
        return workflow_id

    def start(self, workflow_id: str) -> str:
        started = self.admin.post(f"/api/v1/workflows/{workflow_id}/runs", json={"input": {}})
        assert started.status_code == 201, started.text
        run_id: str = started.json()["id"]
        return run_id

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.admin.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.admin.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def timeline(self, run_id: str) -> list[dict[str, Any]]:
        response = self.admin.get(f"/api/v1/runs/{run_id}/timeline")
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def inbox(self, email: str) -> list[dict[str, Any]]:
        response = self.people[email].get("/api/v1/inbox")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def act(self, email: str, task_id: str, action: str, **body: Any) -> dict[str, Any]:
        response = self.people[email].post(f"/api/v1/tasks/{task_id}/{action}", json=body)
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def notes(self, email: str, task_id: str) -> list[Notification]:
        """The notifications addressed to `email` about the task, oldest first."""
        with self.api.database.transaction() as session:
            user = find_user_by_email(session, email)
            assert user is not None
            rows = session.execute(
                select(Notification)
                .where(Notification.recipient_id == user.id, Notification.target_id == task_id)
                .order_by(Notification.created_at, Notification.id)
            ).scalars()
            found = list(rows)
            session.expunge_all()
            return found


def until(
    check: Callable[[], Any], what: str, timeout: float = 60.0
) -> Any:  # poll, never sleep blindly
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def desk(api: Api, admin: httpx.Client, database: Database) -> Iterator[Desk]:
    with running_worker(database):
        desk = Desk(api, admin)
        try:
            yield desk
        finally:
            for client in desk.people.values():
                client.close()


def approval_flow(name: str, **config: Any) -> dict[str, Any]:
    """Ask ALICE to approve, then record who approved."""
    return {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "approve",
                "type": "approval",
                "config": {
                    "title": "Grant wiki access",
                    "approvers": {"users": [ALICE]},
                    **config,
                },
                "next": "done",
            },
            {
                "id": "done",
                "type": "set",
                "config": {"values": {"approved_by": "{{ steps.approve.output.approvers }}"}},
            },
        ],
    }


def task_flow(name: str, **config: Any) -> dict[str, Any]:
    """A human task for ALICE, then a step that records the run went on."""
    return {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "badge",
                "type": "task",
                "config": {
                    "title": "Remove the badge",
                    "assignees": {"users": [ALICE]},
                    "form": {"type": "object", "properties": {"done": {"type": "boolean"}}},
                    **config,
                },
                "next": "after",
            },
            {"id": "after", "type": "set", "config": {"values": {"went_on": True}}},
        ],
    }


def waiting_task(desk: Desk, run_id: str) -> str:
    """The id of the task the run waits (or waited) on, once it exists: read from the tasks
    table, because a 1 s timeout can end the wait before a loaded machine's next look at the
    run."""

    def task_of_run() -> str | None:
        with desk.api.database.transaction() as session:
            found = session.execute(select(Task.id).where(Task.run_id == run_id)).scalar()
            return str(found) if found else None

    task_id: str = until(task_of_run, "the run to wait on a person")
    return task_id


def step_of(shown: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in shown["steps"] if s["step_id"] == step_id)
    return found


# --- approvals --------------------------------------------------------------------------------


@pytest.mark.parametrize("decider", [BOB, ALICE])
def test_timeout_escalates_to_the_fallback_who_gets_it_and_either_may_approve(
    desk: Desk, decider: str
) -> None:
    """At the timeout the fallback approver is added (inbox, approval_pending notification,
    escalated_at, audit task.escalated, timeline); the original approver can still act; an
    approval by either resumes the run to success."""
    desk.person(ALICE)
    desk.person(BOB)
    workflow_id = desk.publish(
        approval_flow(
            "Escalating approval",
            timeout="1s",
            on_timeout="escalate",
            escalate_to={"users": [BOB]},
        )
    )
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)

    task = until(lambda: (t := desk.task(task_id))["escalated_at"] and t, "the escalation")
    assert task["status"] == "pending"
    assert task["due_at"] is None  # escalated once: no second timeout
    assert set(task["can_act"]) == {ALICE, BOB}

    assert [i["id"] for i in desk.inbox(BOB)] == [task_id]
    assert [i["id"] for i in desk.inbox(ALICE)] == [task_id]
    assert desk.inbox(BOB)[0]["you_can_act"] is True
    assert desk.inbox(ALICE)[0]["you_can_act"] is True

    (note,) = desk.notes(BOB, task_id)
    assert (note.kind, note.resolved_at) == ("approval_pending", None)
    assert note.created_at >= dt.datetime.fromisoformat(task["escalated_at"])  # told then
    assert [n.kind for n in desk.notes(ALICE, task_id)] == ["approval_pending"]

    audit = desk.admin.get(
        "/api/v1/audit", params={"action": "task.escalated", "target_id": task_id}
    ).json()["items"]
    assert [(e["actor"], e["summary"]) for e in audit] == [("system:engine", {"to": [BOB]})]

    escalated = [
        e
        for e in desk.timeline(run_id)
        if e["kind"] == "step_waiting" and "escalated_to" in e.get("data", {})
    ]
    assert [e["data"]["escalated_to"] for e in escalated] == [[BOB]]
    shown = desk.run(run_id)
    assert shown["status"] == "waiting"
    assert shown["waiting_for"]["task_id"] == task_id
    assert set(shown["waiting_for"]["can_act"]) == {ALICE, BOB}

    desk.act(decider, task_id, "approve", comment="ok")
    done = until(
        lambda: (d := desk.run(run_id))["status"] in ("succeeded", "failed") and d,
        "the run to finish",
        timeout=60,
    )
    assert done["status"] == "succeeded", done["failure"]
    assert step_of(done, "approve")["output"]["approvers"] == [decider]
    assert step_of(done, "done")["output"] == {"approved_by": [decider]}
    assert all(n.resolved_at is not None for n in desk.notes(BOB, task_id))
    assert all(n.resolved_at is not None for n in desk.notes(ALICE, task_id))


def test_a_fallback_approval_settles_a_stage_that_needed_everyone(desk: Desk) -> None:
    """With policy all, after the escalation the fallback approver decides in place of the
    approvers who did not answer: their one approval settles the stage."""
    for email in (ALICE, CAROL, BOB):
        desk.person(email)
    workflow_id = desk.publish(
        approval_flow(
            "Escalating unanimous approval",
            approvers={"users": [ALICE, CAROL]},
            policy="all",
            timeout="1s",
            on_timeout="escalate",
            escalate_to={"users": [BOB]},
        )
    )
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)
    desk.act(ALICE, task_id, "approve")  # one of the two, before the timeout
    until(lambda: desk.task(task_id)["escalated_at"], "the escalation")
    assert desk.run(run_id)["status"] == "waiting"

    desk.act(BOB, task_id, "approve")
    done = until(
        lambda: (d := desk.run(run_id))["status"] in ("succeeded", "failed") and d,
        "the run to finish",
        timeout=60,
    )
    assert done["status"] == "succeeded", done["failure"]
    assert step_of(done, "approve")["output"]["approvers"] == [ALICE, BOB]
    assert desk.task(task_id)["decided_by"] == BOB


def test_timeout_rejects_automatically(desk: Desk) -> None:
    """on_timeout: reject fails the run as rejected, saying no approver decided in time; the
    decision is recorded as auto_reject by system:timeout and the task leaves the inbox."""
    desk.person(ALICE)
    workflow_id = desk.publish(
        approval_flow("Auto-rejecting approval", timeout="1s", on_timeout="reject")
    )
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)

    failed = until(
        lambda: (d := desk.run(run_id))["status"] not in ("waiting", "running", "queued") and d,
        "the run to end",
    )
    assert failed["status"] == "failed"
    failure = failed["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "rejected",
        "rejected",
        "approve",
    )
    assert failure["message"] == "rejected automatically: no approver decided before the timeout"
    assert "longer timeout" in failure["next_action"]
    assert step_of(failed, "approve")["status"] == "failed"
    assert [s["step_id"] for s in failed["steps"]] == ["approve"]

    task = desk.task(task_id)
    assert (task["status"], task["decided_by"]) == ("rejected", "system:timeout")
    assert [(d["by"], d["decision"], d["via"]) for d in task["decisions"]] == [
        ("system:timeout", "auto_reject", "timeout")
    ]
    assert "no decision before the timeout" in task["decisions"][0]["comment"]
    assert desk.inbox(ALICE) == []
    assert all(n.resolved_at is not None for n in desk.notes(ALICE, task_id))


def test_timeout_approves_automatically(desk: Desk) -> None:
    """on_timeout: approve lets the run go on; the step's approvers name the automatic
    decision (system:timeout) and the decision is recorded as auto_approve."""
    desk.person(ALICE)
    workflow_id = desk.publish(
        approval_flow("Auto-approving approval", timeout="1s", on_timeout="approve")
    )
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)

    done = until(
        lambda: (d := desk.run(run_id))["status"] in ("succeeded", "failed") and d,
        "the run to finish",
    )
    assert done["status"] == "succeeded", done["failure"]
    output = step_of(done, "approve")["output"]
    assert output["approved"] is True
    assert output["approvers"] == ["system:timeout"]
    assert [(d["by"], d["decision"]) for d in output["decisions"]] == [
        ("system:timeout", "auto_approve")
    ]
    assert step_of(done, "done")["output"] == {"approved_by": ["system:timeout"]}
    task = desk.task(task_id)
    assert (task["status"], task["decided_by"]) == ("approved", "system:timeout")
    assert [d["decision"] for d in task["decisions"]] == ["auto_approve"]


def test_reminder_notifies_the_approvers_again_before_the_timeout(desk: Desk) -> None:
    """remind_before: before the timeout each approver's approval_pending notification is
    resolved and raised again (a second one), and the timeline records the reminder; an
    approval after it resumes the run."""
    desk.person(ALICE)
    desk.person(CAROL)
    workflow_id = desk.publish(
        approval_flow(
            "Reminded approval",
            approvers={"users": [ALICE, CAROL]},
            timeout="6s",
            remind_before="5s",  # the reminder comes after 1 s, the timeout after 6 s
            on_timeout="reject",
        )
    )
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)
    due_at = desk.task(task_id)["due_at"]

    for email in (ALICE, CAROL):
        first, second = until(
            lambda e=email: len(notes := desk.notes(e, task_id)) == 2 and notes,
            f"the reminder to {email}",
        )
        assert (first.kind, second.kind) == ("approval_pending", "approval_pending")
        assert first.resolved_at is not None
        assert first.resolved_at <= second.created_at
        assert second.resolved_at is None
    reminded = [
        e
        for e in desk.timeline(run_id)
        if e["kind"] == "step_waiting" and "reminded" in e.get("data", {})
    ]
    assert [sorted(e["data"]["reminded"]) for e in reminded] == [[ALICE, CAROL]]
    assert dt.datetime.fromisoformat(reminded[0]["at"]) < dt.datetime.fromisoformat(due_at)
    shown = desk.run(run_id)
    assert shown["status"] == "waiting"  # still before the timeout: not decided yet
    assert desk.task(task_id)["decisions"] == []

    desk.act(CAROL, task_id, "approve")
    done = until(
        lambda: (d := desk.run(run_id))["status"] in ("succeeded", "failed") and d,
        "the run to finish",
    )
    assert done["status"] == "succeeded", done["failure"]
    assert step_of(done, "approve")["output"]["approvers"] == [CAROL]
    assert len(desk.notes(ALICE, task_id)) == 2  # the reminder is sent once
    assert all(n.resolved_at is not None for n in desk.notes(ALICE, task_id))


def test_timers_that_passed_while_no_worker_ran_escalate_without_a_late_reminder(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A waiting approval survives having no worker: when one comes back after both the
    reminder and the timeout passed, the approval escalates, and the reminder (moot after the
    timeout) is not sent late on top of the escalation."""
    desk = Desk(api, admin)
    desk.person(ALICE)
    desk.person(BOB)
    workflow_id = desk.publish(
        approval_flow(
            "Escalation after an outage",
            # the reminder is due 3 s after the task: well after the first worker has stopped
            timeout="4s",
            remind_before="1s",
            on_timeout="escalate",
            escalate_to={"users": [BOB]},
        )
    )
    try:
        with running_worker(database):
            run_id = desk.start(workflow_id)
            task_id = waiting_task(desk, run_id)
        due_at = dt.datetime.fromisoformat(desk.task(task_id)["due_at"])
        until(lambda: utcnow() > due_at + dt.timedelta(milliseconds=200), "the timeout to pass")
        assert desk.run(run_id)["status"] == "waiting"
        assert desk.task(task_id)["escalated_at"] is None  # nothing acts without a worker

        with running_worker(database):
            until(
                lambda: desk.task(task_id)["escalated_at"] and desk.run(run_id)["wake_at"] is None,
                "the escalation, with no timer left",
            )
        assert [n.kind for n in desk.notes(ALICE, task_id)] == ["approval_pending"]
        assert [n.kind for n in desk.notes(BOB, task_id)] == ["approval_pending"]
        events = desk.timeline(run_id)
        assert not [e for e in events if "reminded" in e.get("data", {})]
        assert [
            e["data"]["escalated_to"] for e in events if "escalated_to" in e.get("data", {})
        ] == [[BOB]]
    finally:
        for client in desk.people.values():
            client.close()


# --- human tasks ------------------------------------------------------------------------------


def test_task_timeout_skips_the_step_and_the_run_goes_on(desk: Desk) -> None:
    """A human task with on_timeout: skip is skipped by system:timeout; the next step runs."""
    desk.person(ALICE)
    workflow_id = desk.publish(task_flow("Skippable task", timeout="1s", on_timeout="skip"))
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)
    assert [i["id"] for i in desk.inbox(ALICE)] == [task_id]

    done = until(
        lambda: (d := desk.run(run_id))["status"] in ("succeeded", "failed") and d,
        "the run to finish",
    )
    assert done["status"] == "succeeded", done["failure"]
    badge = step_of(done, "badge")
    assert (badge["status"], badge["output"]) == (
        "skipped",
        {
            "skipped": True,
            "skipped_by": "system:timeout",
            "reason": "no one acted before the timeout",
        },
    )
    assert step_of(done, "after")["output"] == {"went_on": True}
    task = desk.task(task_id)
    assert (task["status"], task["decided_by"]) == ("skipped", "system:timeout")
    assert desk.inbox(ALICE) == []
    assert all(n.resolved_at is not None for n in desk.notes(ALICE, task_id))


def test_task_timeout_fails_the_run(desk: Desk) -> None:
    """A human task with on_timeout: fail fails the run at that step, saying no one acted."""
    desk.person(ALICE)
    workflow_id = desk.publish(task_flow("Failing task", timeout="1s", on_timeout="fail"))
    run_id = desk.start(workflow_id)
    task_id = waiting_task(desk, run_id)

    failed = until(
        lambda: (d := desk.run(run_id))["status"] not in ("waiting", "running", "queued") and d,
        "the run to end",
    )
    assert failed["status"] == "failed"
    failure = failed["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "permanent",
        "task_timed_out",
        "badge",
    )
    assert failure["message"] == "no one acted on the task before its timeout"
    assert "longer timeout" in failure["next_action"]
    assert [s["step_id"] for s in failed["steps"]] == ["badge"]
    task = desk.task(task_id)
    assert (task["status"], task["decided_by"]) == ("failed", "system:timeout")
    assert desk.inbox(ALICE) == []


# --- the publish gate: a timeout policy is always explicit -------------------------------------


@pytest.mark.parametrize(
    ("step", "field", "phrase"),
    [
        pytest.param(
            {"type": "approval", "config": {"approvers": {"roles": ["approver"]}, "timeout": "2d"}},
            "steps[0].config.on_timeout",
            "a timeout needs on_timeout: escalate, reject or approve",
            id="approval-timeout-without-policy",
        ),
        pytest.param(
            {
                "type": "approval",
                "config": {"approvers": {"roles": ["approver"]}, "on_timeout": "approve"},
            },
            "steps[0].config.on_timeout",
            "on_timeout needs a timeout",
            id="approval-policy-without-timeout",
        ),
        pytest.param(
            {
                "type": "approval",
                "config": {
                    "approvers": {"roles": ["approver"]},
                    "timeout": "2d",
                    "on_timeout": "escalate",
                },
            },
            "steps[0].config.escalate_to",
            "on_timeout escalate needs escalate_to",
            id="escalate-without-fallback",
        ),
        pytest.param(
            {
                "type": "approval",
                "config": {
                    "approvers": {"roles": ["approver"]},
                    "timeout": "1h",
                    "on_timeout": "reject",
                    "remind_before": "2h",
                },
            },
            "steps[0].config.remind_before",
            "remind_before must be shorter than the timeout",
            id="reminder-after-the-timeout",
        ),
        pytest.param(
            {
                "type": "task",
                "config": {"title": "Do it", "assignees": {"roles": ["operator"]}, "timeout": "1d"},
            },
            "steps[0].config.on_timeout",
            "a timeout needs on_timeout: skip or fail",
            id="task-timeout-without-policy",
        ),
    ],
)
def test_publish_gate_refuses_a_timeout_without_an_explicit_policy(
    admin: httpx.Client, step: dict[str, Any], field: str, phrase: str
) -> None:
    """A timeout never has a default outcome: the gate's 422 names the missing field."""
    document = {
        "name": "Implicit timeout",
        "trigger": {"type": "manual"},
        "steps": [{"id": "ask", **step}],
    }
    created = admin.post("/api/v1/workflows", json=document)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["workflow"]["id"]

    refused = admin.post(f"/api/v1/workflows/{workflow_id}/versions/1/publish")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "publish_gate_failed"
    assert [(d["code"], d["step"], d["field"]) for d in error["details"]] == [
        ("step_config_invalid", "ask", field)
    ]
    assert phrase in error["details"][0]["message"]
    assert field.rsplit(".", 1)[1] in error["message"]
