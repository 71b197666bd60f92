"""Approvals over HTTP with a real worker, on SQLite and PostgreSQL: policies (any, all, N of
M), stages, justification, separation of duties, rejection, unroutable approvers and reassign,
who may act, the inbox's filters, and a waiting run that holds no worker and wakes at once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from grantflow.auth.permissions import Role
from grantflow.queue.models import QueueItem
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker
from tests.support.people import (
    API,
    act,
    approval,
    audit,
    chain,
    create,
    email,
    error,
    get_task,
    inbox,
    ok,
    people,
    poll,
    publish,
    run,
    set_step,
    start,
    task,
    wait_status,
    waiting_task,
)

APPROVER = Role.APPROVER


def approval_flow(name: str, **config: Any) -> dict[str, Any]:
    """Approve, then a step that only runs once approved (it echoes who approved)."""
    return chain(
        name,
        approval(**config),
        set_step("provision", approved_by="{{ steps.approve.output.approvers | join(',') }}"),
    )


def step(shown: dict[str, Any], step_id: str) -> dict[str, Any] | None:
    return next((s for s in shown["steps"] if s["step_id"] == step_id), None)


def deactivate(admin: httpx.Client, name: str) -> None:
    [user] = ok(admin.get(f"{API}/users", params={"email": email(name)}))["items"]
    ok(admin.patch(f"{API}/users/{user['id']}", json={"active": False}))


# --- policies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "needed"),
    [({"policy": "any"}, 1), ({"policy": "all"}, 3), ({"policy": "n_of_m", "required": 2}, 2)],
    ids=["any", "all", "2-of-3"],
)
def test_the_run_resumes_only_once_the_policy_is_met(
    api: Api, admin: httpx.Client, database: Database, policy: dict[str, Any], needed: int
) -> None:
    """Each approval before the threshold leaves the run waiting (and the approver cannot
    approve twice); the approval that meets it resumes the run, which names its approvers."""
    names = ["alice", "bob", "carol"]
    with (
        people(api, ops=Role.OPERATOR, alice=APPROVER, bob=APPROVER, carol=APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(
            admin,
            approval_flow("Policy", approvers={"users": [email(n) for n in names]}, **policy),
        )
        run_id = start(users["ops"], wf)
        waiting = waiting_task(users["ops"], run_id, "approval")
        assert waiting["assignees"] == [email(n) for n in names]
        assert sorted(waiting["can_act"]) == [email(n) for n in names]
        task_id = waiting["task_id"]
        for name in names[: needed - 1]:
            ok(act(users[name], task_id, "approve", comment="fine"))
            shown = get_task(users["ops"], task_id)
            assert shown["status"] == "pending"
            assert run(users["ops"], run_id)["status"] == "waiting"
            assert task_id not in [t["id"] for t in inbox(users[name])]
            again = error(act(users[name], task_id, "approve"), 409)
            assert again["code"] == "already_decided"
        last = names[needed - 1]
        decided = ok(act(users[last], task_id, "approve", comment="ok"))
        assert decided["status"] == "approved"
        done = wait_status(users["ops"], run_id, "succeeded", "failed")
        assert done["status"] == "succeeded", done["failure"]
        approvers = ",".join(email(n) for n in names[:needed])
        assert step(done, "provision")["output"] == {"approved_by": approvers}  # type: ignore[index]
        for name in names:
            assert inbox(users[name]) == []
        if needed < len(names):
            late = error(act(users[names[needed]], task_id, "approve"), 409)
            assert late["code"] == "task_closed"
            assert "already approved" in late["message"]


def test_stage_two_is_asked_only_after_stage_one_approved(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Stage 2's approver sees nothing (and may not act) until stage 1 approves; then the
    run waits on stage 2 of 2, and resumes when it approves."""
    with (
        people(api, ops=Role.OPERATOR, manager=APPROVER, security=APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(
            admin,
            approval_flow(
                "Two stages",
                stages=[
                    {"users": [email("manager")]},
                    {"roles": ["approver"], "policy": "any"},
                ],
            ),
        )
        run_id = start(users["ops"], wf)
        waiting = waiting_task(users["ops"], run_id)
        task_id = waiting["task_id"]
        assert (waiting["stage"], waiting["stages"]) == (1, 2)
        assert waiting["assignees"] == [email("manager")]
        assert "(stage 1 of 2)" in waiting["summary"]
        assert inbox(users["security"]) == []
        early = error(act(users["security"], task_id, "approve"), 403)
        assert early["code"] == "not_assignee"

        ok(act(users["manager"], task_id, "approve"))
        stage_two = run(users["ops"], run_id)
        assert stage_two["status"] == "waiting"
        assert (stage_two["waiting_for"]["stage"], stage_two["waiting_for"]["stages"]) == (2, 2)
        assert stage_two["waiting_for"]["assignees"] == ["role approver"]
        # the manager has the approver role too, but decided stage 1 already
        assert [t["id"] for t in inbox(users["security"])] == [task_id]
        ok(act(users["security"], task_id, "approve", comment="checked"))
        done = wait_status(users["ops"], run_id, "succeeded", "failed")
        assert done["status"] == "succeeded"
        decisions = get_task(users["ops"], task_id)["decisions"]
        assert [(d["by"], d["stage"]) for d in decisions] == [
            (email("manager"), 1),
            (email("security"), 2),
        ]


def test_an_approval_requiring_justification_refuses_one_without_a_comment(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with people(api, ops=Role.OPERATOR, alice=APPROVER) as users, running_worker(database):
        wf = publish(
            admin,
            approval_flow(
                "Justified", approvers={"users": [email("alice")]}, require_justification=True
            ),
        )
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        assert get_task(users["alice"], task_id)["require_justification"] is True
        for comment in (None, "   "):
            refused = error(act(users["alice"], task_id, "approve", comment=comment), 422)
            assert refused["details"] == [
                {"field": "comment", "message": "required: say why you approve"}
            ]
            assert "justification" in refused["message"]
        assert run(users["ops"], run_id)["status"] == "waiting"
        ok(act(users["alice"], task_id, "approve", comment="needed for the audit project"))
        assert wait_status(users["ops"], run_id, "succeeded")["status"] == "succeeded"
        [decision] = get_task(users["ops"], task_id)["decisions"]
        assert decision["comment"] == "needed for the audit project"


# --- separation of duties ------------------------------------------------------------------


def test_the_user_who_started_the_run_cannot_approve_it(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A requester who is also a named approver is refused (403 self_approval), is not asked,
    and does not see the request in their inbox; another approver decides."""
    with (
        people(api, ops=(Role.OPERATOR, Role.APPROVER), alice=APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(
            admin, approval_flow("Self", approvers={"users": [email("ops"), email("alice")]})
        )
        run_id = start(users["ops"], wf)
        waiting = waiting_task(users["ops"], run_id)
        assert waiting["can_act"] == [email("alice")]
        assert inbox(users["ops"]) == []
        refused = error(act(users["ops"], waiting["task_id"], "approve", comment="me"), 403)
        assert refused["code"] == "self_approval"
        assert f"{email('ops')} requested this" in refused["message"]
        assert get_task(users["ops"], waiting["task_id"])["you_can_act"] is False
        ok(act(users["alice"], waiting["task_id"], "approve"))
        assert wait_status(users["ops"], run_id, "succeeded")["status"] == "succeeded"


def test_no_one_approves_a_grant_of_their_own_or_one_they_requested(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """On a grant's run, the person the access is for and the person who granted it are both
    refused with self_approval; a third approver's decision completes the run."""
    app_id = ok(admin.post(f"{API}/applications", json={"name": "Payroll"}), 201)["id"]
    document = approval_flow(
        "Payroll access",
        approvers={"users": [email("ada"), email("grantor"), email("bob")]},
    )
    with (
        people(api, ada=APPROVER, grantor=(Role.OPERATOR, Role.APPROVER), bob=APPROVER) as users,
        running_worker(database),
    ):
        publish(admin, {**document, "application": app_id, "trigger": {"type": "access_granted"}})
        ok(
            admin.post(f"{API}/identities", json={"email": email("ada"), "display_name": "Ada"}),
            201,
        )
        grant = ok(
            users["grantor"].post(
                f"{API}/grants", json={"identity": email("ada"), "application": "Payroll"}
            ),
            201,
        )
        run_id = grant["automation"]["runs"][0]["id"]
        waiting = waiting_task(users["bob"], run_id)
        assert waiting["can_act"] == [email("bob")]
        task_id = waiting["task_id"]
        own = error(act(users["ada"], task_id, "approve", comment="I need it"), 403)
        assert own["code"] == "self_approval"
        assert f"about {email('ada')}'s own access" in own["message"]
        requested = error(act(users["grantor"], task_id, "approve", comment="ok"), 403)
        assert requested["code"] == "self_approval"
        assert f"{email('grantor')} requested this" in requested["message"]
        assert inbox(users["ada"]) == []
        assert inbox(users["grantor"]) == []
        ok(act(users["bob"], task_id, "approve"))
        assert wait_status(users["bob"], run_id, "succeeded")["status"] == "succeeded"
        shown = get_task(users["bob"], task_id)
        assert (shown["requester"], shown["subject_email"]) == (email("grantor"), email("ada"))


# --- rejection -----------------------------------------------------------------------------


def test_a_rejection_fails_the_run_with_the_approvers_comment(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    wf = publish(admin, approval_flow("Rejected", approvers={"roles": ["approver"]}))
    with people(api, ops=Role.OPERATOR, alice=APPROVER) as users, running_worker(database):
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        ok(act(users["alice"], task_id, "reject", comment="contractors do not get payroll"))
        failed = wait_status(users["ops"], run_id, "failed", "succeeded")
    assert failed["status"] == "failed"
    failure = failed["failure"]
    assert failure["class"] == "rejected"
    assert failure["step_id"] == "approve"
    assert failure["message"] == (f"rejected by {email('alice')}: contractors do not get payroll")
    assert "re-request" in failure["next_action"]
    assert step(failed, "provision") is None  # nothing after the approval ran
    closed = get_task(admin, task_id)
    assert (closed["status"], closed["assignees"]) == ("rejected", ["role approver"])
    assert (closed["decided_by"], closed["you_can_act"]) == (email("alice"), False)


# --- routing problems and reassign ---------------------------------------------------------


def test_a_deactivated_approver_named_in_the_workflow_fails_the_publish_gate(
    api: Api, admin: httpx.Client
) -> None:
    with people(api, carol=APPROVER):
        deactivate(admin, "carol")
        created = create(
            admin, approval_flow("Static", approvers={"users": [email("alice"), email("carol")]})
        )
    wf_id, number = created["workflow"]["id"], created["version"]["number"]
    refused = error(admin.post(f"{API}/workflows/{wf_id}/versions/{number}/publish"), 422)
    assert refused["code"] == "publish_gate_failed"
    problems = {(d["code"], d["step"], d["field"]) for d in refused["details"]}
    assert problems == {
        ("user_not_routable", "approve", "steps[0].config.approvers.users"),
    }
    messages = " ".join(d["message"] for d in refused["details"])
    assert "'carol@example.com' is deactivated" in messages
    assert "'alice@example.com' does not exist" in messages


def test_a_templated_approver_who_is_deactivated_is_reported_and_the_task_reassigned(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """The waiting run names the deactivated approver and says to reassign; reassigning to an
    active user lets them approve, the run succeeds, and the audit log has task.reassigned."""
    document = approval_flow("Manager approval", approvers={"users": ["{{ input.approver }}"]})
    document["trigger"]["input_schema"] = {
        "type": "object",
        "properties": {"approver": {"type": "string"}},
        "required": ["approver"],
    }
    wf = publish(admin, document)
    with (
        people(api, ops=Role.OPERATOR, carol=APPROVER, dave=APPROVER) as users,
        running_worker(database),
    ):
        deactivate(admin, "carol")
        run_id = start(users["ops"], wf, {"approver": email("carol")})
        waiting = waiting_task(users["ops"], run_id)
        problem = waiting["routing_problem"]
        assert f"user {email('carol')} is deactivated" in problem
        assert "Reassign it to an active user or role" in problem
        assert waiting["can_act"] == []
        assert waiting["next_action"] == problem
        task_id = waiting["task_id"]

        # an approver cannot reassign; an operator (task:reassign) can
        denied = error(
            users["dave"].post(f"{API}/tasks/{task_id}/reassign", json={"users": [email("dave")]}),
            403,
        )
        assert denied["missing_permission"] == "task:reassign"
        reassigned = ok(
            users["ops"].post(
                f"{API}/tasks/{task_id}/reassign",
                json={"users": [email("dave")], "comment": "carol left"},
            )
        )
        assert reassigned["assignees"] == [email("dave")]
        assert reassigned["routing_problem"] is None
        assert run(users["ops"], run_id)["waiting_for"]["routing_problem"] is None
        assert [t["id"] for t in inbox(users["dave"])] == [task_id]

        ok(act(users["dave"], task_id, "approve", comment="as carol's replacement"))
        assert wait_status(users["ops"], run_id, "succeeded")["status"] == "succeeded"
    [entry] = audit(admin, "task.reassigned", task_id)
    assert entry["actor"] == email("ops")
    assert entry["summary"]["to_users"] == [email("dave")]
    assert entry["summary"]["comment"] == "carol left"


def test_reassigning_to_a_deactivated_user_is_refused_naming_them(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with (
        people(api, ops=Role.OPERATOR, alice=APPROVER, carol=APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(admin, approval_flow("Reassign", approvers={"users": [email("alice")]}))
        deactivate(admin, "carol")
        task_id = waiting_task(users["ops"], start(users["ops"], wf))["task_id"]
        refused = error(
            users["ops"].post(f"{API}/tasks/{task_id}/reassign", json={"users": [email("carol")]}),
            422,
        )
        assert f"user {email('carol')} is deactivated" in refused["message"]
        assert get_task(users["ops"], task_id)["assignees"] == [email("alice")]


# --- who may act ---------------------------------------------------------------------------


def test_only_an_assignee_with_workflow_task_may_decide(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with (
        people(api, ops=Role.OPERATOR, alice=APPROVER, bob=APPROVER, vic=Role.VIEWER) as users,
        running_worker(database),
    ):
        wf = publish(admin, approval_flow("Who", approvers={"users": [email("alice")]}))
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        stranger = error(act(users["bob"], task_id, "approve", comment="sure"), 403)
        assert stranger["code"] == "not_assignee"
        assert stranger["message"] == (
            f"{email('bob')} is not an assignee of task {task_id} (assigned to: {email('alice')})"
        )
        assert "reassign" in stranger["next_action"]
        viewer = error(act(users["vic"], task_id, "approve"), 403)
        assert viewer["missing_permission"] == "workflow:task"
        assert "workflow:task" in viewer["message"]
        assert inbox(users["vic"]) == []  # a viewer is never assigned anything
        wrong = error(act(users["alice"], task_id, "submit", data={}), 422)
        assert wrong["message"] == "action: an approval takes approve, reject, not submit"
        assert run(users["ops"], run_id)["status"] == "waiting"
        assert error(act(users["alice"], "no-such-task", "approve"), 404)["code"] == "not_found"


# --- the inbox -----------------------------------------------------------------------------


def test_the_inbox_shows_role_assigned_work_and_filters_by_kind_workflow_and_overdue(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Every member of the role sees role-assigned tasks; kind, workflow_id and overdue
    filter them. (The overdue one is made overdue with no worker running to act on it.)"""
    plain = publish(admin, approval_flow("Role approval", approvers={"roles": ["approver"]}))
    form = publish(
        admin,
        chain(
            "Role task", task("enter", title="Enter the ticket", assignees={"roles": ["approver"]})
        ),
    )
    timed = publish(
        admin,
        approval_flow(
            "Timed approval",
            approvers={"roles": ["approver"]},
            timeout="2s",
            on_timeout="reject",
        ),
    )
    with people(api, ops=Role.OPERATOR, alice=APPROVER, bob=APPROVER) as users:
        with running_worker(database):
            tasks = {
                wf: waiting_task(users["ops"], start(users["ops"], wf))["task_id"]
                for wf in (plain, form, timed)
            }
        alice, bob = users["alice"], users["bob"]
        assert {t["id"] for t in inbox(alice)} == set(tasks.values())
        assert {t["id"] for t in inbox(bob)} == set(tasks.values())
        assert inbox(users["ops"]) == []  # an operator's inbox holds escalations only

        assert [t["id"] for t in inbox(alice, kind="task")] == [tasks[form]]
        assert {t["id"] for t in inbox(alice, kind="approval")} == {tasks[plain], tasks[timed]}
        [only] = inbox(alice, workflow_id=plain)
        assert (only["id"], only["workflow"]["name"]) == (tasks[plain], "Role approval")
        assert only["you_can_act"] is True

        overdue = poll(
            lambda: inbox(alice, overdue="true"),
            lambda items: bool(items),
            timeout=60,
            what="the timed approval to pass its due time",
        )
        assert [t["id"] for t in overdue] == [tasks[timed]]
        assert overdue[0]["overdue"] is True
        assert {t["id"] for t in inbox(alice, overdue="false")} == {tasks[plain], tasks[form]}
        assert error(alice.get(f"{API}/inbox", params={"kind": "nonsense"}), 422)


# --- waiting holds nothing; a decision wakes the run ----------------------------------------


def test_a_waiting_run_holds_no_lease_and_a_decision_wakes_it_at_once(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """The worker polls only once an hour, so the run resuming at all while the test waits can
    only be the decision's own wake-up."""
    with (
        people(api, ops=Role.OPERATOR, alice=APPROVER) as users,
        running_worker(database, poll_seconds=3600) as worker,
    ):
        wf = publish(admin, approval_flow("Wake", approvers={"users": [email("alice")]}))
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        deadline = dt.datetime.fromisoformat(run(users["ops"], run_id)["deadline_at"])
        with database.transaction() as session:
            item = session.get(QueueItem, run_id)
            assert item is not None
            lease = (item.lease_owner, item.lease_expires_at)
            available_at = item.available_at
        assert lease == (None, None)
        # parked until its deadline: nothing but a decision (or a timer) brings it back
        assert abs(available_at - deadline) < dt.timedelta(seconds=1)
        assert worker.poll_seconds == 3600

        ok(act(users["alice"], task_id, "approve"))
        done = poll(
            lambda: run(users["ops"], run_id),
            lambda r: r["status"] != "waiting",
            timeout=60,
            what="the run to leave waiting",
        )
        assert wait_status(users["ops"], run_id, "succeeded")["status"] == "succeeded"
        assert done["status"] in ("running", "succeeded")


def test_a_decision_taken_while_the_run_is_paused_is_read_once_it_is_resumed(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with (
        people(api, ops=Role.OPERATOR, alice=APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(admin, approval_flow("Paused", approvers={"users": [email("alice")]}))
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        assert ok(users["ops"].post(f"{API}/runs/{run_id}/pause"))["status"] == "paused"
        ok(act(users["alice"], task_id, "approve"))
        assert run(users["ops"], run_id)["status"] == "paused"
        ok(users["ops"].post(f"{API}/runs/{run_id}/resume"))
        done = poll(
            lambda: run(users["ops"], run_id),
            lambda r: r["status"] in ("succeeded", "failed"),
            timeout=60,
            what="the resumed run to read the approval",
        )
        assert done["status"] == "succeeded"
