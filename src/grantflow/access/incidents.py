"""Security incidents: a revocation failed, so access that should be gone may still be there.

Raised the moment a revoke run's step fails (even on its first attempt, before retries finish),
resolved by a successful retry of the run or by an admin who attached evidence of a manual
revocation. Raised too, without a run, the moment a leaver's grant is revoked in an application
that no revoke or offboarding workflow covers; an admin resolves that with a comment saying how
the access was removed by hand.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow import advice, audit
from grantflow.access.models import (
    Application,
    EventRun,
    Evidence,
    Grant,
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
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of

REVOKING_EVENTS = ("access_revoked", "identity_left")


class IncidentStatus(enum.StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class IncidentKind(enum.StrEnum):
    REVOCATION_FAILED = "revocation_failed"  # a step of a revoke run failed
    REVOCATION_NOT_AUTOMATED = "revocation_not_automated"  # a leaver's access no workflow removes


class Resolution(enum.StrEnum):
    RETRY_SUCCEEDED = "retry_succeeded"
    EVIDENCE = "evidence"
    MANUAL = "manual"  # by hand, with a comment: a run-less incident has no run to hold evidence


def _dedup_key(incident: Incident) -> str:
    if incident.run_id is None:
        return f"security_incident:grant:{incident.grant_id}"
    return f"security_incident:{incident.run_id}"


def _who(identity: Identity | None) -> str:
    if identity is None:
        return "an identity"
    # a deleted identity keeps its old email in its attributes
    return identity.email or (identity.attributes or {}).get("deleted_email") or identity.user_name


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
        # A person resolved it by hand with evidence that the access is gone: that stands,
        # whatever the run's remaining retries do (only the run's own success resolves it
        # otherwise, and a succeeded run never fails again).
        return existing
    identity = session.get(Identity, event.identity_id) if event.identity_id else None
    app = session.get(Application, event.application_id) if event.application_id else None
    who = _who(identity)
    if app is None:  # an identity_left workflow: the system is its workflow's application
        workflow = session.get(Workflow, run.workflow_id)
        if workflow is not None and workflow.application_id:
            app = session.get(Application, workflow.application_id)
    system = app.name if app else f"the systems of workflow run {run.id}"
    incident = Incident(
        kind=IncidentKind.REVOCATION_FAILED,
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
    _raised(session, Actor.system("engine"), incident, who)
    return incident


def _raised(session: Session, actor: Actor, incident: Incident, who: str) -> None:
    session.add(incident)
    session.flush()
    audit.record(
        session,
        actor,
        "incident.raised",
        "incident",
        incident.id,
        {
            "kind": incident.kind,
            "identity": who,
            "system": incident.system,
            "run_id": incident.run_id,
            "step_id": incident.step_id,
            "grant_id": incident.grant_id,
        },
    )
    _notify(session, incident)


def offboarding_not_covered(
    session: Session, identity: Identity, revoked: list[Grant], left: LifecycleEvent
) -> list[Incident]:
    """At the moment a leaver's grants are revoked: one incident per grant whose application
    no run revokes — neither an access_revoked run of its own event nor an identity_left run of
    a global workflow or one of that application. Nothing else would remove the account."""
    started = [d["workflow_id"] for d in left.dispatch if "run_id" in d]
    # the applications of the identity_left runs; None: a global one, which covers every system
    offboarding_apps = set(
        session.execute(select(Workflow.application_id).where(Workflow.id.in_(started))).scalars()
    )
    if None in offboarding_apps:
        return []
    raised = []
    who = _who(identity)
    for grant in revoked:
        if grant.application_id in offboarding_apps:
            continue
        event = session.execute(
            select(LifecycleEvent)
            .where(LifecycleEvent.grant_id == grant.id, LifecycleEvent.kind == "access_revoked")
            .order_by(LifecycleEvent.created_at.desc(), LifecycleEvent.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if event is None or any("run_id" in d for d in event.dispatch):
            continue
        app = session.get(Application, grant.application_id)
        system = app.name if app else f"application {grant.application_id}"
        what = f"{system} as {grant.role!r}" if grant.role else system
        why = event.no_run_reason or "no workflow started a run"
        incident = Incident(
            kind=IncidentKind.REVOCATION_NOT_AUTOMATED,
            status=IncidentStatus.OPEN,
            identity_id=identity.id,
            application_id=grant.application_id,
            grant_id=grant.id,
            run_id=None,
            step_id=None,
            system=system,
            summary=(
                f"{who} left, but no revoke or offboarding workflow covers {system}: their "
                f"access to {what} (grant {grant.id}) is not removed there ({why})"
            ),
            failure={"class": "configuration", "code": "revocation_not_automated", "message": why},
            instruction=(
                f"Revoke {who}'s access in {system} by hand now, then resolve this incident "
                "with a comment saying how it was removed (e.g. the ticket). So that offboarding "
                f"removes it next time, publish and enable an access_revoked workflow for {system}."
            ),
        )
        _raised(session, Actor.system("lifecycle"), incident, who)
        raised.append(incident)
    return raised


def _notify(session: Session, incident: Incident) -> None:
    notify(
        session,
        NotificationKind.SECURITY_INCIDENT,
        _dedup_key(incident),
        f"Security incident: {incident.summary}"[:300],
        body=incident.instruction,
        target_type="incident",
        target_id=incident.id,
        run_id=incident.run_id,
        identity_id=incident.identity_id,
        grant_id=incident.grant_id,
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
    resolve(session, _dedup_key(incident))
    audit.record(
        session,
        actor,
        "incident.resolved",
        "incident",
        incident.id,
        {"resolution": resolution.value, "comment": comment, "run_id": incident.run_id},
    )


def get_incident(session: Session, incident_id: str) -> Incident:
    incident = session.get(Incident, incident_id) or by_prefix(
        session, Incident, incident_id, "incident"
    )
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist", target_type="incident")
    return incident


def resolve_incident(session: Session, actor: Actor, incident_id: str, comment: str) -> Incident:
    """By hand: needs evidence (a file) on the run, or the run must have succeeded; an incident
    with no run (nothing revoked the access) needs a comment saying how it was removed."""
    actor.require(Permission.INCIDENT_MANAGE)
    incident = get_incident(session, incident_id)
    if incident.status == IncidentStatus.RESOLVED:
        raise Conflict(
            f"incident {incident.id} was already resolved by {incident.resolved_by} "
            f"({incident.resolution})",
            code="already_resolved",
        )
    if incident.run_id is None:
        if not comment:
            advised = advice.advise(
                "comment_required",
                hint=(
                    f'POST /api/v1/incidents/{incident.id}/resolve {{"comment": "..."}}, '
                    f"or `grantflow incidents resolve {incident.id} --comment TEXT`"
                ),
            )
            raise Conflict(
                f"incident {incident.id} cannot be resolved without a comment: no run revoked "
                f"the access in {incident.system}, so the comment is the record of how it was "
                "removed by hand",
                next_action=advised["next_action"],
                code="comment_required",
                action=advice.render(advised["operation"], incident_id=incident.id),
            )
        _close(session, actor, incident, Resolution.MANUAL, comment)
        return incident
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
