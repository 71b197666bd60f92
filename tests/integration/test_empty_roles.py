"""A role with no active members: publishing a workflow that routes approvals to it warns (it
is not refused), and a run waiting on it says nobody can act and who can fix it; taking that
advice (an admin gives the role to someone) lets the run finish."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker
from tests.support.people import (
    API,
    act,
    approval,
    chain,
    create,
    email,
    ok,
    people,
    set_step,
    start,
    wait_status,
    waiting_task,
)


def role_flow(name: str, *roles: str) -> dict[str, Any]:
    return chain(name, approval(approvers={"roles": list(roles)}), set_step("provision"))


def give_role(admin: httpx.Client, name: str, role: str) -> None:
    """What the advice says an admin does: PATCH the user with the role added."""
    [user] = ok(admin.get(f"{API}/users", params={"email": email(name)}))["items"]
    ok(admin.patch(f"{API}/users/{user['id']}", json={"roles": [*user["roles"], role]}))


def test_publishing_an_approval_routed_to_an_empty_role_warns(
    api: Api, admin: httpx.Client
) -> None:
    """The publish answer warns, naming the step, the field and the fix; a role without
    workflow:task is named as such; once the role has a member, validating warns no more."""
    created = create(admin, role_flow("Empty role", "approver", "viewer"))
    wf_id = created["workflow"]["id"]
    published = ok(admin.post(f"{API}/workflows/{wf_id}/versions/1/publish"))
    assert published["version"]["state"] == "published"
    warned = {w["message"].split(":")[0]: w for w in published["warnings"]}
    empty = warned["no active user has the role approver"]
    assert (empty["code"], empty["step"], empty["field"]) == (
        "role_has_no_members",
        "approve",
        "steps[0].config.approvers.roles",
    )
    assert "`grantflow users set --email EMAIL --role approver`" in empty["message"]
    assert "PATCH /api/v1/users/{id}" in empty["message"]
    lacking = warned["the role viewer lacks the permission workflow"]
    assert lacking["code"] == "role_has_no_members"

    with people(api, dave=Role.VIEWER):
        give_role(admin, "dave", "approver")
    draft = ok(
        admin.post(f"{API}/workflows/{wf_id}/versions", json=role_flow("Empty role", "approver")),
        201,
    )
    checked = ok(admin.post(f"{API}/workflows/{wf_id}/versions/{draft['number']}/validate"))
    assert checked["ok"] is True
    assert [w for w in checked["warnings"] if w["code"] == "role_has_no_members"] == []


def test_a_run_waiting_on_an_empty_role_says_who_can_fix_it(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """waiting_for: nobody can act, the role is empty, an admin can give the role to an active
    user (or the task can be reassigned); the admin doing so lets that user approve and the run
    succeeds."""
    with (
        people(api, ops=Role.OPERATOR, dave=Role.VIEWER) as users,
        running_worker(database),
    ):
        created = create(admin, role_flow("Approver role", "approver"))
        wf_id = created["workflow"]["id"]
        ok(admin.post(f"{API}/workflows/{wf_id}/versions/1/publish"))
        run_id = start(users["ops"], wf_id)
        waiting = waiting_task(users["ops"], run_id, "approval")
        assert waiting["can_act"] == []
        task_id = waiting["task_id"]
        problem = waiting["routing_problem"]
        assert problem.startswith(
            "no one can act on this approval: no active user has the role approver. "
            "Reassign it to an active user or role (anyone with task:reassign: "
            f"POST /api/v1/tasks/{task_id}/reassign"
        )
        assert problem.endswith(
            ", or an admin (user:admin) gives the role approver to an active user "
            "(PATCH /api/v1/users/{id} with its roles, or `grantflow users set --email EMAIL "
            "--role approver`)."
        )
        assert waiting["next_action"] == problem
        assert waiting["action"]["operation"] == "task.reassign"
        assert waiting["action"]["path"] == f"/api/v1/tasks/{task_id}/reassign"

        give_role(admin, "dave", "approver")
        shown = ok(users["ops"].get(f"{API}/runs/{run_id}"))["waiting_for"]
        assert shown["routing_problem"] is None
        assert shown["can_act"] == [email("dave")]
        ok(act(users["dave"], task_id, "approve", comment="now an approver"))
        assert wait_status(users["ops"], run_id, "succeeded")["status"] == "succeeded"
