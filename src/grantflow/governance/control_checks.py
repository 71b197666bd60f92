"""The built-in controls (the catalogue): what each one checks over Grantflow's own inventory —
identities, grants, workflows, connections, credentials, approvals, runs and reconciliation
reports — and its parameters, with their defaults and bounds.

A check returns its findings; each finding names the object to fix (`object_type`,
`object_id`), links to it in the API (`link`) and says in plain words what is wrong and what to
do (`detail`). Evaluating controls, storing and notifying is `controls`' job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from grantflow.access.grants import GrantStatus
from grantflow.access.lifecycle import EventKind, LifecycleState
from grantflow.access.models import (
    Application,
    Grant,
    Identity,
    Incident,
    ReconciliationReport,
)
from grantflow.connections.models import Connection, ConnectionStatus, Credential
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.people.models import Task

API = "/api/v1"

Finding = dict[str, Any]


@dataclass(frozen=True)
class Param:
    name: str
    default: int
    minimum: int
    maximum: int
    unit: str
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "unit": self.unit,
            "description": self.description,
        }


Check = Callable[[Session, dt.datetime, dict[str, int]], list[Finding]]


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    description: str
    check: Check
    params: tuple[Param, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "params": [p.as_dict() for p in self.params],
        }


# --- words ------------------------------------------------------------------------------------


def _at(when: dt.datetime) -> str:
    return f"{when.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"


def _ago(now: dt.datetime, when: dt.datetime) -> str:
    seconds = max((now - when).total_seconds(), 0)
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{int(seconds // 60)} minutes"


def identity_label(identity: Identity | None) -> str:
    if identity is None:
        return "an unknown identity"
    attributes = identity.attributes or {}
    if identity.deleted_at is not None:
        # deletion frees the email and userName (kept in attributes) for a rehire
        return str(
            attributes.get("deleted_email")
            or attributes.get("deleted_user_name")
            or identity.email
            or identity.user_name
        )
    return identity.email or identity.user_name


def _access(app: Application | None, role: str) -> str:
    name = f"{app.name!r}" if app else "an unknown application"
    return name + (f" as {role!r}" if role else "")


def _finding(object_type: str, object_id: str, link: str, detail: str, **extra: Any) -> Finding:
    return {
        "object_type": object_type,
        "object_id": object_id,
        "link": link,
        "detail": detail,
        **extra,
    }


# --- the controls -----------------------------------------------------------------------------

_LEFT = (LifecycleState.LEAVER.value, LifecycleState.LEFT.value)


def leavers_with_active_grants(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    rows = session.execute(
        select(Grant, Identity, Application)
        .join(Identity, Identity.id == Grant.identity_id)
        .join(Application, Application.id == Grant.application_id)
        .where(
            Grant.status == GrantStatus.ACTIVE,
            or_(Identity.lifecycle_state.in_(_LEFT), Identity.deleted_at.is_not(None)),
        )
        .order_by(Grant.id)
    ).all()
    findings = []
    for grant, identity, app in rows:
        state = (
            "was deleted"
            if identity.deleted_at is not None
            else f"has left (lifecycle state {identity.lifecycle_state})"
        )
        findings.append(
            _finding(
                "grant",
                grant.id,
                f"{API}/grants/{grant.id}",
                f"{identity_label(identity)} {state} but still has active access to "
                f"{_access(app, grant.role)} (granted {_at(grant.granted_at)} by "
                f"{grant.granted_by}): revoke the grant (POST {API}/grants/{grant.id}/revoke)",
                identity_id=identity.id,
                application_id=app.id,
            )
        )
    return findings


def expired_grants_not_revoked(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    cutoff = now - dt.timedelta(minutes=params["grace_minutes"])
    rows = session.execute(
        select(Grant, Identity, Application)
        .join(Identity, Identity.id == Grant.identity_id)
        .join(Application, Application.id == Grant.application_id)
        .where(Grant.status == GrantStatus.ACTIVE, Grant.expires_at < cutoff)
        .order_by(Grant.expires_at, Grant.id)
    ).all()
    findings = []
    for grant, identity, app in rows:
        assert grant.expires_at is not None
        findings.append(
            _finding(
                "grant",
                grant.id,
                f"{API}/grants/{grant.id}",
                f"the grant of {_access(app, grant.role)} to {identity_label(identity)} expired at "
                f"{_at(grant.expires_at)} ({_ago(now, grant.expires_at)} ago) and is still "
                "active: expiry is enforced by the workers' timer — check that a worker is "
                "running (`grantflow worker` or `grantflow serve`), or revoke the grant "
                f"(POST {API}/grants/{grant.id}/revoke)",
                identity_id=identity.id,
                application_id=app.id,
            )
        )
    return findings


def _dispatching(*conditions: Any) -> Any:
    return exists().where(
        Workflow.enabled.is_(True), Workflow.active_version.is_not(None), *conditions
    )


def offboarding_not_covered(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    counts = dict(
        session.execute(
            select(Grant.application_id, func.count())
            .where(Grant.status == GrantStatus.ACTIVE)
            .group_by(Grant.application_id)
        ).all()
    )
    if not counts:
        return []
    covered_globally = session.execute(
        select(
            _dispatching(
                Workflow.trigger_type == EventKind.IDENTITY_LEFT.value,
                Workflow.application_id.is_(None),
            )
        )
    ).scalar_one()
    if covered_globally:
        return []
    findings = []
    apps = session.execute(
        select(Application).where(Application.id.in_(list(counts))).order_by(Application.name)
    ).scalars()
    for app in apps:
        covered = session.execute(
            select(
                _dispatching(
                    Workflow.application_id == app.id,
                    Workflow.trigger_type.in_(
                        [EventKind.ACCESS_REVOKED.value, EventKind.IDENTITY_LEFT.value]
                    ),
                )
            )
        ).scalar_one()
        if covered:
            continue
        idle = [
            f"{w.name!r} is "
            + ("disabled" if not w.enabled else "not published (no active version)")
            for w in session.execute(
                select(Workflow)
                .where(
                    Workflow.application_id == app.id,
                    Workflow.trigger_type == EventKind.ACCESS_REVOKED.value,
                )
                .order_by(Workflow.name)
            ).scalars()
        ]
        findings.append(
            _finding(
                "application",
                app.id,
                f"{API}/applications/{app.id}",
                f"{app.name!r} has {counts[app.id]} active grant(s) but no enabled "
                "access_revoked workflow with an active version, and there is no global "
                "identity_left workflow: revoking access or offboarding a leaver never "
                "removes the account there"
                + (f" (workflow {'; '.join(idle)})" if idle else "")
                + ": publish and enable a revoke workflow for it",
                application_id=app.id,
                active_grants=counts[app.id],
            )
        )
    return findings


def connections_unhealthy(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    cutoff = now - dt.timedelta(hours=params["hours"])
    rows = session.execute(
        select(Connection, Application)
        .join(Application, Application.id == Connection.application_id)
        .where(
            Connection.enabled.is_(True),
            Connection.status.in_(
                [ConnectionStatus.UNHEALTHY.value, ConnectionStatus.REAUTH_REQUIRED.value]
            ),
            Connection.status_changed_at <= cutoff,
        )
        .order_by(Connection.status_changed_at, Connection.id)
    ).all()
    findings = []
    for connection, app in rows:
        fix = (
            f"replace its credential (PUT {API}/connections/{connection.id}/credential)"
            if connection.status == ConnectionStatus.REAUTH_REQUIRED
            else f"fix it and run Test connection (POST {API}/connections/{connection.id}/test)"
        )
        findings.append(
            _finding(
                "connection",
                connection.id,
                f"{API}/connections/{connection.id}",
                f"connection {connection.name!r} of {app.name!r} has been {connection.status} "
                f"since {_at(connection.status_changed_at)} "
                f"({_ago(now, connection.status_changed_at)})"
                + (f": {connection.status_reason}" if connection.status_reason else "")
                + f"; {fix}",
                application_id=app.id,
                status=connection.status,
            )
        )
    return findings


def approvals_pending(session: Session, now: dt.datetime, params: dict[str, int]) -> list[Finding]:
    cutoff = now - dt.timedelta(days=params["days"])
    rows = session.execute(
        select(Task, Workflow)
        .join(Workflow, Workflow.id == Task.workflow_id, isouter=True)
        .where(Task.kind == "approval", Task.status == "pending", Task.created_at <= cutoff)
        .order_by(Task.created_at, Task.id)
    ).all()
    findings = []
    for task, workflow in rows:
        name = f"workflow {workflow.name!r}" if workflow else f"workflow {task.workflow_id}"
        findings.append(
            _finding(
                "task",
                task.id,
                f"{API}/tasks/{task.id}",
                f"approval {task.title!r} ({name}, run {task.run_id}) has been pending for "
                f"{_ago(now, task.created_at)}, since {_at(task.created_at)}"
                + (f"; {task.routing_problem}" if task.routing_problem else "")
                + ": remind or reassign its approvers, or decide it",
                run_id=task.run_id,
                workflow_id=task.workflow_id,
            )
        )
    return findings


def credentials_not_rotated(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    cutoff = now - dt.timedelta(days=params["days"])
    last_set = func.coalesce(Credential.replaced_at, Credential.created_at)
    rows = session.execute(
        select(Credential, Connection, Application)
        .join(Connection, Connection.id == Credential.connection_id)
        .join(Application, Application.id == Connection.application_id)
        .where(last_set <= cutoff)
        .order_by(last_set, Credential.id)
    ).all()
    findings = []
    for credential, connection, app in rows:
        when = credential.replaced_at or credential.created_at
        verb = "replaced" if credential.replaced_at else "set"
        findings.append(
            _finding(
                "connection",
                connection.id,
                f"{API}/connections/{connection.id}",
                f"the credential of connection {connection.name!r} of {app.name!r} was last "
                f"{verb} {_ago(now, when)} ago ({_at(when)}), more than {params['days']} days: "
                f"rotate it (PUT {API}/connections/{connection.id}/credential)",
                application_id=app.id,
                credential_id=credential.id,
            )
        )
    return findings


def failed_runs_unattended(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    cutoff = now - dt.timedelta(hours=params["hours"])
    replay = aliased(Run)
    ended = func.coalesce(Run.finished_at, Run.last_progress_at)
    rows = session.execute(
        select(Run, Workflow)
        .join(Workflow, Workflow.id == Run.workflow_id)
        .where(
            Run.status.in_([RunStatus.FAILED.value, RunStatus.TIMED_OUT.value]),
            ended <= cutoff,
            ~exists().where(replay.replay_of == Run.id),
            ~exists().where(Incident.run_id == Run.id, Incident.status == "resolved"),
        )
        .order_by(ended, Run.id)
    ).all()
    findings = []
    for run, workflow in rows:
        when = run.finished_at or run.last_progress_at
        failure = run.failure or {}
        why = failure.get("message")
        fix = failure.get("next_action")
        findings.append(
            _finding(
                "run",
                run.id,
                f"{API}/runs/{run.id}",
                f"run {run.id} of workflow {workflow.name!r} ended {run.status} "
                f"{_ago(now, when)} ago ({_at(when)}) and was neither retried nor replayed"
                + (f": {why}" if why else "")
                + (f"; next: {fix}" if fix else "")
                + f"; retry it (POST {API}/runs/{run.id}/retry) or replay it "
                f"(POST {API}/runs/{run.id}/replay)",
                workflow_id=workflow.id,
                status=run.status,
            )
        )
    return findings


def reconciliation_orphans(
    session: Session, now: dt.datetime, params: dict[str, int]
) -> list[Finding]:
    findings = []
    app_ids = session.execute(
        select(ReconciliationReport.application_id)
        .where(ReconciliationReport.status == "completed")
        .distinct()
    ).scalars()
    apps = {
        a.id: a
        for a in session.execute(
            select(Application).where(Application.id.in_(list(app_ids)))
        ).scalars()
    }
    for app in sorted(apps.values(), key=lambda a: a.name.lower()):
        report = session.execute(
            select(ReconciliationReport)
            .where(
                ReconciliationReport.application_id == app.id,
                ReconciliationReport.status == "completed",
            )
            .order_by(ReconciliationReport.created_at.desc(), ReconciliationReport.id.desc())
            .limit(1)
        ).scalar_one()
        for item in report.items or []:
            if item.get("kind") != "orphan":
                continue
            account = item.get("user_name") or item.get("email") or item.get("account_id")
            findings.append(
                _finding(
                    "account",
                    str(item.get("account_id") or ""),
                    f"{API}/reconciliations/{report.id}",
                    f"account {account!r} in {app.name!r} is an orphan"
                    + (" of a person who left" if item.get("leaver") else "")
                    + f" according to the reconciliation of {_at(report.created_at)}"
                    + (f" ({item['detail']})" if item.get("detail") else "")
                    + "; remove the account in the application, or grant it in Grantflow, "
                    "then reconcile again",
                    application_id=app.id,
                    report_id=report.id,
                    identity_id=item.get("identity_id"),
                    severity=item.get("severity"),
                )
            )
    return findings


CONTROLS: tuple[Control, ...] = (
    Control(
        "leavers_with_active_grants",
        "Leavers still have access",
        "Identities that left (lifecycle state leaver or left) or were deleted and still have "
        "active grants.",
        leavers_with_active_grants,
    ),
    Control(
        "expired_grants_not_revoked",
        "Expired grants not revoked",
        "Active grants whose expiry passed more than a grace period ago: the expiry timer is "
        "not running.",
        expired_grants_not_revoked,
        (Param("grace_minutes", 60, 0, 10080, "minutes", "how late a revocation may be"),),
    ),
    Control(
        "offboarding_not_covered",
        "Systems offboarding never covers",
        "Applications with active grants but no enabled access_revoked workflow with an "
        "active version, while no global identity_left workflow exists either.",
        offboarding_not_covered,
    ),
    Control(
        "connections_unhealthy",
        "Connections unhealthy for too long",
        "Enabled connections that have been unhealthy or reauth_required for longer than the "
        "given hours.",
        connections_unhealthy,
        (Param("hours", 24, 1, 8760, "hours", "how long a connection may stay unhealthy"),),
    ),
    Control(
        "approvals_pending",
        "Approvals pending for too long",
        "Approvals still pending after the given number of days.",
        approvals_pending,
        (Param("days", 7, 1, 365, "days", "how long an approval may wait"),),
    ),
    Control(
        "credentials_not_rotated",
        "Credentials not rotated",
        "Connection credentials not set or replaced within the given number of days.",
        credentials_not_rotated,
        (Param("days", 90, 1, 3650, "days", "the rotation period"),),
    ),
    Control(
        "failed_runs_unattended",
        "Failed runs nobody attended to",
        "Runs that failed or timed out longer ago than the given hours and were neither "
        "retried nor replayed since (runs whose security incident was resolved excepted).",
        failed_runs_unattended,
        (Param("hours", 24, 1, 8760, "hours", "how long a failed run may wait for someone"),),
    ),
    Control(
        "reconciliation_orphans",
        "Orphan accounts found by reconciliation",
        "Accounts nobody is granted, in the latest completed reconciliation report of each "
        "application.",
        reconciliation_orphans,
    ),
)
BY_ID = {c.id: c for c in CONTROLS}


def catalogue() -> list[dict[str, Any]]:
    return [c.as_dict() for c in CONTROLS]
