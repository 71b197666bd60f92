"""Grants: identity x application (x role). Granting and revoking start the application's
workflows; the grant itself never waits for them and is never rolled back by them."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow import advice, audit
from grantflow.access import lifecycle, snapshots
from grantflow.access.applications import find_application, get_application
from grantflow.access.automation import latest_of_each
from grantflow.access.identity_lookup import find_identity
from grantflow.access.lifecycle import EventKind
from grantflow.access.models import Application, EventRun, Grant, Identity, LifecycleEvent
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.engine.states import RunStatus
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow
from grantflow.store.database import database_of
from grantflow.store.ids import by_prefix
from grantflow.strict import AwareTimestamp


class GrantStatus(enum.StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class RevokeReason(enum.StrEnum):
    MANUAL = "manual"
    EXPIRED = "expired"
    IDENTITY_LEFT = "identity_left"
    REVIEW = "review"


Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
RoleName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class GrantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: str = Field(..., min_length=1, description="identity id, email or userName")
    application: str = Field(..., min_length=1, description="application id or name")
    role: RoleName = Field("", description="role or entitlement; empty for the app itself")
    justification: Text = ""
    expires_at: AwareTimestamp | None = Field(None, description="revoked automatically then")


class GrantRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Text = ""


class GrantExtend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_at: AwareTimestamp | None = Field(..., description="new expiry; null = never")
    comment: Text = ""


def get_grant(session: Session, grant_id: str) -> Grant:
    grant = session.get(Grant, grant_id) or by_prefix(session, Grant, grant_id, "grant")
    if grant is None:
        raise NotFound(f"grant {grant_id} does not exist", target_type="grant", target_id=grant_id)
    return grant


def _future(field_name: str, when: dt.datetime | None) -> dt.datetime | None:
    if when is not None and when <= utcnow():
        raise ValidationError(
            f"{field_name}: must be in the future",
            details=[{"field": f"body.{field_name}", "message": "must be in the future"}],
        )
    # kept (and so answered at once) in UTC, as it reads back from the database
    return when.astimezone(dt.UTC) if when is not None else None


def create_grant(session: Session, actor: Actor, queue: Queue, data: GrantCreate) -> Grant:
    actor.require(Permission.GRANT_WRITE)
    identity = find_identity(session, data.identity, field="identity")
    try:
        app = find_application(session, data.application)
    except NotFound as exc:  # name the field, as a missing identity does
        raise NotFound(
            f"application: {exc.message}",
            target_type="application",
            details=[{"field": "body.application", "message": "no such application"}],
        ) from None
    if not identity.active or identity.deleted_at is not None:
        raise Conflict(
            f"identity {identity.email or identity.user_name} is not active "
            f"(lifecycle state {identity.lifecycle_state}); it cannot get new access",
            next_action="reactivate the identity first",
            code="identity_inactive",
        )
    _check_not_granted(session, identity, app, data.role)
    grant = Grant(
        identity_id=identity.id,
        application_id=app.id,
        role=data.role,
        justification=data.justification,
        status=GrantStatus.ACTIVE,
        expires_at=_future("expires_at", data.expires_at),
        granted_by=actor.label,
        granted_at=utcnow(),
    )
    try:
        # (added inside the savepoint: begin_nested() flushes what is pending before the
        # SAVEPOINT exists, so a clash there would undo the whole transaction)
        with session.begin_nested():
            session.add(grant)
            session.flush()
    except IntegrityError as exc:  # a concurrent grant of the same access won the race
        if not database_of(session).is_unique_violation(exc):
            raise
        _check_not_granted(session, identity, app, data.role)
        raise
    audit.record(
        session,
        actor,
        "grant.created",
        "grant",
        grant.id,
        {
            "identity": identity.email or identity.user_name,
            "application": app.name,
            "role": data.role or None,
            "expires_at": grant.expires_at,
            "justification": data.justification or None,
        },
    )
    lifecycle.emit(session, actor, queue, EventKind.ACCESS_GRANTED, identity, grant=grant, app=app)
    return grant


def _check_not_granted(session: Session, identity: Identity, app: Application, role: str) -> None:
    existing = session.execute(
        select(Grant).where(
            Grant.identity_id == identity.id,
            Grant.application_id == app.id,
            Grant.role == role,
            Grant.status == GrantStatus.ACTIVE,
        )
    ).scalar_one_or_none()
    if existing is not None:
        what = f"{app.name!r}" + (f" as {role!r}" if role else "")
        raise Conflict(
            f"{identity.email or identity.user_name} already has active access to {what}: "
            f"grant {existing.id}",
            next_action="use the existing grant (extend its expiry if needed)",
            code="already_granted",
            existing_grant_id=existing.id,
        )


def revoke_grant(
    session: Session,
    actor: Actor,
    queue: Queue,
    grant_id: str,
    *,
    reason: RevokeReason = RevokeReason.MANUAL,
    comment: str = "",
    offboarding: bool = False,
) -> Grant:
    actor.require(Permission.GRANT_WRITE)
    grant = session.get(Grant, grant_id, with_for_update=True)
    if grant is None:
        raise NotFound(f"grant {grant_id} does not exist", target_type="grant", target_id=grant_id)
    return revoke_locked(
        session, actor, queue, grant, reason=reason, comment=comment, offboarding=offboarding
    )


def revoke_locked(
    session: Session,
    actor: Actor,
    queue: Queue,
    grant: Grant,
    *,
    reason: RevokeReason = RevokeReason.MANUAL,
    comment: str = "",
    offboarding: bool = False,
) -> Grant:
    """Revoke a grant the caller has read FOR UPDATE (a batch locks its grants at once)."""
    actor.require(Permission.GRANT_WRITE)
    if grant.status == GrantStatus.REVOKED:
        raise Conflict(
            f"grant {grant.id} was already revoked at {grant.revoked_at:%Y-%m-%d %H:%M:%S}Z "
            f"by {grant.revoked_by} ({grant.revoke_reason})",
            code="already_revoked",
        )
    grant.status = GrantStatus.REVOKED
    grant.revoked_at = utcnow()
    grant.revoked_by = actor.label
    grant.revoke_reason = reason
    grant.revoke_comment = comment or None
    session.flush()
    identity = session.get(Identity, grant.identity_id)
    app = get_application(session, grant.application_id)
    assert identity is not None
    audit.record(
        session,
        actor,
        "grant.revoked",
        "grant",
        grant.id,
        {
            "identity": identity.email or identity.user_name,
            "application": app.name,
            "role": grant.role or None,
            "reason": reason.value,
            "comment": comment or None,
        },
    )
    lifecycle.emit(
        session,
        actor,
        queue,
        EventKind.ACCESS_REVOKED,
        identity,
        grant=grant,
        app=app,
        offboarding=offboarding,
        details={"reason": reason.value},
    )
    return grant


def extend_grant(session: Session, actor: Actor, grant_id: str, data: GrantExtend) -> Grant:
    actor.require(Permission.GRANT_WRITE)
    grant = get_grant(session, grant_id)
    if grant.status != GrantStatus.ACTIVE:
        raise Conflict(f"grant {grant.id} is revoked; its expiry cannot change", code="revoked")
    new = _future("expires_at", data.expires_at)
    old = grant.expires_at
    if old != new:
        grant.expires_at = new
        audit.record(
            session,
            actor,
            "grant.expiry_changed",
            "grant",
            grant.id,
            {"from": old, "to": new, "comment": data.comment or None},
        )
    return grant


def expire_due(session: Session, queue: Queue, now: dt.datetime | None = None) -> list[str]:
    """Revoke every active grant whose expiry has passed (the durable timer: run by workers)."""
    now = now or utcnow()
    due = session.execute(
        select(Grant.id)
        .where(Grant.status == GrantStatus.ACTIVE, Grant.expires_at <= now)
        .order_by(Grant.expires_at)
        .limit(200)
        .with_for_update(skip_locked=True)
    ).scalars()
    expired = []
    with lifecycle.same_workflows(session), snapshots.same_groups(session):
        for grant_id in list(due):
            revoke_grant(
                session,
                Actor.system("expiry"),
                queue,
                grant_id,
                reason=RevokeReason.EXPIRED,
                comment="the grant's expiry passed",
            )
            expired.append(grant_id)
    return expired


@dataclass
class Dispatched:
    """What a dispatch did: the event it recorded, the runs it started, the workflows it did not
    start (each with why and what makes it start)."""

    grant: Grant
    event: LifecycleEvent
    started: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def dispatch_grant(session: Session, actor: Actor, queue: Queue, grant_id: str) -> Dispatched:
    """Start the grant's access_granted workflows again, as granting it did: for a grant made
    while its workflow was disabled or unpublished, or to redo its runs (e.g. after a refused
    replay). Refused with the reason and the action that works when nothing would start."""
    # grant:write, as creating the grant: dispatching re-plays the grant itself (its runs act on
    # the target system as that identity's access), which run:operate holders may not decide.
    actor.require(Permission.GRANT_WRITE)
    grant = session.get(Grant, grant_id, with_for_update=True)
    if grant is None:
        raise NotFound(f"grant {grant_id} does not exist", target_type="grant", target_id=grant_id)
    identity = session.get(Identity, grant.identity_id)
    app = get_application(session, grant.application_id)
    assert identity is not None
    who = identity.email or identity.user_name
    if grant.status == GrantStatus.REVOKED:
        raise _refused(
            "grant_revoked",
            f"grant {grant.id} was revoked at {grant.revoked_at:%Y-%m-%d %H:%M:%S}Z; a revoked "
            "grant starts no workflows",
            f"POST /api/v1/grants, or `grantflow grants grant --identity {who} --application "
            f"{app.name!r}`",
            identity=who,
            application=repr(app.name),
        )
    _refuse_in_flight(session, grant)
    considered = [
        (w, lifecycle.why_not(w, EventKind.ACCESS_GRANTED))
        for w in lifecycle.candidates(session, EventKind.ACCESS_GRANTED, app)
        if w.trigger_type == EventKind.ACCESS_GRANTED
    ]
    if not considered:
        raise _refused(
            "no_workflow",
            f"no workflow with trigger access_granted exists for application {app.name!r}; "
            f"grant {grant.id} has nothing to start",
            repr(app.name),
        )
    blocked = [(w, b) for w, b in considered if b is not None]
    if len(blocked) == len(considered):
        disabled = [w for w, _ in blocked if not w.enabled]
        raise _refused(
            "workflow_disabled" if len(disabled) == len(blocked) else "no_active_version",
            f"no workflow of {app.name!r} would start a run for grant {grant.id}: "
            + "; ".join(f"workflow {w.name!r}: {b[0]}" for w, b in blocked),
            "; ".join(f"workflow {w.name!r}: {b[1]}" for w, b in blocked),
            workflow_id=disabled[0].id if disabled else None,
        )
    event = lifecycle.emit(
        session,
        actor,
        queue,
        EventKind.ACCESS_GRANTED,
        identity,
        grant=grant,
        app=app,
        details={"dispatched": True},
    )
    started = [
        {k: d[k] for k in ("run_id", "workflow_id", "workflow_name")}
        for d in event.dispatch
        if "run_id" in d
    ]
    held = {w.id for w, _ in blocked}
    skipped = [d for d in event.dispatch if d["workflow_id"] in held]
    audit.record(
        session,
        actor,
        "grant.dispatched",
        "grant",
        grant.id,
        {
            "identity": who,
            "application": app.name,
            "event_id": event.id,
            "runs": [r["run_id"] for r in started],
            "skipped": [d["workflow_name"] for d in skipped] or None,
        },
    )
    return Dispatched(grant, event, started, skipped)


def _refuse_in_flight(session: Session, grant: Grant) -> None:
    """One run per workflow at a time: a second one would act on the same account twice."""
    run_ids = list(
        session.execute(select(EventRun.run_id).where(EventRun.grant_id == grant.id)).scalars()
    )
    busy = [r for r in latest_of_each(session, run_ids) if not RunStatus(r.status).terminal]
    if busy:
        named = ", ".join(f"run {r.id} ({r.status})" for r in busy)
        raise _refused(
            "run_in_flight",
            f"grant {grant.id} already has a run in flight: {named}",
            f"POST /api/v1/runs/{busy[0].id}/cancel",
            run_id=busy[0].id,
            run_ids=[r.id for r in busy],
        )


def _refused(code: str, message: str, hint: str, **extra: Any) -> Conflict:
    """A dispatch refusal with its advice from the table (`dispatch.<code>`): the words and
    the rendered action (the ids its operation needs come from `extra`)."""
    advised = advice.advise(f"dispatch.{code}", hint=hint)
    keys = ("identity", "application", "workflow_id", "run_id")
    ids = {k: extra.pop(k) for k in keys if k in extra}
    return Conflict(
        message,
        next_action=advised["next_action"],
        code=code,
        action=advice.render(advised["operation"], **ids),
        **extra,
    )


def events_of(session: Session, grant_id: str) -> list[LifecycleEvent]:
    return list(
        session.execute(
            select(LifecycleEvent)
            .where(LifecycleEvent.grant_id == grant_id)
            .order_by(LifecycleEvent.id)
        ).scalars()
    )


def active_grants_of(session: Session, identity_id: str) -> list[Grant]:
    return list(
        session.execute(
            select(Grant)
            .where(Grant.identity_id == identity_id, Grant.status == GrantStatus.ACTIVE)
            .order_by(Grant.id)
        ).scalars()
    )
