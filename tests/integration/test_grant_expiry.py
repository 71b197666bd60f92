"""Grant expiry and the grant refusals over real HTTP, on both databases: an expired grant is
revoked (reason `expired`) by the workers' durable timer, which starts the revoke workflow;
the expiry lives in the database, so a new worker honours it after a restart; extending is
validated and audited. Time passing is simulated by moving `expires_at` in the database."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from grantflow.access.models import Grant
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.store.base import utcnow
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
from tests.support.processes import poll
from tests.support.target import Reply, Target, running_target

NO_TIMER = 3600.0  # a worker whose timers thread never ticks during a test


@dataclass
class Crm:
    admin: httpx.Client
    target: Target
    settings: Settings
    app_id: str


@contextmanager
def crm(database: Database, tmp_path: Path) -> Iterator[Crm]:
    """The app, an admin, a CRM whose /revoke answers 200 and a published revoke workflow."""
    settings = allowing_loopback(database, tmp_path)
    with (
        running_target() as target,
        serving_api(settings, database) as api,
        api.as_role(Role.ADMIN, "admin@example.com") as admin,
    ):
        target.on("/revoke", Reply(200, {"ok": True}))
        app_id = make_application(admin, "CRM")
        make_connection(admin, app_id, target.url)
        publish(
            database,
            {
                "name": "CRM revoke",
                "application": app_id,
                "trigger": {"type": "access_revoked"},
                "steps": [
                    {
                        "id": "remove_user",
                        "type": "http",
                        "config": {
                            "method": "POST",
                            "connection": "crm",
                            "path": "/revoke",
                            "body": {"email": "{{ identity.email }}"},
                        },
                    }
                ],
            },
        )
        yield Crm(admin, target, settings, app_id)


def identity(admin: httpx.Client, email: str = "ada@example.com", **fields: Any) -> str:
    return str(ok(admin.post(f"{API}/identities", json={"email": email, **fields}), 201)["id"])


def iso(when: dt.datetime) -> str:
    return when.isoformat()


def grant(admin: httpx.Client, who: str, application: str = "CRM", **fields: Any) -> Any:
    body = {"identity": who, "application": application, **fields}
    return ok(admin.post(f"{API}/grants", json=body), 201)


def expire_in_the_database(database: Database, grant_id: str) -> None:
    """Time passes: the grant's expiry is now a second ago."""
    with database.transaction() as session:
        row = session.get(Grant, grant_id)
        assert row is not None
        row.expires_at = utcnow() - dt.timedelta(seconds=1)


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def test_an_expired_grant_is_revoked_by_the_timer_and_its_revoke_run_succeeds(
    database: Database, tmp_path: Path
) -> None:
    with crm(database, tmp_path) as env:
        admin = env.admin
        in_an_hour = iso(utcnow() + dt.timedelta(hours=1))
        due = grant(admin, identity(admin), expires_at=in_an_hour)
        later = grant(admin, identity(admin, "bob@example.com"), expires_at=in_an_hour)
        expire_in_the_database(database, due["id"])
        # nothing acts on an expiry until the timer runs
        assert ok(admin.get(f"{API}/grants/{due['id']}"))["status"] == "active"

        with connection_worker(env.settings, database, tick_seconds=NO_TIMER) as worker:
            worker.tick_once()
            shown = ok(admin.get(f"{API}/grants/{due['id']}"))
            assert shown["status"] == "revoked"
            assert shown["revoke_reason"] == "expired"
            assert shown["revoked_by"] == "system:expiry"
            assert [e["kind"] for e in shown["events"]] == ["access_granted", "access_revoked"]
            assert shown["events"][-1]["details"]["reason"] == "expired"
            [run] = shown["automation"]["runs"]
            wait_status(database, run["id"], "succeeded")
            worker.tick_once()  # a second tick finds nothing more to do

        [call] = env.target.calls("/revoke")
        assert call.body == {"email": "ada@example.com"}
        after = ok(admin.get(f"{API}/grants/{due['id']}"))
        assert after["automation"]["state"] == "synced"
        assert len(after["events"]) == 2
        assert ok(admin.get(f"{API}/grants/{later['id']}"))["status"] == "active"
        entries = ok(
            admin.get(f"{API}/audit", params={"action": "grant.revoked", "target_id": due["id"]})
        )["items"]
        assert [(e["actor"], e["summary"]["reason"]) for e in entries] == [
            ("system:expiry", "expired")
        ]


