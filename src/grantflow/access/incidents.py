"""Security incidents: a revocation failed, so access that should be gone may still be there.

Raised the moment a revoke run's step fails (even on its first attempt, before retries finish),
resolved by a successful retry of the run or by an admin who attached evidence of a manual
revocation.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access.models import (
    Application,
    EventRun,
    Evidence,
    Identity,
    Incident,
    LifecycleEvent,
)
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.errors import Conflict, NotFound
from grantflow.people.notifications import NotificationKind, notify, resolve
from grantflow.store.base import utcnow
from grantflow.store.pagination import Page, decode_cursor, page_of

REVOKING_EVENTS = ("access_revoked", "identity_left")


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Resolution(enum.StrEnum):
    RETRY_SUCCEEDED = "retry_succeeded"
    EVIDENCE = "evidence"


def _dedup_key(run_id: str) -> str:
    return f"security_incident:{run_id}"


def revocation_failed(
    session: Session, run: Run, step_id: str | None, failure: dict[str, Any]
) -> Incident | None:
    """Raise the incident for a failing revoke run, once per run; None if not a revocation."""
    link = session.get(EventRun, run.id)
    if link is None:
        return None
    event = session.get(LifecycleEvent, link.event_id)
    if event is None or event.kind not in REVOKING_EVENTS:
        return None
    existing = session.execute(
        select(Incident).where(Incident.run_id == run.id, Incident.kind == "revocation_failed")
    ).scalar_one_or_none()
    if existing is not None:
        if existing.status == IncidentStatus.RESOLVED:  # failing again after it was resolved
            existing.status = IncidentStatus.OPEN
            existing.resolved_at = existing.resolved_by = existing.resolution = None
            existing.failure = failure
            _notify(session, existing)
        return existing
    identity = session.get(Identity, event.identity_id) if event.identity_id else None
    app = session.get(Application, event.application_id) if event.application_id else None
    who = "an identity"
    if identity is not None:  # a deleted identity keeps its old email in its attributes
        who = (
            identity.email
            or (identity.attributes or {}).get("deleted_email")
            or (identity.user_name)
        )
    if app is None:  # an identity_left workflow: the system is its workflow's application
        workflow = session.get(Workflow, run.workflow_id)
        if workflow is not None and workflow.application_id:
            app = session.get(Application, workflow.application_id)
    system = app.name if app else f"the systems of workflow run {run.id}"
    incident = Incident(
        kind="revocation_failed",
        status=IncidentStatus.OPEN,
        identity_id=event.identity_id,
        application_id=app.id if app else None,
        grant_id=event.grant_id,
        run_id=run.id,
        step_id=step_id,
        system=system,
        summary=(
            f"revoking {who}'s access in {system} failed at step {step_id!r}: "
            f"{failure.get('message', 'unknown error')}"
        ),
        failure=failure,
        instruction=(
            f"Revoke {who}'s access in {system} by hand now. Then attach evidence of the manual "
            f"revocation to run {run.id} and resolve this incident — or, once {system} is "
            "reachable again, Retry the run: its success resolves the incident."
        ),
    )
    session.add(incident)
    session.flush()
    audit.record(
        session,
        Actor.system("engine"),
        "incident.raised",
        "incident",
        incident.id,
        {"identity": who, "system": system, "run_id": run.id, "step_id": step_id},
    )
    _notify(session, incident)
    return incident


def _notify(session: Session, incident: Incident) -> None:
    notify(
        session,
        NotificationKind.SECURITY_INCIDENT,
        _dedup_key(incident.run_id),
        f"Security incident: {incident.summary}"[:300],
        body=incident.instruction,
        target_type="incident",
        target_id=incident.id,
        run_id=incident.run_id,
        identity_id=incident.identity_id,
        system=incident.system,
    )


def run_succeeded(session: Session, run: Run) -> None:
    """A retried (or replayed) revoke run succeeded: its open incident is resolved by that."""
    runs = [run.id] + ([run.replay_of] if run.replay_of else [])
    for incident in session.execute(
        select(Incident).where(Incident.run_id.in_(runs), Incident.status == IncidentStatus.OPEN)
    ).scalars():
        _close(session, Actor.system("engine"), incident, Resolution.RETRY_SUCCEEDED, None)


def _close(
    session: Session,
    actor: Actor,
    incident: Incident,
    resolution: Resolution,
    comment: str | None,
) -> None:
    incident.status = IncidentStatus.RESOLVED
    incident.resolved_at = utcnow()
    incident.resolved_by = actor.label
    incident.resolution = resolution
    incident.resolution_comment = comment
    resolve(session, _dedup_key(incident.run_id))
    audit.record(
        session,
        actor,
        "incident.resolved",
        "incident",
        incident.id,
        {"resolution": resolution.value, "comment": comment, "run_id": incident.run_id},
    )


def get_incident(session: Session, incident_id: str) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist", target_type="incident")
    return incident


def resolve_incident(session: Session, actor: Actor, incident_id: str, comment: str) -> Incident:
    """By hand: needs evidence (a file) on the run, or the run must have succeeded."""
    actor.require(Permission.INCIDENT_MANAGE)
    incident = get_incident(session, incident_id)
    if incident.status == IncidentStatus.RESOLVED:
        raise Conflict(
            f"incident {incident.id} was already resolved by {incident.resolved_by} "
            f"({incident.resolution})",
            code="already_resolved",
        )
    run = session.get(Run, incident.run_id)
    if run is not None and run.status == RunStatus.SUCCEEDED:
        _close(session, actor, incident, Resolution.RETRY_SUCCEEDED, comment or None)
        return incident
    files = session.execute(
        select(func.count())
        .select_from(Evidence)
        .where(Evidence.run_id == incident.run_id, Evidence.kind == "file")
    ).scalar_one()
    if not files:
        raise Conflict(
            f"incident {incident.id} cannot be resolved yet: run {incident.run_id} has no "
            "evidence file and has not succeeded",
            next_action=(
                f"attach evidence of the manual revocation to run {incident.run_id} "
                f"(POST /api/v1/runs/{incident.run_id}/evidence, or `grantflow runs evidence "
                f"add {incident.run_id} FILE`), or Retry the run once the system is back"
            ),
            code="evidence_required",
        )
    _close(session, actor, incident, Resolution.EVIDENCE, comment or None)
    return incident


def list_incidents(
    session: Session,
    *,
    status: IncidentStatus | None = None,
    identity_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Incident]:
    stmt = select(Incident)
    if status:
        stmt = stmt.where(Incident.status == status)
    if identity_id:
        stmt = stmt.where(Incident.identity_id == identity_id)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Incident.id < after)
    rows = session.execute(stmt.order_by(Incident.id.desc()).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda i: i.id)
