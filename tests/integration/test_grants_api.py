"""Grants over the API: the opt-in dispatch, why no run started, the automation chip, 409s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.access.models import Grant
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


def test_a_grant_that_lost_the_race_to_a_concurrent_one_is_a_409_naming_it(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests grant the same access at once: the one whose insert clashes is told the
    access is already granted (it was a 500: the clash undid the whole transaction)."""
    from grantflow.access import grants, identities
    from grantflow.access.applications import ApplicationCreate, create_application
    from grantflow.access.identities import IdentityCreate
    from grantflow.errors import Conflict
    from grantflow.queue.database import DatabaseQueue
    from tests.support.engine import ACTOR

    queue = DatabaseQueue(database)
    wanted = {}
    with database.transaction() as session:
        wanted["application"] = create_application(
            session, ACTOR, ApplicationCreate(name="Wiki")
        ).id
        wanted["identity"] = identities.create_identity(
            session, ACTOR, queue, IdentityCreate(email="ada@example.com")
        ).id
        grants.create_grant(session, ACTOR, queue, grants.GrantCreate(**wanted))
    checked = grants._check_not_granted
    calls: list[int] = []

    def not_yet_committed(*args: Any) -> None:  # the other grant commits after this check
        calls.append(1)
        if len(calls) > 1:
            checked(*args)

    monkeypatch.setattr(grants, "_check_not_granted", not_yet_committed)
    with pytest.raises(Conflict, match="already") as refused, database.transaction() as session:
        grants.create_grant(session, ACTOR, queue, grants.GrantCreate(**wanted))
    assert refused.value.code == "already_granted"
    with database.transaction() as session:
        held = session.execute(select(Grant).where(Grant.identity_id == wanted["identity"]))
        assert len(held.scalars().all()) == 1