def test_expiry_survives_a_worker_restart(database: Database, tmp_path: Path) -> None:
    """The expiry is a row, not a timer in memory: a worker started afterwards revokes it."""
    with crm(database, tmp_path) as env:
        admin = env.admin
        with connection_worker(env.settings, database, tick_seconds=NO_TIMER):
            created = grant(
                admin, identity(admin), expires_at=iso(utcnow() + dt.timedelta(hours=1))
            )
        expire_in_the_database(database, created["id"])  # while no worker runs

        with connection_worker(env.settings, database, tick_seconds=0.05):

            def revoked() -> Any:
                shown = ok(admin.get(f"{API}/grants/{created['id']}"))
                return shown if shown["status"] == "revoked" else None

            shown = poll(revoked, timeout=60, what="the new worker to revoke the grant")
            assert shown["revoke_reason"] == "expired"
            wait_status(database, shown["automation"]["runs"][0]["id"], "succeeded")
        assert len(env.target.calls("/revoke")) == 1


def test_extend_changes_the_expiry_and_is_audited(admin: httpx.Client) -> None:
    make_application(admin, "Wiki")
    created = grant(admin, identity(admin), "Wiki", expires_at=iso(utcnow() + dt.timedelta(1)))
    url = f"{API}/grants/{created['id']}/extend"

    new = utcnow().replace(microsecond=0) + dt.timedelta(days=30)
    extended = ok(admin.post(url, json={"expires_at": iso(new), "comment": "project extended"}))
    assert dt.datetime.fromisoformat(extended["expires_at"]) == new
    assert ok(admin.get(f"{API}/grants/{created['id']}"))["expires_at"] == extended["expires_at"]
    never = ok(admin.post(url, json={"expires_at": None}))
    assert never["expires_at"] is None

    entries = ok(
        admin.get(
            f"{API}/audit",
            params={"action": "grant.expiry_changed", "target_id": created["id"]},
        )
    )["items"]
    assert len(entries) == 2  # newest first
    assert entries[1]["actor"] == "admin@example.com"
    assert entries[1]["summary"]["comment"] == "project extended"
    assert dt.datetime.fromisoformat(entries[1]["summary"]["to"]) == new
    assert entries[0]["summary"]["to"] is None

    past = error(admin.post(url, json={"expires_at": iso(utcnow() - dt.timedelta(hours=1))}), 422)
    assert past["details"][0]["field"] == "body.expires_at"
    assert "future" in past["message"]
    naive = error(admin.post(url, json={"expires_at": "2099-01-01T00:00:00"}), 422)
    assert naive["details"][0]["field"] == "body.expires_at"
    assert error(admin.post(url, json={}), 422)["details"][0]["field"] == "body.expires_at"

    ok(admin.post(f"{API}/grants/{created['id']}/revoke"))
    revoked = error(admin.post(url, json={"expires_at": iso(new)}), 409)
    assert revoked["code"] == "revoked"
    missing = admin.post(f"{API}/grants/nope/extend", json={"expires_at": iso(new)})
    assert error(missing, 404)["code"] == "not_found"


def test_a_grant_expiring_in_the_past_is_refused(admin: httpx.Client) -> None:
    make_application(admin, "Wiki")
    who = identity(admin)
    body = {"identity": who, "application": "Wiki", "expires_at": iso(utcnow())}
    refused = error(admin.post(f"{API}/grants", json=body), 422)
    assert refused["details"][0]["field"] == "body.expires_at"
    assert ok(admin.get(f"{API}/grants"))["items"] == []


def test_grant_refusals_name_the_cause(admin: httpx.Client) -> None:
    make_application(admin, "Wiki")
    inactive = identity(admin, "pre.hire@example.com", active=False)
    refused = error(
        admin.post(f"{API}/grants", json={"identity": inactive, "application": "Wiki"}), 409
    )
    assert refused["code"] == "identity_inactive"
    assert "pre.hire@example.com" in refused["message"]

    who = identity(admin)
    first = grant(admin, who, "Wiki", role="editor")
    twice = error(
        admin.post(
            f"{API}/grants",
            json={"identity": "ADA@example.com", "application": "wiki", "role": "editor"},
        ),
        409,
    )
    assert twice["code"] == "already_granted"
    assert twice["existing_grant_id"] == first["id"]
    assert first["id"] in twice["message"]
    grant(admin, who, "Wiki", role="viewer")  # another role is another grant

    nobody = error(
        admin.post(f"{API}/grants", json={"identity": "nobody@example.com", "application": "Wiki"}),
        404,
    )
    assert nobody["details"][0]["field"] == "body.identity"
    assert "nobody@example.com" in nobody["message"]
    no_app = error(admin.post(f"{API}/grants", json={"identity": who, "application": "Nope"}), 404)
    assert no_app["details"][0]["field"] == "body.application"
    assert no_app["message"].startswith("application:")
    assert "'Nope'" in no_app["message"]

    active = admin.get(f"{API}/grants", params={"identity_id": who, "status": "active"})
    assert {g["role"] for g in ok(active)["items"]} == {"editor", "viewer"}
