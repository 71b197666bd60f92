"""Security incidents over real HTTP, on both databases: a revoke run whose step fails raises one
at once (not after the retries), naming who, which system, which step and what to do; it is
resolved by evidence of a manual revocation or by a retry that succeeds. A failing grant run
raises none."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from grantflow.access.models import Identity, Incident
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.conftest import Api
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
from tests.support.plans import selects_on
from tests.support.target import Reply, Target, running_target

# a long backoff: the run is still waiting on its second attempt while the test looks
SLOW_RETRY = {"max_attempts": 5, "initial_backoff": "PT60S", "jitter": "none"}
FAST_RETRY = {"max_attempts": 2, "initial_backoff": "PT0.05S", "jitter": "none"}


@dataclass
class Crm:
    """The app over HTTP, an admin, the CRM's scripted server and its application id."""

    api: Api
    admin: httpx.Client
    target: Target
    settings: Settings
    app_id: str


def access_workflow(
    app_id: str, trigger: str, path: str, retry: dict[str, Any] | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": "remove_user" if trigger == "access_revoked" else "add_user",
        "type": "http",
        "config": {
            "method": "POST",
            "connection": "crm",
            "path": path,
            "body": {"email": "{{ identity.email }}"},
        },
    }
    if retry:
        step["retry"] = retry
    return {
        "name": f"CRM {trigger}",
        "application": app_id,
        "trigger": {"type": trigger},
        "steps": [step],
    }


@contextmanager
def crm(database: Database, tmp_path: Path) -> Iterator[Crm]:
    settings = allowing_loopback(database, tmp_path)
    with (
        running_target() as target,
        serving_api(settings, database) as api,
        api.as_role(Role.ADMIN, "admin@example.com") as admin,
    ):
        app_id = make_application(admin, "CRM")
        make_connection(admin, app_id, target.url)
        yield Crm(api, admin, target, settings, app_id)


def a_grant(admin: httpx.Client, email: str = "ada@example.com") -> dict[str, Any]:
    person = ok(admin.post(f"{API}/identities", json={"email": email}), 201)
    grant: dict[str, Any] = ok(
        admin.post(f"{API}/grants", json={"identity": person["id"], "application": "CRM"}), 201
    )
    return grant


def revoke(admin: httpx.Client, grant_id: str) -> str:
    """Revoke the grant; the id of the revoke run it started."""
    revoked = ok(admin.post(f"{API}/grants/{grant_id}/revoke", json={"comment": "left the team"}))
    [run] = revoked["automation"]["runs"]
    return str(run["id"])


