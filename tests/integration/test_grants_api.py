"""Grants over the API: the opt-in dispatch, why no run started, the automation chip, 409s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.support.connections import (
    API,
    allowing_loopback,
    connection_worker,
    make_application,
    make_connection,
    ok,
    serving_api,
)
from tests.support.engine import publish, wait_status
from tests.support.target import Reply, running_target


def identity(admin: httpx.Client, email: str = "ada@example.com", **fields: Any) -> dict[str, Any]:
    body = {"email": email, "display_name": email.split("@")[0].title(), **fields}
    created: dict[str, Any] = ok(admin.post(f"{API}/identities", json=body), 201)
    return created


def access_workflow(app_id: str, trigger: str, path: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "application": app_id,
        "trigger": {"type": trigger},
        "steps": [
            {
                "id": "call",
                "type": "http",
                "config": {
                    "method": "POST",
                    "connection": "crm",
                    "path": path,
                    "body": {"email": "{{ identity.email }}", "role": "{{ grant.role }}"},
                },
            }
        ],
    }


def test_a_grant_with_no_workflow_starts_no_run_and_says_why(admin: httpx.Client) -> None:
    """The grant is recorded and active; its chip is `none` with the reason in plain words."""
    app_id = make_application(admin, "Wiki")
    person = identity(admin)
    grant = ok(
        admin.post(f"{API}/grants", json={"identity": person["email"], "application": "Wiki"}), 201
    )
    assert grant["status"] == "active"
    assert grant["automation"]["state"] == "none"
    assert grant["automation"]["runs"] == []
    assert (
        "no workflow with trigger access_granted exists for application 'Wiki'"
        in (grant["automation"]["no_run_reason"])
    )
    assert grant["application"] == {"id": app_id, "name": "Wiki"}
    again = admin.post(f"{API}/grants", json={"identity": person["id"], "application": app_id})
    assert again.status_code == 409
    assert grant["id"] in again.json()["error"]["message"]


def test_a_grant_names_each_workflow_that_did_not_start(
    admin: httpx.Client, database: Database
) -> None:
    """A disabled workflow and one with another trigger are both named, with why."""
    app_id = make_application(admin, "CRM")
    make_connection(admin, app_id, "http://127.0.0.1:9")
    publish(database, access_workflow(app_id, "access_revoked", "/revoke", "CRM revoke"))
    wf = publish(database, access_workflow(app_id, "access_granted", "/grant", "CRM grant"))
    ok(admin.post(f"{API}/workflows/{wf}/disable"))
    identity(admin)
    grant = ok(
        admin.post(f"{API}/grants", json={"identity": "ada@example.com", "application": "CRM"}), 201
    )
    reason = grant["automation"]["no_run_reason"]
    assert "workflow 'CRM grant': it is disabled" in reason
    assert "workflow 'CRM revoke': its trigger is access_revoked, not access_granted" in reason


def test_grant_run_failing_with_403_needs_attention_and_the_grant_stays(
    database: Database, tmp_path: Path
) -> None:
    settings = allowing_loopback(database, tmp_path)
    with (
        running_target() as target,
        serving_api(settings, database) as api,
        api.as_role(Role.ADMIN, "admin@example.com") as admin,
    ):
        target.on("/grant", Reply(403, {"error": "forbidden"}))
        target.on("/revoke", Reply(200, {"ok": True}))
        app_id = make_application(admin, "CRM")
        make_connection(admin, app_id, target.url)
        publish(database, access_workflow(app_id, "access_granted", "/grant", "CRM grant"))
        publish(database, access_workflow(app_id, "access_revoked", "/revoke", "CRM revoke"))
        identity(admin)
        grant = ok(
            admin.post(
                f"{API}/grants",
                json={"identity": "ada@example.com", "application": "CRM", "role": "editor"},
            ),
            201,
        )
        assert grant["automation"]["state"] == "pending"
        run_id = grant["automation"]["runs"][0]["id"]
        with connection_worker(settings, database):
            wait_status(database, run_id, "failed")
        shown = ok(admin.get(f"{API}/grants/{grant['id']}"))
        assert shown["status"] == "active"
        assert shown["automation"]["state"] == "needs_attention"
        assert shown["automation"]["runs"][0]["status"] == "failed"
        assert target.requests[0].body == {"email": "ada@example.com", "role": "editor"}

        revoked = ok(admin.post(f"{API}/grants/{grant['id']}/revoke", json={"comment": "done"}))
        assert revoked["status"] == "revoked"
        with connection_worker(settings, database):
            wait_status(database, revoked["automation"]["runs"][0]["id"], "succeeded")
        shown = ok(admin.get(f"{API}/grants/{grant['id']}"))
        assert shown["automation"]["state"] == "synced"
        assert [e["kind"] for e in shown["events"]] == ["access_granted", "access_revoked"]
