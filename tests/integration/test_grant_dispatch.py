"""Dispatching a grant: its access_granted workflows start again, and every refusal's advice,
taken as offered, makes the next dispatch start a run."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, make_application, ok
from tests.support.engine import running_worker, wait_status


def grant_workflow(app_id: str, name: str = "Wiki grant", *, steps: bool = True) -> dict[str, Any]:
    """An access_granted workflow of the application; one set step (or none)."""
    step = {"id": "note", "type": "set", "config": {"values": {"who": "{{ identity.email }}"}}}
    return {
        "name": name,
        "application": app_id,
        "trigger": {"type": "access_granted"},
        "steps": [step] if steps else [],
    }


def create_workflow(admin: httpx.Client, document: dict[str, Any]) -> str:
    created = ok(admin.post(f"{API}/workflows", json=document), 201)
    return str(created["workflow"]["id"])


def publish(admin: httpx.Client, workflow_id: str, number: int = 1) -> None:
    ok(admin.post(f"{API}/workflows/{workflow_id}/versions/{number}/publish"))


def grant(admin: httpx.Client, app: str = "Wiki", email: str = "ada@example.com") -> dict[str, Any]:
    if admin.get(f"{API}/identities", params={"q": email}).json().get("items") in (None, []):
        ok(admin.post(f"{API}/identities", json={"email": email}), 201)
    created: dict[str, Any] = ok(
        admin.post(f"{API}/grants", json={"identity": email, "application": app}), 201
    )
    return created


def refusal(response: httpx.Response, status: int = 409) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def test_a_grant_made_while_its_workflow_was_disabled_runs_once_enabled_and_dispatched(
    admin: httpx.Client, database: Database
) -> None:
    """The no-run reason advises "enable it, then dispatch the grant"; doing so starts a run
    that succeeds, the answer names it and the chip follows it."""
    app_id = make_application(admin, "Wiki")
    wf = create_workflow(admin, grant_workflow(app_id))
    publish(admin, wf)
    ok(admin.post(f"{API}/workflows/{wf}/disable"))
    granted = grant(admin)
    reason = granted["automation"]["no_run_reason"]
    assert reason == (
        "no workflow started a run: workflow 'Wiki grant': it is disabled "
        "(enable it, then dispatch the grant)"
    )
    [event] = granted["events"]
    assert event["dispatch"][0]["next_action"] == "enable it, then dispatch the grant"

    ok(admin.post(f"{API}/workflows/{wf}/enable"))
    dispatched = ok(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    [started] = dispatched["started"]
    assert started["workflow_id"] == wf
    assert started["workflow_name"] == "Wiki grant"
    assert dispatched["skipped"] == []
    assert dispatched["automation"]["state"] == "pending"
    assert [r["id"] for r in dispatched["automation"]["runs"]] == [started["run_id"]]
    assert [e["kind"] for e in dispatched["events"]] == ["access_granted", "access_granted"]
    assert dispatched["events"][-1]["details"] == {"dispatched": True}
    with running_worker(database):
        wait_status(database, started["run_id"], "succeeded")
    shown = ok(admin.get(f"{API}/grants/{granted['id']}"))
    assert shown["automation"]["state"] == "synced"
    [entry] = ok(
        admin.get(f"{API}/audit", params={"action": "grant.dispatched", "target_id": granted["id"]})
    )["items"]
    assert entry["actor"] == "admin@example.com"
    assert entry["summary"]["runs"] == [started["run_id"]]


def test_a_workflow_with_no_steps_advises_adding_one_not_publishing_it(
    admin: httpx.Client,
) -> None:
    """The reason for an empty workflow does not advise publishing (refused); adding a step,
    publishing and dispatching, as advised, starts the run."""
    app_id = make_application(admin, "Wiki")
    wf = create_workflow(admin, grant_workflow(app_id, steps=False))
    assert refusal(admin.post(f"{API}/workflows/{wf}/versions/1/publish"), 422)["code"] == (
        "publish_gate_failed"
    )
    granted = grant(admin)
    reason = granted["automation"]["no_run_reason"]
    assert "publish one" not in reason
    action = "add a step to its draft and publish it, then dispatch the grant"
    assert reason == (
        "no workflow started a run: workflow 'Wiki grant': it has no steps, so there is no "
        f"version to publish ({action})"
    )
    refused = refusal(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert refused["code"] == "no_active_version"
    assert refused["next_action"] == f"workflow 'Wiki grant': {action}"

    ok(admin.put(f"{API}/workflows/{wf}/versions/1", json=grant_workflow(app_id)))
    publish(admin, wf)
    dispatched = ok(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert [s["workflow_name"] for s in dispatched["started"]] == ["Wiki grant"]


def test_a_grant_made_while_its_workflow_was_unpublished_runs_once_published(
    admin: httpx.Client,
) -> None:
    """A draft with steps: "publish its draft, then dispatch the grant" starts the run."""
    app_id = make_application(admin, "Wiki")
    wf = create_workflow(admin, grant_workflow(app_id))
    granted = grant(admin)
    [entry] = granted["events"][0]["dispatch"]
    assert entry["skipped"] == "it has no active version"
    assert entry["next_action"] == "publish its draft, then dispatch the grant"
    publish(admin, wf)
    dispatched = ok(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert [s["workflow_id"] for s in dispatched["started"]] == [wf]


def test_dispatch_refuses_while_the_workflow_is_disabled_and_enabling_it_works(
    admin: httpx.Client,
) -> None:
    """The refusal names the workflow and "enable it, then dispatch the grant"; it does."""
    app_id = make_application(admin, "Wiki")
    granted = grant(admin)
    wf = create_workflow(admin, grant_workflow(app_id))
    publish(admin, wf)
    ok(admin.post(f"{API}/workflows/{wf}/disable"))
    refused = refusal(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert refused["code"] == "workflow_disabled"
    assert refused["message"] == (
        f"no workflow of 'Wiki' would start a run for grant {granted['id']}: "
        "workflow 'Wiki grant': it is disabled"
    )
    assert refused["next_action"] == "workflow 'Wiki grant': enable it, then dispatch the grant"
    action = refused["action"]
    assert (action["operation"], action["method"]) == ("workflow.enable", "POST")
    assert action["cli"] == f"grantflow workflows enable {wf}"
    ok(admin.post(action["path"]))
    assert len(ok(admin.post(f"{API}/grants/{granted['id']}/dispatch"))["started"]) == 1


def test_dispatch_with_no_workflow_advises_creating_one(admin: httpx.Client) -> None:
    """No access_granted workflow for the application: a 409 `no_workflow`; creating and
    publishing one, as advised, makes the dispatch start it."""
    app_id = make_application(admin, "Wiki")
    granted = grant(admin)
    refused = refusal(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert refused["code"] == "no_workflow"
    assert refused["next_action"] == (
        "create and publish an access_granted workflow for 'Wiki', then dispatch the grant"
    )
    publish(admin, create_workflow(admin, grant_workflow(app_id)))
    assert len(ok(admin.post(f"{API}/grants/{granted['id']}/dispatch"))["started"]) == 1
    assert len(ok(admin.get(f"{API}/grants/{granted['id']}"))["events"]) == 2


def test_dispatch_refuses_while_a_run_is_in_flight_and_names_it(admin: httpx.Client) -> None:
    """A queued run of the grant: 409 `run_in_flight` naming it; cancelling it, as advised,
    lets the dispatch start a new run; nothing was recorded by the refusal."""
    app_id = make_application(admin, "Wiki")
    publish(admin, create_workflow(admin, grant_workflow(app_id)))
    granted = grant(admin)
    [run] = granted["automation"]["runs"]
    refused = refusal(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert refused["code"] == "run_in_flight"
    assert refused["message"] == (
        f"grant {granted['id']} already has a run in flight: run {run['id']} (queued)"
    )
    assert refused["run_ids"] == [run["id"]]
    assert refused["next_action"] == (
        f"wait for it to end, or cancel it (POST /api/v1/runs/{run['id']}/cancel), "
        "then dispatch the grant"
    )
    assert len(ok(admin.get(f"{API}/grants/{granted['id']}"))["events"]) == 1
    assert refused["action"]["operation"] == "run.cancel"
    assert refused["action"]["cli"] == f"grantflow runs cancel {run['id']}"
    ok(admin.post(refused["action"]["path"]))
    dispatched = ok(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    [started] = dispatched["started"]
    assert started["run_id"] != run["id"]


def test_a_revoked_grant_is_not_dispatched_and_granting_again_works(
    admin: httpx.Client,
) -> None:
    """A revoked grant: 409 `grant_revoked`; granting the access again, as advised, starts the
    workflow for the new grant."""
    app_id = make_application(admin, "Wiki")
    granted = grant(admin)
    ok(admin.post(f"{API}/grants/{granted['id']}/revoke"))
    publish(admin, create_workflow(admin, grant_workflow(app_id)))
    refused = refusal(admin.post(f"{API}/grants/{granted['id']}/dispatch"))
    assert refused["code"] == "grant_revoked"
    assert refused["next_action"] == (
        "grant the access again (POST /api/v1/grants, or `grantflow grants grant --identity "
        "ada@example.com --application 'Wiki'`): the new grant starts its workflows"
    )
    assert refused["action"]["operation"] == "grant.create"
    assert refused["action"]["cli"] == (
        "grantflow grants grant --identity ada@example.com --application 'Wiki'"
    )
    again = grant(admin)
    assert again["automation"]["state"] == "pending"


def test_dispatch_needs_grant_write(api: Api, admin: httpx.Client) -> None:
    """An approver (no grant:write) is refused with 403 and no run starts; a missing grant is
    a 404."""
    app_id = make_application(admin, "Wiki")
    wf = create_workflow(admin, grant_workflow(app_id))
    granted = grant(admin)
    publish(admin, wf)
    with api.as_role(Role.APPROVER) as approver:
        assert approver.post(f"{API}/grants/{granted['id']}/dispatch").status_code == 403
    with api.as_role(Role.OPERATOR) as operator:
        assert len(ok(operator.post(f"{API}/grants/{granted['id']}/dispatch"))["started"]) == 1
    assert refusal(admin.post(f"{API}/grants/nope/dispatch"), 404)["code"] == "not_found"
