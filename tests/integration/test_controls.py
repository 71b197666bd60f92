"""Control evaluation over real HTTP, on SQLite and PostgreSQL: for each built-in control, an
inventory that makes it fail (with the exact finding and its link) and one that makes it pass;
parameter overrides; the control_failed notification (raised once, not duplicated, resolved when
the control passes); the control_evaluation job through Run now; validation and permissions.

State is built through the services and the API. Time passing is simulated by moving a
timestamp in the database (a grant's expiry, a connection's status change, an approval's
creation, a credential's setting, a run's end)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.access.models import Grant, Identity, ReconciliationReport
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.connections.models import Connection, ConnectionStatus, Credential
from grantflow.connections.service import set_status
from grantflow.engine import operations
from grantflow.engine.models import Run
from grantflow.errors import ValidationError
from grantflow.governance.control_checks import CONTROLS
from grantflow.governance.models import ControlEvaluation
from grantflow.people.models import Task
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import jobs, scheduler
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import make_connection, put_credential
from tests.support.engine import publish, running_worker, start, wait_for, wait_status
from tests.support.plans import selects_on
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.target import Reply, running_target

API = "/api/v1"
ACTOR = Actor.system("test")
ADMIN = "admin@example.com"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def at(when: dt.datetime) -> str:
    return f"{when.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"


@dataclass
class Env:
    api: Api
    admin: httpx.Client

    @property
    def db(self) -> Database:
        return self.api.database

    def evaluate(self, *controls: str, **params: dict[str, int]) -> dict[str, Any]:
        body: dict[str, Any] = {"params": params}
        if controls:
            body["controls"] = list(controls)
        shown: dict[str, Any] = ok(self.admin.post(f"{API}/controls/evaluate", json=body), 201)
        return shown

    def result(self, control: str, **params: int) -> dict[str, Any]:
        """Evaluate one control; its result."""
        evaluation = self.evaluate(control, **({control: params} if params else {}))
        [result] = evaluation["results"]
        assert result["control"] == control
        assert result["finding_count"] == len(result["findings"])
        assert result["passed"] is (not result["findings"])
        return result

    def findings(self, control: str, **params: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.result(control, **params)["findings"]
        return found

    def application(self, name: str = "CRM") -> str:
        return str(ok(self.admin.post(f"{API}/applications", json={"name": name}), 201)["id"])

    def identity(self, email: str = "ada@example.com") -> str:
        return str(ok(self.admin.post(f"{API}/identities", json={"email": email}), 201)["id"])

    def grant(self, who: str, application: str = "CRM", **fields: Any) -> str:
        body = {"identity": who, "application": application, **fields}
        return str(ok(self.admin.post(f"{API}/grants", json=body), 201)["id"])

    def row(self, model: type[Any], key: str) -> Any:
        with self.db.transaction() as session:
            found = session.get(model, key)
            assert found is not None
            session.expunge(found)
            return found

    def move(self, model: type[Any], key: str, **values: Any) -> None:
        """Change columns of a row (time passing, or state imported from elsewhere)."""
        with self.db.transaction() as session:
            found = session.get(model, key)
            assert found is not None
            for name, value in values.items():
                setattr(found, name, value)


@pytest.fixture
def env(api: Api) -> Iterator[Env]:
    with api.as_role(Role.ADMIN, ADMIN) as admin:
        yield Env(api, admin)


def ago(**delta: float) -> dt.datetime:
    return utcnow() - dt.timedelta(**delta)


# --- the catalogue and an empty inventory ---------------------------------------------------


def test_the_catalogue_lists_every_control_with_its_parameters(env: Env) -> None:
    catalogue = ok(env.admin.get(f"{API}/controls"))
    assert [c["id"] for c in catalogue] == [
        "leavers_with_active_grants",
        "expired_grants_not_revoked",
        "offboarding_not_covered",
        "connections_unhealthy",
        "approvals_pending",
        "credentials_not_rotated",
        "failed_runs_unattended",
        "reconciliation_orphans",
    ]
    defaults = {c["id"]: {p["name"]: p["default"] for p in c["params"]} for c in catalogue}
    assert defaults == {
        "leavers_with_active_grants": {},
        "expired_grants_not_revoked": {"grace_minutes": 60},
        "offboarding_not_covered": {},
        "connections_unhealthy": {"hours": 24},
        "approvals_pending": {"days": 7},
        "credentials_not_rotated": {"days": 90},
        "failed_runs_unattended": {"hours": 24},
        "reconciliation_orphans": {},
    }
    assert all(c["title"] and c["description"] for c in catalogue)


def test_an_empty_inventory_passes_every_control_and_the_evaluation_is_stored(env: Env) -> None:
    evaluation = env.evaluate()
    assert evaluation["passed"] is True
    assert evaluation["summary"] == {
        "controls": len(CONTROLS),
        "passed": len(CONTROLS),
        "failed": 0,
        "findings": 0,
        "failed_controls": [],
        "newly_failed": [],
    }
    assert evaluation["params"]["params"]["approvals_pending"] == {"days": 7}
    assert evaluation["created_by"] == ADMIN
    stored = ok(env.admin.get(evaluation["link"]))
    assert stored == evaluation
    assert ok(env.admin.get(f"{API}/controls/evaluations/latest"))["id"] == evaluation["id"]
    page = ok(env.admin.get(f"{API}/controls/evaluations"))
    assert [e["id"] for e in page["items"]] == [evaluation["id"]]
    assert "results" not in page["items"][0]
    entries = ok(
        env.admin.get(
            f"{API}/audit", params={"action": "control.evaluated", "target_id": evaluation["id"]}
        )
    )["items"]
    assert len(entries) == 1
    assert entries[0]["summary"]["ok"] == len(CONTROLS)
    assert entries[0]["summary"]["failing_controls"] == []


# --- leavers_with_active_grants ---------------------------------------------------------------


def test_a_leaver_with_an_active_grant_fails_and_revoking_it_passes(env: Env) -> None:
    app_id = env.application()
    ada = env.identity()
    grant_id = env.grant("ada@example.com", role="admin")
    assert env.result("leavers_with_active_grants")["passed"] is True
    # the directory says ada left, but her grant was never revoked (state imported from HR)
    env.move(Identity, ada, lifecycle_state="left", active=False)
    granted_at = env.row(Grant, grant_id).granted_at
    assert env.findings("leavers_with_active_grants") == [
        {
            "object_type": "grant",
            "object_id": grant_id,
            "link": f"/api/v1/grants/{grant_id}",
            "detail": f"ada@example.com has left (lifecycle state left) but still has active "
            f"access to 'CRM' as 'admin' (granted {at(granted_at)} by {ADMIN}): revoke the "
            f"grant (POST /api/v1/grants/{grant_id}/revoke)",
            "identity_id": ada,
            "application_id": app_id,
        }
    ]
    ok(env.admin.post(f"{API}/grants/{grant_id}/revoke", json={}))
    assert env.result("leavers_with_active_grants")["passed"] is True


def test_a_deleted_identity_with_an_active_grant_fails(env: Env) -> None:
    env.application()
    ada = env.identity()
    grant_id = env.grant(ada)
    env.move(Identity, ada, deleted_at=ago(hours=1), lifecycle_state="active")
    [finding] = env.findings("leavers_with_active_grants")
    assert finding["object_id"] == grant_id
    assert finding["detail"].startswith(
        "ada@example.com was deleted but still has active access to 'CRM' (granted "
    )


def test_offboarding_through_the_api_revokes_the_grants_and_passes(env: Env) -> None:
    env.application()
    ada = env.identity()
    env.grant(ada)
    ok(env.admin.patch(f"{API}/identities/{ada}", json={"active": False}))
    assert env.row(Identity, ada).lifecycle_state in ("leaver", "left")
    assert env.result("leavers_with_active_grants")["passed"] is True


# --- expired_grants_not_revoked ---------------------------------------------------------------


def test_a_grant_expired_beyond_the_grace_and_still_active_fails(env: Env) -> None:
    app_id = env.application()
    ada = env.identity()
    in_an_hour = (utcnow() + dt.timedelta(hours=1)).isoformat()
    grant_id = env.grant(ada, expires_at=in_an_hour)
    assert env.result("expired_grants_not_revoked")["passed"] is True
    expired = ago(hours=3)
    env.move(Grant, grant_id, expires_at=expired)
    assert env.findings("expired_grants_not_revoked") == [
        {
            "object_type": "grant",
            "object_id": grant_id,
            "link": f"/api/v1/grants/{grant_id}",
            "detail": f"the grant of 'CRM' to ada@example.com expired at {at(expired)} "
            "(3 hours ago) and is still active: expiry is enforced by the workers' timer — "
            "check that a worker is running (`grantflow worker` or `grantflow serve`), or "
            f"revoke the grant (POST /api/v1/grants/{grant_id}/revoke)",
            "identity_id": ada,
            "application_id": app_id,
        }
    ]


def test_a_grant_expired_within_the_grace_passes_unless_the_grace_is_shorter(env: Env) -> None:
    env.application()
    grant_id = env.grant(env.identity(), expires_at=(utcnow() + dt.timedelta(hours=1)).isoformat())
    env.move(Grant, grant_id, expires_at=ago(minutes=10))
    assert env.result("expired_grants_not_revoked")["passed"] is True  # grace: 60 minutes
    shorter = env.result("expired_grants_not_revoked", grace_minutes=5)
    assert shorter["params"] == {"grace_minutes": 5}
    assert [f["object_id"] for f in shorter["findings"]] == [grant_id]


# --- offboarding_not_covered ------------------------------------------------------------------


def revoke_workflow(app_id: str, name: str = "CRM revoke") -> dict[str, Any]:
    return {
        "name": name,
        "application": app_id,
        "trigger": {"type": "access_revoked"},
        "steps": [{"id": "remove_user", "type": "set", "config": {"values": {"done": True}}}],
    }


def test_an_application_with_grants_and_no_revoke_workflow_fails(env: Env) -> None:
    app_id = env.application()
    env.application("Wiki")  # no grants: nothing to offboard there
    env.grant(env.identity())
    env.grant("ada@example.com", role="admin")
    # a revoke workflow that exists only as a draft does not cover it
    ok(env.admin.post(f"{API}/workflows", json=revoke_workflow(app_id)), 201)
    assert env.findings("offboarding_not_covered") == [
        {
            "object_type": "application",
            "object_id": app_id,
            "link": f"/api/v1/applications/{app_id}",
            "detail": "'CRM' has 2 active grant(s) but no enabled access_revoked workflow "
            "with an active version, and there is no global identity_left workflow: revoking "
            "access or offboarding a leaver never removes the account there (workflow "
            "'CRM revoke' is not published (no active version)): publish and enable a revoke "
            "workflow for it",
            "application_id": app_id,
            "active_grants": 2,
        }
    ]


def test_a_published_revoke_workflow_passes_and_disabling_it_fails(env: Env) -> None:
    app_id = env.application()
    env.grant(env.identity())
    workflow_id = publish(env.db, revoke_workflow(app_id))
    assert env.result("offboarding_not_covered")["passed"] is True
    ok(env.admin.post(f"{API}/workflows/{workflow_id}/disable"))
    [finding] = env.findings("offboarding_not_covered")
    assert "(workflow 'CRM revoke' is disabled)" in finding["detail"]


def test_a_global_identity_left_workflow_covers_every_application(env: Env) -> None:
    env.application()
    env.grant(env.identity())
    assert env.result("offboarding_not_covered")["passed"] is False
    publish(
        env.db,
        {
            "name": "Offboard everywhere",
            "trigger": {"type": "identity_left"},
            "steps": [{"id": "disable_sso", "type": "set", "config": {"values": {"ok": True}}}],
        },
    )
    assert env.result("offboarding_not_covered")["passed"] is True


# --- connections_unhealthy --------------------------------------------------------------------


def connection(env: Env, app_id: str, **fields: Any) -> str:
    return str(make_connection(env.admin, app_id, "https://crm.example.com", **fields)["id"])


def set_connection_status(env: Env, connection_id: str, status: str, reason: str) -> None:
    with env.db.transaction() as session:
        found = session.get(Connection, connection_id)
        assert found is not None
        set_status(session, found, ConnectionStatus(status), reason)


def test_a_connection_reauth_required_for_longer_than_the_hours_fails(env: Env) -> None:
    app_id = env.application()
    connection_id = connection(env, app_id)
    set_connection_status(env, connection_id, "reauth_required", "the refresh token was revoked")
    assert env.result("connections_unhealthy")["passed"] is True  # not 24 hours yet
    since = ago(hours=30)
    env.move(Connection, connection_id, status_changed_at=since)
    assert env.findings("connections_unhealthy") == [
        {
            "object_type": "connection",
            "object_id": connection_id,
            "link": f"/api/v1/connections/{connection_id}",
            "detail": f"connection 'crm' of 'CRM' has been reauth_required since {at(since)} "
            "(30 hours): the refresh token was revoked; replace its credential "
            f"(PUT /api/v1/connections/{connection_id}/credential)",
            "application_id": app_id,
            "status": "reauth_required",
        }
    ]
    set_connection_status(env, connection_id, "connected", "")
    assert env.result("connections_unhealthy")["passed"] is True


def test_an_unhealthy_connection_fails_only_past_the_hours_given(env: Env) -> None:
    app_id = env.application()
    connection_id = connection(env, app_id)
    set_connection_status(env, connection_id, "unhealthy", "GET / answered 503")
    since = ago(hours=3)
    env.move(Connection, connection_id, status_changed_at=since)
    assert env.result("connections_unhealthy")["passed"] is True
    assert env.findings("connections_unhealthy", hours=2) == [
        {
            "object_type": "connection",
            "object_id": connection_id,
            "link": f"/api/v1/connections/{connection_id}",
            "detail": f"connection 'crm' of 'CRM' has been unhealthy since {at(since)} "
            "(3 hours): GET / answered 503; fix it and run Test connection "
            f"(POST /api/v1/connections/{connection_id}/test)",
            "application_id": app_id,
            "status": "unhealthy",
        }
    ]


# --- approvals_pending ------------------------------------------------------------------------


def pending_approval(env: Env) -> tuple[str, str, str]:
    """A run waiting on an approval by the admin; (task id, run id, workflow id)."""
    workflow_id = publish(
        env.db,
        {
            "name": "Approve CRM",
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "approve",
                    "type": "approval",
                    "config": {"title": "Grant CRM access?", "approvers": {"users": [ADMIN]}},
                }
            ],
        },
    )
    run_id = start(env.db, workflow_id)
    with running_worker(env.db):
        wait_for(env.db, run_id, lambda d: d["status"] == "waiting")
    with env.db.transaction() as session:
        task = session.execute(select(Task).where(Task.run_id == run_id)).scalar_one()
        assert (task.kind, task.status, task.routing_problem) == ("approval", "pending", None)
        return task.id, run_id, workflow_id


def test_an_approval_pending_for_longer_than_the_days_fails(env: Env) -> None:
    task_id, run_id, workflow_id = pending_approval(env)
    assert env.result("approvals_pending")["passed"] is True
    created = ago(days=8)
    env.move(Task, task_id, created_at=created)
    assert env.findings("approvals_pending") == [
        {
            "object_type": "task",
            "object_id": task_id,
            "link": f"/api/v1/tasks/{task_id}",
            "detail": f"approval 'Grant CRM access?' (workflow 'Approve CRM', run {run_id}) "
            f"has been pending for 8 days, since {at(created)}: remind or reassign its "
            "approvers, or decide it",
            "run_id": run_id,
            "workflow_id": workflow_id,
        }
    ]
    # the link is the task itself
    assert ok(env.admin.get(f"{API}/tasks/{task_id}"))["id"] == task_id


def test_an_approval_pending_fewer_days_passes_unless_fewer_are_allowed(env: Env) -> None:
    task_id, _, _ = pending_approval(env)
    env.move(Task, task_id, created_at=ago(days=2))
    assert env.result("approvals_pending")["passed"] is True
    assert [f["object_id"] for f in env.findings("approvals_pending", days=1)] == [task_id]


# --- credentials_not_rotated ------------------------------------------------------------------


def test_a_credential_not_replaced_within_the_days_fails_and_replacing_it_passes(
    env: Env,
) -> None:
    app_id = env.application()
    connection_id = connection(env, app_id, auth_kind="bearer")
    put_credential(env.admin, connection_id, {"token": "t-0123456789abcdef"})
    assert env.result("credentials_not_rotated")["passed"] is True
    with env.db.transaction() as session:
        credential = session.execute(
            select(Credential).where(Credential.connection_id == connection_id)
        ).scalar_one()
        set_at = credential.created_at = ago(days=100)
        credential_id = credential.id
    assert env.findings("credentials_not_rotated") == [
        {
            "object_type": "connection",
            "object_id": connection_id,
            "link": f"/api/v1/connections/{connection_id}",
            "detail": f"the credential of connection 'crm' of 'CRM' was last set 100 days ago "
            f"({at(set_at)}), more than 90 days: rotate it "
            f"(PUT /api/v1/connections/{connection_id}/credential)",
            "application_id": app_id,
            "credential_id": credential_id,
        }
    ]
    put_credential(env.admin, connection_id, {"token": "t-fedcba9876543210"})
    assert env.result("credentials_not_rotated")["passed"] is True
    # a replacement is itself dated: it fails again once it is older than the period
    env.move(Credential, credential_id, replaced_at=ago(days=40))
    assert env.result("credentials_not_rotated")["passed"] is True
    [finding] = env.findings("credentials_not_rotated", days=30)
    assert "was last replaced 40 days ago" in finding["detail"]


# --- failed_runs_unattended -------------------------------------------------------------------


def failed_run(env: Env) -> str:
    """A run that failed for good: its http step got a 400."""
    with running_target() as target:
        target.on("/users", Reply(400, {"error": "invalid userName"}))
        workflow_id = publish(
            env.db,
            {
                "name": "Provision CRM",
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "create_user",
                        "type": "http",
                        "config": {"method": "POST", "url": f"{target.url}/users"},
                    }
                ],
            },
        )
        run_id = start(env.db, workflow_id)
        with running_worker(env.db):
            wait_status(env.db, run_id, "failed")
    return run_id


def test_a_failed_run_nobody_attended_to_fails_and_a_replay_passes(env: Env) -> None:
    run_id = failed_run(env)
    assert env.result("failed_runs_unattended")["passed"] is True  # it just failed
    ended = ago(hours=30)
    env.move(Run, run_id, finished_at=ended)
    run = env.row(Run, run_id)
    failure = run.failure
    assert failure["message"]
    assert failure["next_action"]
    assert env.findings("failed_runs_unattended") == [
        {
            "object_type": "run",
            "object_id": run_id,
            "link": f"/api/v1/runs/{run_id}",
            "detail": f"run {run_id} of workflow 'Provision CRM' ended failed 30 hours ago "
            f"({at(ended)}) and was neither retried nor replayed: {failure['message']}; "
            f"next: {failure['next_action']}; retry it (POST /api/v1/runs/{run_id}/retry) or "
            f"replay it (POST /api/v1/runs/{run_id}/replay)",
            "workflow_id": run.workflow_id,
            "status": "failed",
        }
    ]
    with env.db.transaction() as session:
        operations.replay(session, ACTOR, DatabaseQueue(env.db), run_id, latest=False)
    assert env.result("failed_runs_unattended")["passed"] is True


def test_a_retried_run_is_no_longer_failed_and_passes(env: Env) -> None:
    run_id = failed_run(env)
    env.move(Run, run_id, finished_at=ago(hours=30))
    assert env.result("failed_runs_unattended", hours=12)["passed"] is False
    with env.db.transaction() as session:
        operations.retry(session, ACTOR, DatabaseQueue(env.db), run_id)
    assert env.result("failed_runs_unattended", hours=12)["passed"] is True


# --- reconciliation_orphans -------------------------------------------------------------------


ORPHAN = {
    "kind": "orphan",
    "severity": "medium",
    "account_id": "acc-7",
    "user_name": "old.admin",
    "email": "old.admin@example.com",
    "identity_id": None,
    "leaver": False,
    "detail": "no identity matches this account",
}
MISSING = {
    "kind": "missing",
    "severity": "low",
    "account_id": None,
    "user_name": None,
    "identity_id": "someone",
    "leaver": False,
    "detail": "an active grant but no account",
}


def reconciliation(env: Env, app_id: str, status: str, *items: dict[str, Any]) -> str:
    with env.db.transaction() as session:
        report = ReconciliationReport(
            application_id=app_id,
            status=status,
            summary={"orphans": sum(i["kind"] == "orphan" for i in items)},
            items=list(items),
            error=None if status == "completed" else "the target answered 503",
            created_by="test",
        )
        session.add(report)
        session.flush()
        return report.id


def test_an_orphan_in_the_latest_reconciliation_fails_until_a_clean_one(env: Env) -> None:
    app_id = env.application()
    env.application("Wiki")  # never reconciled: nothing to say
    old = reconciliation(env, app_id, "completed", ORPHAN)
    env.move(ReconciliationReport, old, created_at=ago(days=2))
    report_id = reconciliation(env, app_id, "completed", MISSING, ORPHAN)
    created = env.row(ReconciliationReport, report_id).created_at
    assert env.findings("reconciliation_orphans") == [
        {
            "object_type": "account",
            "object_id": "acc-7",
            "link": f"/api/v1/reconciliations/{report_id}",
            "detail": f"account 'old.admin' in 'CRM' is an orphan according to the "
            f"reconciliation of {at(created)} (no identity matches this account); remove the "
            "account in the application, or grant it in Grantflow, then reconcile again",
            "application_id": app_id,
            "report_id": report_id,
            "identity_id": None,
            "severity": "medium",
        }
    ]
    assert ok(env.admin.get(f"{API}/reconciliations/{report_id}"))["id"] == report_id
    # a failed reconciliation says nothing new: the latest completed one still counts
    reconciliation(env, app_id, "failed")
    assert env.result("reconciliation_orphans")["passed"] is False
    reconciliation(env, app_id, "completed", MISSING)
    assert env.result("reconciliation_orphans")["passed"] is True


def test_a_leaver_orphan_says_so(env: Env) -> None:
    app_id = env.application()
    reconciliation(env, app_id, "completed", {**ORPHAN, "leaver": True, "severity": "high"})
    [finding] = env.findings("reconciliation_orphans")
    assert "is an orphan of a person who left according to" in finding["detail"]
    assert finding["severity"] == "high"


# --- notifications ----------------------------------------------------------------------------


def control_notifications(env: Env) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(
        env.admin.get(f"{API}/notifications", params={"kind": "control_failed"})
    )["items"]
    return items


def test_a_newly_failing_control_notifies_once_and_is_resolved_when_it_passes(env: Env) -> None:
    app_id = env.application()
    env.grant(env.identity())
    first = env.evaluate()
    assert first["summary"]["failed_controls"] == ["offboarding_not_covered"]
    assert first["summary"]["newly_failed"] == ["offboarding_not_covered"]
    [note] = control_notifications(env)
    assert note["title"] == "Control failed: Systems offboarding never covers (1 finding(s))"
    assert note["target_type"] == "control_evaluation"
    assert note["target_id"] == first["id"]
    assert note["data"] == {
        "control": "offboarding_not_covered",
        "findings": 1,
        "link": f"/api/v1/controls/evaluations/{first['id']}",
    }
    assert note["body"].startswith("'CRM' has 1 active grant(s)")
    assert note["resolved_at"] is None

    second = env.evaluate()  # still failing: no second notification
    assert second["summary"]["newly_failed"] == []
    [result] = [r for r in second["results"] if r["control"] == "offboarding_not_covered"]
    assert result["previously_passed"] is False
    assert [n["id"] for n in control_notifications(env)] == [note["id"]]

    workflow_id = publish(env.db, revoke_workflow(app_id))
    third = env.evaluate()
    assert third["passed"] is True
    [resolved] = control_notifications(env)
    assert resolved["id"] == note["id"]
    assert resolved["resolved_at"] is not None

    # failing again after passing is news again
    ok(env.admin.post(f"{API}/workflows/{workflow_id}/disable"))
    fourth = env.evaluate("offboarding_not_covered")
    assert fourth["summary"]["newly_failed"] == ["offboarding_not_covered"]
    notes = control_notifications(env)
    assert len(notes) == 2
    assert notes[0]["resolved_at"] is None
    assert notes[0]["target_id"] == fourth["id"]


def test_earlier_evaluations_are_read_without_their_findings(env: Env) -> None:
    """An evaluation learns each control's previous outcome, and the list shows evaluations,
    without reading any evaluation's findings (a megabyte each in a big inventory): the
    outcome comes from the controls an evaluation included and those that failed."""
    env.application()
    env.grant(env.identity())
    env.evaluate("offboarding_not_covered")
    env.evaluate("approvals_pending")  # a later evaluation without it: looked past
    with selects_on(env.db, "control_evaluations") as sent:
        third = env.evaluate()
        listed = ok(env.admin.get(f"{API}/controls/evaluations"))
    [result] = [r for r in third["results"] if r["control"] == "offboarding_not_covered"]
    assert result["previously_passed"] is False
    [approvals] = [r for r in third["results"] if r["control"] == "approvals_pending"]
    assert approvals["previously_passed"] is True
    assert third["summary"]["newly_failed"] == []
    assert listed["items"][0]["id"] == third["id"]
    assert sent
    assert not [q for q, _ in sent if "control_evaluations.results" in q]


def test_an_evaluation_of_other_controls_leaves_a_notification_alone(env: Env) -> None:
    env.application()
    env.grant(env.identity())
    env.evaluate("offboarding_not_covered")
    env.evaluate("leavers_with_active_grants")  # passes; says nothing about offboarding
    [note] = control_notifications(env)
    assert note["resolved_at"] is None


# --- the control_evaluation job ---------------------------------------------------------------


def create_job(env: Env, config: dict[str, Any], name: str = "Nightly controls") -> str:
    with env.db.transaction() as session:
        job = jobs.create_built_in(
            session,
            ACTOR,
            jobs.BuiltInJobCreate(
                name=name, kind="control_evaluation", cron="0 3 * * *", config=config
            ),
        )
        return job.id


def run_now(env: Env, job_id: str) -> tuple[str | None, str | None, str | None]:
    with env.db.transaction() as session:
        occurrence = scheduler.run_now(session, ACTOR, DatabaseQueue(env.db), job_id)
        return occurrence.result_type, occurrence.result_id, occurrence.outcome


def test_the_job_evaluates_its_controls_with_its_params_through_run_now(env: Env) -> None:
    app_id = env.application()
    connection_id = connection(env, app_id)
    set_connection_status(env, connection_id, "unhealthy", "GET / answered 503")
    env.move(Connection, connection_id, status_changed_at=ago(hours=3))
    job_id = create_job(
        env,
        {
            "controls": ["connections_unhealthy", "leavers_with_active_grants"],
            "params": {"connections_unhealthy": {"hours": 2}},
        },
    )
    result_type, evaluation_id, outcome = run_now(env, job_id)
    assert (result_type, outcome) == ("control_evaluation", "failed")
    shown = ok(env.admin.get(f"{API}/controls/evaluations/{evaluation_id}"))
    assert shown["job_id"] == job_id
    assert shown["created_by"] == "system:scheduler"
    assert shown["params"] == {
        "controls": ["connections_unhealthy", "leavers_with_active_grants"],
        "params": {"connections_unhealthy": {"hours": 2}, "leavers_with_active_grants": {}},
    }
    assert [(r["control"], r["passed"]) for r in shown["results"]] == [
        ("connections_unhealthy", False),
        ("leavers_with_active_grants", True),
    ]
    listed = ok(env.admin.get(f"{API}/controls/evaluations", params={"job_id": job_id}))
    assert [e["id"] for e in listed["items"]] == [evaluation_id]

    set_connection_status(env, connection_id, "connected", "")
    result_type, second_id, outcome = run_now(env, job_id)
    assert (result_type, outcome) == ("control_evaluation", "succeeded")
    assert second_id != evaluation_id
    with env.db.transaction() as session:
        assert session.get(ControlEvaluation, second_id) is not None


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"controls": ["no_such_control"]}, "body.config.controls.0"),
        ({"controls": []}, "body.config.controls"),
        (
            {"params": {"approvals_pending": {"weeks": 1}}},
            "body.config.params.approvals_pending.weeks",
        ),
        (
            {"params": {"approvals_pending": {"days": 0}}},
            "body.config.params.approvals_pending.days",
        ),
        (
            {"params": {"approvals_pending": {"days": "7"}}},
            "body.config.params.approvals_pending.days",
        ),
        (
            {"controls": ["approvals_pending"], "params": {"connections_unhealthy": {"hours": 1}}},
            "body.config.params.connections_unhealthy",
        ),
        ({"schedule": "daily"}, "body.config.schedule"),
    ],
)
def test_a_job_with_a_wrong_config_is_refused_naming_the_field(
    env: Env, config: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        create_job(env, config)
    assert caught.value.details[0]["field"] == field
    assert caught.value.message.startswith(f"{field}: ")


# --- validation and permissions ---------------------------------------------------------------


def test_an_evaluation_request_is_validated_naming_the_field(env: Env) -> None:
    url = f"{API}/controls/evaluate"
    refused = error(env.admin.post(url, json={"controls": ["leavers", "approvals_pending"]}), 422)
    assert refused["details"][0]["field"] == "body.controls.0"
    assert "unknown control 'leavers'" in refused["message"]
    refused = error(
        env.admin.post(url, json={"params": {"credentials_not_rotated": {"days": 99999}}}), 422
    )
    assert refused["details"][0]["field"] == "body.params.credentials_not_rotated.days"
    assert "between 1 and 3650 days" in refused["message"]
    refused = error(env.admin.post(url, json={"everything": True}), 422)
    assert refused["details"][0]["field"] == "body.everything"
    # no body at all: every control with its defaults
    assert ok(env.admin.post(url), 201)["summary"]["controls"] == len(CONTROLS)


def test_permissions(env: Env) -> None:
    evaluation = env.evaluate()
    with env.api.as_role(Role.AUDITOR, "auditor@example.com") as auditor:
        # job:read: the catalogue and the evaluations, but evaluating needs job:manage
        assert len(ok(auditor.get(f"{API}/controls"))) == len(CONTROLS)
        assert ok(auditor.get(evaluation["link"]))["id"] == evaluation["id"]
        refused = error(auditor.post(f"{API}/controls/evaluate", json={}), 403)
        assert refused["missing_permission"] == "job:manage"
    with env.api.as_role(Role.OPERATOR, "operator@example.com") as operator:
        assert ok(operator.post(f"{API}/controls/evaluate", json={}), 201)["passed"] is True
    with env.api.client(env.api.user_token("nobody@example.com")) as nobody:
        for path in (
            "/controls",
            "/controls/evaluations",
            f"/controls/evaluations/{evaluation['id']}",
        ):
            assert error(nobody.get(f"{API}{path}"), 403)["missing_permission"] == "job:read"
    assert error(env.admin.get(f"{API}/controls/evaluations/nope"), 404)["code"] == "not_found"


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_the_cli_lists_evaluates_and_shows(env: Env, tmp_path: Path) -> None:
    if env.db.url.get_backend_name() != "sqlite":
        pytest.skip("the CLI is exercised once, on SQLite")
    app_id = env.application()
    env.grant(env.identity())
    environment = grantflow_env(
        database_url=env.db.url.render_as_string(hide_password=False),
        secret_key_file=tmp_path / "secret.key",
    )

    def grantflow(*args: str) -> Any:
        return run_grantflow(*args, env=environment, cwd=tmp_path)

    failing = grantflow("controls", "evaluate", "-c", "offboarding_not_covered", "--json")
    assert failing.returncode == 1, failing.stderr
    shown = json.loads(failing.stdout)
    assert shown["created_by"] == "system:cli"
    [result] = shown["results"]
    assert result["findings"][0]["link"] == f"/api/v1/applications/{app_id}"
    again = json_output(grantflow("controls", "show", "latest", "--json"))
    assert again["id"] == shown["id"]
    refused = grantflow("controls", "evaluate", "-p", "approvals_pending.days=0")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: params.approvals_pending.days: must be between")
    passing = grantflow(
        "controls", "evaluate", "-c", "approvals_pending", "-p", "approvals_pending.days=3"
    )
    assert passing.returncode == 0, passing.stderr
    assert "1 passed, 0 failed" in passing.stdout
