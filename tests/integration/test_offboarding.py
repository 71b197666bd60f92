"""A leaver with grants in three systems, one of them down: the two others are revoked, a
security incident is raised at the first failed attempt (not after the retries), and a Retry
once the system is back revokes the last access and resolves the incident."""

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
from tests.support.engine import publish, wait_for, wait_status
from tests.support.services import free_port
from tests.support.target import Reply, running_target

RETRY = {"max_attempts": 3, "initial_backoff": "PT0.3S", "jitter": "none"}


def revoke_workflow(app_id: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "application": app_id,
        "trigger": {"type": "access_revoked"},
        "steps": [
            {
                "id": "remove_member",
                "type": "http",
                "config": {
                    "method": "DELETE",
                    "connection": "crm",
                    "path": "/members/{{ identity.email }}",
                },
                "retry": RETRY,
            }
        ],
    }


def goodbye_workflow() -> dict[str, Any]:
    """A global identity_left workflow (no application): records the leaver."""
    return {
        "name": "Goodbye",
        "trigger": {"type": "identity_left"},
        "steps": [
            {"id": "note", "type": "set", "config": {"values": {"who": "{{ identity.email }}"}}}
        ],
    }


def system(admin: httpx.Client, database: Database, name: str, base_url: str) -> str:
    app_id = make_application(admin, name)
    make_connection(admin, app_id, base_url)
    publish(database, revoke_workflow(app_id, f"{name} revoke"))
    return app_id


def incidents(admin: httpx.Client) -> list[dict[str, Any]]:
    return list(ok(admin.get(f"{API}/incidents"))["items"])


def test_a_leaver_with_one_system_down_raises_an_incident_at_once(
    database: Database, tmp_path: Path
) -> None:
    settings = allowing_loopback(database, tmp_path)
    down_port = free_port()  # nothing listens here until the system comes back
    with (
        running_target() as crm,
        running_target() as wiki,
        serving_api(settings, database) as api,
        api.as_role(Role.ADMIN, "admin@example.com") as admin,
    ):
        for target in (crm, wiki):
            target.on("/members/ada@example.com", Reply(204))
        system(admin, database, "CRM", crm.url)
        system(admin, database, "Wiki", wiki.url)
        system(admin, database, "Payroll", f"http://127.0.0.1:{down_port}")
        publish(database, goodbye_workflow())
        person = ok(admin.post(f"{API}/identities", json={"email": "Ada@Example.com"}), 201)
        grant_ids = [
            ok(
                admin.post(f"{API}/grants", json={"identity": person["id"], "application": app}),
                201,
            )["id"]
            for app in ("CRM", "Wiki", "Payroll")
        ]

        left = ok(admin.post(f"{API}/identities/{person['id']}/leave"))
        assert left["active"] is False
        assert left["lifecycle_state"] == "leaver"
        grants = {g: ok(admin.get(f"{API}/grants/{g}")) for g in grant_ids}
        assert {g["status"] for g in grants.values()} == {"revoked"}
        assert {g["revoke_reason"] for g in grants.values()} == {"identity_left"}
        runs = {g["application"]["name"]: g["automation"]["runs"][0]["id"] for g in grants.values()}
        events = ok(admin.get(f"{API}/identities/{person['id']}/events"))
        assert [e["kind"] for e in events][-1] == "identity_left"
        goodbye_run = events[-1]["dispatch"][0]["run_id"]

        with connection_worker(settings, database):
            # the incident is raised at the first failed attempt (checked below: it predates
            # the end of the run, whose retries go on after it)
            wait_for(
                database,
                runs["Payroll"],
                lambda d: any(i["run_id"] == runs["Payroll"] for i in incidents(admin)),
            )
            for name in ("CRM", "Wiki"):
                wait_status(database, runs[name], "succeeded")
            wait_status(database, goodbye_run, "succeeded")
            failed = wait_status(database, runs["Payroll"], "failed")

        [incident] = incidents(admin)
        assert incident["status"] == "open"
        assert incident["system"] == "Payroll"
        assert incident["step_id"] == "remove_member"
        assert incident["identity_id"] == person["id"]
        assert "Revoke ada@example.com's access in Payroll by hand now" in incident["instruction"]
        assert incident["created_at"] < failed["finished_at"]
        assert incident["failure"]["class"] == "transient"
        assert failed["steps"][0]["attempts"] == RETRY["max_attempts"]
        for target in (crm, wiki):
            assert [r.method for r in target.requests] == ["DELETE"]
        notes = ok(admin.get(f"{API}/notifications", params={"kind": "security_incident"}))
        assert [n["target_id"] for n in notes["items"]] == [incident["id"]]
        assert ok(admin.get(f"{API}/identities/{person['id']}"))["lifecycle_state"] == "left"
        payroll = ok(admin.get(f"{API}/grants/{grants_by(grants, 'Payroll')}"))
        assert payroll["automation"]["state"] == "needs_attention"

        with running_target(port=down_port) as payroll_back:
            payroll_back.on("/members/ada@example.com", Reply(204))
            ok(admin.post(f"{API}/runs/{runs['Payroll']}/retry"))
            with connection_worker(settings, database):
                wait_status(database, runs["Payroll"], "succeeded")
            assert [r.method for r in payroll_back.requests] == ["DELETE"]

        resolved = ok(admin.get(f"{API}/incidents/{incident['id']}"))
        assert resolved["status"] == "resolved"
        assert resolved["resolution"] == "retry_succeeded"
        notes = ok(admin.get(f"{API}/notifications", params={"kind": "security_incident"}))
        assert notes["items"][0]["resolved_at"] is not None
        payroll = ok(admin.get(f"{API}/grants/{grants_by(grants, 'Payroll')}"))
        assert payroll["automation"]["state"] == "synced"


def grants_by(grants: dict[str, dict[str, Any]], app_name: str) -> str:
    return next(g for g, shown in grants.items() if shown["application"]["name"] == app_name)