def incidents(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(client.get(f"{API}/incidents", params=params))["items"]
    return items


def security_notifications(client: httpx.Client) -> list[dict[str, Any]]:
    shown = ok(client.get(f"{API}/notifications", params={"kind": "security_incident"}))
    items: list[dict[str, Any]] = shown["items"]
    return items


def audit(client: httpx.Client, action: str, incident_id: str) -> list[dict[str, Any]]:
    page = ok(client.get(f"{API}/audit", params={"action": action, "target_id": incident_id}))
    items: list[dict[str, Any]] = page["items"]
    return items


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def test_a_failing_revocation_raises_an_incident_at_once_resolved_by_evidence(
    database: Database, tmp_path: Path
) -> None:
    with crm(database, tmp_path) as env:
        admin = env.admin
        env.target.on("/revoke", Reply(503, {"error": "maintenance"}))
        publish(database, access_workflow(env.app_id, "access_revoked", "/revoke", SLOW_RETRY))
        grant = a_grant(admin)
        run_id = revoke(admin, grant["id"])

        with connection_worker(env.settings, database):
            shown = wait_for(
                database,
                run_id,
                lambda d: d["status"] == "waiting" and d["waiting_reason"] == "retry",
            )
        # one attempt so far; four more are due, a minute apart: the incident did not wait
        assert len(env.target.calls("/revoke")) == 1
        assert shown["steps"][0]["attempts"] == 1

        [incident] = incidents(admin, status="open")
        assert incident["kind"] == "revocation_failed"
        assert incident["identity_id"] == grant["identity"]["id"]
        assert incident["application_id"] == env.app_id
        assert incident["grant_id"] == grant["id"]
        assert incident["run_id"] == run_id
        assert incident["system"] == "CRM"
        assert incident["step_id"] == "remove_user"
        assert incident["failure"]["class"] == "transient"
        assert "ada@example.com" in incident["summary"]
        assert incident["instruction"].startswith(
            "Revoke ada@example.com's access in CRM by hand now."
        )
        assert (
            f"attach evidence of the manual revocation to run {run_id}" in (incident["instruction"])
        )
        assert ok(admin.get(f"{API}/incidents/{incident['id']}")) == incident

        [note] = security_notifications(admin)
        assert note["target_type"] == "incident"
        assert note["target_id"] == incident["id"]
        assert note["body"] == incident["instruction"]
        assert note["data"]["system"] == "CRM"
        assert note["data"]["run_id"] == run_id
        assert note["resolved_at"] is None
        [raised] = audit(admin, "incident.raised", incident["id"])
        assert raised["actor"] == "system:engine"
        assert raised["summary"]["step_id"] == "remove_user"

        # a viewer sees incidents but cannot resolve them
        with env.api.as_role(Role.VIEWER, "viewer@example.com") as viewer:
            assert [i["id"] for i in incidents(viewer)] == [incident["id"]]
            refused = error(viewer.post(f"{API}/incidents/{incident['id']}/resolve"), 403)
            assert refused["missing_permission"] == "incident:manage"
            assert "incident:manage" in refused["message"]

        # no evidence yet (a note is not a file): refused, saying what to attach and where
        ok(admin.post(f"{API}/runs/{run_id}/notes", json={"note": "removed by hand"}), 201)
        missing = error(admin.post(f"{API}/incidents/{incident['id']}/resolve"), 409)
        assert missing["code"] == "evidence_required"
        assert run_id in missing["message"]
        assert f"POST /api/v1/runs/{run_id}/evidence" in missing["next_action"]

        proof = b"2030-01-31 10:02 removed ada@example.com from CRM (ticket IT-42)\n"
        ok(
            admin.post(
                f"{API}/runs/{run_id}/evidence",
                files={"file": ("crm-removal.txt", proof, "text/plain")},
            ),
            201,
        )
        resolved = ok(
            admin.post(
                f"{API}/incidents/{incident['id']}/resolve",
                json={"comment": "removed in the CRM console"},
            )
        )
        assert resolved["status"] == "resolved"
        assert resolved["resolution"] == "evidence"
        assert resolved["resolved_by"] == "admin@example.com"
        assert resolved["resolution_comment"] == "removed in the CRM console"
        assert incidents(admin, status="open") == []
        [note] = security_notifications(admin)
        assert note["resolved_at"] is not None
        [entry] = audit(admin, "incident.resolved", incident["id"])
        assert entry["actor"] == "admin@example.com"
        assert entry["summary"]["resolution"] == "evidence"

        again = error(admin.post(f"{API}/incidents/{incident['id']}/resolve"), 409)
        assert again["code"] == "already_resolved"


def test_a_retry_that_succeeds_resolves_the_incident_by_itself(
    database: Database, tmp_path: Path
) -> None:
    with crm(database, tmp_path) as env:
        admin = env.admin
        env.target.on("/revoke", Reply(503, {"error": "down"}))
        publish(database, access_workflow(env.app_id, "access_revoked", "/revoke", FAST_RETRY))
        grant = a_grant(admin)
        run_id = revoke(admin, grant["id"])
        with connection_worker(env.settings, database):
            failed = wait_status(database, run_id, "failed")
            assert failed["failure"]["class"] == "transient"
            assert len(env.target.calls("/revoke")) == 2
            # raised on the first attempt, and still the one incident after the run failed
            [incident] = incidents(admin, status="open")
            assert incident["run_id"] == run_id
            assert len(security_notifications(admin)) == 1
            assert ok(admin.get(f"{API}/grants/{grant['id']}"))["automation"]["state"] == (
                "needs_attention"
            )

            env.target.on("/revoke", Reply(200, {"ok": True}))
            ok(admin.post(f"{API}/runs/{run_id}/retry"))
            wait_status(database, run_id, "succeeded")

        shown = ok(admin.get(f"{API}/incidents/{incident['id']}"))
        assert shown["status"] == "resolved"
        assert shown["resolution"] == "retry_succeeded"
        assert shown["resolved_by"] == "system:engine"
        [note] = security_notifications(admin)
        assert note["resolved_at"] is not None
        [entry] = audit(admin, "incident.resolved", incident["id"])
        assert entry["summary"]["resolution"] == "retry_succeeded"
        assert ok(admin.get(f"{API}/grants/{grant['id']}"))["automation"]["state"] == "synced"


def test_a_failing_grant_run_raises_no_incident(database: Database, tmp_path: Path) -> None:
    with crm(database, tmp_path) as env:
        env.target.on("/grant", Reply(503, {"error": "down"}))
        publish(database, access_workflow(env.app_id, "access_granted", "/grant", FAST_RETRY))
        grant = a_grant(env.admin)
        [run] = grant["automation"]["runs"]
        with connection_worker(env.settings, database):
            wait_status(database, run["id"], "failed")
        assert len(env.target.calls("/grant")) == 2
        assert incidents(env.admin) == []
        assert security_notifications(env.admin) == []
        assert ok(env.admin.get(f"{API}/audit", params={"action": "incident.*"}))["items"] == []


def test_unknown_incident_is_404(admin: httpx.Client) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert error(admin.get(f"{API}/incidents/{missing}"), 404)["code"] == "not_found"
    assert error(admin.post(f"{API}/incidents/{missing}/resolve"), 404)["code"] == "not_found"


def test_a_hand_resolution_stands_when_the_runs_remaining_retries_fail(
    database: Database, tmp_path: Path
) -> None:
    """Resolved by hand with evidence while the revoke step still had a retry due: the retry
    failing (and the run with it) leaves the incident resolved, with no new notification."""
    with crm(database, tmp_path) as env:
        admin = env.admin
        env.target.on("/revoke", Reply(503, {"error": "maintenance"}))
        retry = {"max_attempts": 2, "initial_backoff": "PT0.5S", "jitter": "none"}
        publish(database, access_workflow(env.app_id, "access_revoked", "/revoke", retry))
        run_id = revoke(admin, a_grant(admin)["id"])
        with connection_worker(env.settings, database):
            wait_for(database, run_id, lambda d: d["waiting_reason"] == "retry")
        [incident] = incidents(admin, status="open")
        proof = b"removed ada@example.com from CRM by hand (ticket IT-42)\n"
        ok(
            admin.post(
                f"{API}/runs/{run_id}/evidence",
                files={"file": ("crm-removal.txt", proof, "text/plain")},
            ),
            201,
        )
        ok(admin.post(f"{API}/incidents/{incident['id']}/resolve", json={"comment": "by hand"}))

        with connection_worker(env.settings, database):
            wait_status(database, run_id, "failed")
        assert len(env.target.calls("/revoke")) == 2
        shown = ok(admin.get(f"{API}/incidents/{incident['id']}"))
        assert (shown["status"], shown["resolution"]) == ("resolved", "evidence")
        assert shown["resolved_by"] == "admin@example.com"
        assert incidents(admin, status="open") == []
        [note] = security_notifications(admin)
        assert note["resolved_at"] is not None


def test_a_page_of_incidents_reads_their_people_at_once(api: Api, admin: httpx.Client) -> None:
    """Each incident names its person by e-mail: a page reads them in one statement, not one
    per incident (a page of 50 cost 51)."""
    with api.database.transaction() as session:
        for n in range(12):
            who = f"leaver{n}@example.com"
            person = Identity(email=who, user_name=who, lifecycle_state="leaver", scim={})
            session.add(person)
            session.flush()
            session.add(
                Incident(
                    kind="revocation_not_automated",
                    status="open",
                    identity_id=person.id,
                    system="CRM",
                    summary=f"leaver{n} may still have access to CRM",
                    instruction="remove the account by hand, then resolve with evidence",
                )
            )
    with selects_on(api.database, "identities") as small:
        few = incidents(admin, limit="3")
    with selects_on(api.database, "identities") as large:
        many = incidents(admin, limit="12")
    assert len(few) == 3
    assert sorted(i["identity"] for i in many) == sorted(
        f"leaver{n}@example.com" for n in range(12)
    )
    assert len(small) == len(large) == 1
