"""Identities: the people whose access Grantflow automates, and their lifecycle.

Every way in (REST API, CSV import, inbound SCIM) goes through `create_identity` and
`update_identity`, so the lifecycle events are the same whatever the source:
created active or reactivated -> identity_joined; any other attribute change while active ->
identity_moved; deactivated or deleted -> identity_left (which revokes every active grant).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import BindParameter, ColumnElement, bindparam, func, or_, select
from sqlalchemy.orm import Session

from grantflow import audit, timestamps
from grantflow.access import grants, incidents, lifecycle, snapshots
from grantflow.access.identity_lookup import find_identity
from grantflow.access.lifecycle import EventKind, LifecycleState
from grantflow.access.models import Identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of
from grantflow.strict import Bool, Day, NotNull

Short = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Attributes = Annotated[dict[str, Any], Field(max_length=100)]

# changing these (while active) is a move; `active` itself is a join or a leave
MOVE_FIELDS = (
    "email",
    "user_name",
    "display_name",
    "given_name",
    "family_name",
    "title",
    "department",
    "manager_id",
    "start_date",
    "end_date",
    "attributes",
    "external_id",
)


def normalise_email(value: str) -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


class IdentityFields(BaseModel):
    """The writable fields; on update only the fields sent change (null clears optional ones)."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(None, max_length=320)
    user_name: str | None = Field(None, max_length=320, description="defaults to the email")
    external_id: str | None = Field(None, max_length=320)
    display_name: Short | None = None
    given_name: Short | None = None
    family_name: Short | None = None
    title: Short | None = None
    department: Short | None = None
    manager: str | None = Field(None, description="the manager's identity id or email")
    start_date: Day | None = None
    end_date: Day | None = None
    active: Bool | None = None
    attributes: Attributes | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return normalise_email(value) if value is not None else None

    @field_validator("user_name")
    @classmethod
    def _user_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None


class IdentityCreate(IdentityFields):
    email: str = Field(..., max_length=320)


class IdentityUpdate(IdentityFields):
    """A PATCH of an identity: what cannot be cleared is left out, not sent as null."""

    display_name: NotNull[Short] = None
    active: NotNull[Bool] = None


def get_identity(session: Session, identity_id: str) -> Identity:
    identity = session.get(Identity, identity_id) or by_prefix(
        session, Identity, identity_id, "identity"
    )
    if identity is None:
        raise NotFound(
            f"identity {identity_id} does not exist", target_type="identity", target_id=identity_id
        )
    return identity


def get_live_identity(session: Session, identity_id: str) -> Identity:
    """An identity that is not deleted. A deleted one keeps its record, which GET still
    shows, but anything else about it (changing it, its lifecycle events) is a 404."""
    identity = get_identity(session, identity_id)
    if identity.deleted_at is not None:
        raise NotFound(
            f"identity {identity_id} was deleted",
            target_type="identity",
            target_id=identity_id,
            next_action="its record stays readable (GET /api/v1/identities/ID); what happened "
            "to it is in the audit log",
        )
    return identity


def _resolve_manager(session: Session, manager: str | None, own_id: str | None) -> str | None:
    if manager is None:
        return None
    found = find_identity(session, manager, field="manager")
    if found.id == own_id:
        raise ValidationError(
            "manager: an identity cannot be its own manager",
            details=[{"field": "body.manager", "message": "is the identity itself"}],
        )
    return found.id


def _check_unique(session: Session, identity: Identity) -> None:
    for column, value, name in (
        (Identity.email, identity.email, "email"),
        (Identity.user_name, identity.user_name, "user_name"),
    ):
        if value is None:
            continue
        # no autoflush: the query must not write the changed identity first (its UPDATE would
        # hit the unique index before this check could name the field)
        with session.no_autoflush:
            clash = (
                session.execute(
                    select(Identity.id).where(
                        func.lower(column) == value.lower(), Identity.id != identity.id
                    )
                )
                .scalars()
                .first()
            )
        if clash is not None:
            raise Conflict(
                f"{name}: an identity with {name} {value!r} already exists ({clash})",
                code="identity_exists",
                existing_id=clash,
                details=[{"field": f"body.{name}", "message": "already used"}],
            )


def _check_dates(identity: Identity) -> None:
    if identity.start_date and identity.end_date and identity.end_date < identity.start_date:
        raise ValidationError(
            "end_date: must not be before start_date",
            details=[{"field": "body.end_date", "message": "is before start_date"}],
        )


def create_identity(
    session: Session,
    actor: Actor,
    queue: Queue,
    data: IdentityFields,
    *,
    source: str = "api",
    scim: dict[str, Any] | None = None,
) -> Identity:
    actor.require(Permission.IDENTITY_WRITE)
    if data.email is None and data.user_name is None:
        raise ValidationError(
            "email: an identity needs an email or a user_name",
            details=[{"field": "body.email", "message": "missing"}],
        )
    identity = Identity(
        email=data.email,
        user_name=data.user_name or data.email,
        external_id=data.external_id,
        display_name=data.display_name or "",
        given_name=data.given_name,
        family_name=data.family_name,
        title=data.title,
        department=data.department,
        start_date=data.start_date,
        end_date=data.end_date,
        active=True if data.active is None else data.active,
        attributes=data.attributes or {},
        scim=scim or {},
        source=source,
        lifecycle_state=LifecycleState.JOINER,
    )
    if not identity.display_name:
        names = " ".join(n for n in (data.given_name, data.family_name) if n)
        identity.display_name = names or identity.user_name
    _check_unique(session, identity)
    _check_dates(identity)
    identity.manager_id = _resolve_manager(session, data.manager, None)
    session.add(identity)
    session.flush()
    audit.record(
        session,
        actor,
        "identity.created",
        "identity",
        identity.id,
        {"email": identity.email, "user_name": identity.user_name, "source": source},
    )
    if identity.active:
        _joined(session, actor, queue, identity)
    return identity


def update_identity(
    session: Session,
    actor: Actor,
    queue: Queue,
    identity_id: str,
    data: IdentityFields,
    *,
    scim: dict[str, Any] | None = None,
) -> tuple[Identity, dict[str, list[Any]]]:
    """Apply the fields sent; returns the identity and what changed ({field: [old, new]})."""
    actor.require(Permission.IDENTITY_WRITE)
    identity = get_live_identity(session, identity_id)
    sent = data.model_dump(exclude_unset=True)
    if "manager" in sent:
        sent["manager_id"] = _resolve_manager(session, sent.pop("manager"), identity.id)
    for required in ("active", "display_name"):
        if required in sent and sent[required] is None:
            raise ValidationError(
                f"{required}: cannot be null",
                details=[{"field": f"body.{required}", "message": "cannot be null"}],
            )
    if "user_name" in sent and sent["user_name"] is None:
        sent["user_name"] = sent.get("email") or identity.email
    if sent.get("attributes") is None and "attributes" in sent:
        sent["attributes"] = {}
    changes: dict[str, list[Any]] = {}
    for name, value in sent.items():
        old = getattr(identity, name)
        if old != value:
            changes[name] = [old, value]
            setattr(identity, name, value)
    if identity.email is None and not identity.user_name:
        raise ValidationError("email: an identity needs an email or a user_name")
    _check_unique(session, identity)
    _check_dates(identity)
    if scim is not None:
        identity.scim = scim
    if not changes:
        return identity, changes
    identity.version += 1
    session.flush()
    audit.record(session, actor, "identity.updated", "identity", identity.id, {"changes": changes})
    if "active" in changes:
        if identity.active:
            _joined(session, actor, queue, identity)
        else:
            leave(session, actor, queue, identity)
    elif identity.active and any(name in changes for name in MOVE_FIELDS):
        identity.lifecycle_state = LifecycleState.MOVER
        event = lifecycle.emit(
            session,
            actor,
            queue,
            EventKind.IDENTITY_MOVED,
            identity,
            details={"changed": sorted(changes)},
            run_input=moved_input(changes),
        )
        if not event.dispatch or all("run_id" not in d for d in event.dispatch):
            identity.lifecycle_state = LifecycleState.ACTIVE
    return identity, changes


def moved_input(changes: dict[str, list[Any]]) -> dict[str, Any]:
    """A mover run's input: which fields changed, with their old and new values, so a workflow
    can act on what it was (e.g. remove the person from the old department's group)."""
    moved = {n: v for n, v in changes.items() if n in MOVE_FIELDS}
    return {
        "changed": sorted(moved),
        "changes": {
            n: {"old": timestamps.plain(o), "new": timestamps.plain(w)}
            for n, (o, w) in moved.items()
        },
    }


def _joined(session: Session, actor: Actor, queue: Queue, identity: Identity) -> None:
    identity.lifecycle_state = LifecycleState.JOINER
    event = lifecycle.emit(session, actor, queue, EventKind.IDENTITY_JOINED, identity)
    if all("run_id" not in d for d in event.dispatch):
        identity.lifecycle_state = LifecycleState.ACTIVE


def leave(session: Session, actor: Actor, queue: Queue, identity: Identity) -> None:
    """Offboarding: revoke every active grant (each through its application's revoke
    workflows), then start the global identity_left workflows."""
    identity.active = False
    identity.lifecycle_state = LifecycleState.LEAVER
    session.flush()
    revoker = Actor(
        label=actor.label,
        user_id=actor.user_id,
        permissions=actor.permissions | {Permission.GRANT_WRITE},
        request_id=actor.request_id,
    )
    revoked = []
    # (the person's groups read once: for each revocation's run and the leave's own)
    with lifecycle.same_workflows(session), snapshots.same_groups(session, [identity.id]):
        for grant in grants.active_grants_of(session, identity.id):
            revoked.append(
                grants.revoke_grant(
                    session,
                    revoker,
                    queue,
                    grant.id,
                    reason=grants.RevokeReason.IDENTITY_LEFT,
                    comment="the identity left",
                    offboarding=True,
                )
            )
        left = lifecycle.emit(
            session,
            actor,
            queue,
            EventKind.IDENTITY_LEFT,
            identity,
            details={"revoked_grants": [g.id for g in revoked]},
        )
    incidents.offboarding_not_covered(session, identity, revoked, left)
    settle(session, identity)


def delete_identity(session: Session, actor: Actor, queue: Queue, identity_id: str) -> Identity:
    """Deletion keeps the record (audit, reconciliation) but ends the person: an active
    identity leaves first."""
    actor.require(Permission.IDENTITY_WRITE)
    identity = get_live_identity(session, identity_id)
    identity.deleted_at = utcnow()
    identity.version += 1
    audit.record(
        session,
        actor,
        "identity.deleted",
        "identity",
        identity.id,
        {"email": identity.email, "user_name": identity.user_name},
    )
    if identity.active:
        leave(session, actor, queue, identity)
    # free the unique keys so the person can be created again (a rehire) from scratch
    identity.attributes = {
        **(identity.attributes or {}),
        "deleted_user_name": identity.user_name,
        "deleted_email": identity.email,
    }
    identity.user_name = f"{identity.user_name}#deleted:{identity.id}"
    identity.email = None
    return identity


def settle(session: Session, identity: Identity) -> None:
    """Finish a transitional state once no run of its latest lifecycle events is in flight."""
    from grantflow.access.models import EventRun
    from grantflow.engine.models import Run
    from grantflow.engine.states import TERMINAL

    # Lock the row first: two runs of one event finishing at once each count the other as in
    # flight under READ COMMITTED; with the lock the second waits for the first to commit, then
    # (its next statement taking a fresh snapshot) counts both finished. No-op on SQLite.
    session.execute(
        select(Identity)
        .where(Identity.id == identity.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if identity.lifecycle_state not in (
        LifecycleState.JOINER,
        LifecycleState.MOVER,
        LifecycleState.LEAVER,
    ):
        return
    if identity.lifecycle_state == LifecycleState.JOINER and not identity.active:
        return  # a pre-hire: joins when activated
    in_flight = session.execute(
        select(func.count())
        .select_from(EventRun)
        .join(Run, Run.id == EventRun.run_id)
        .where(
            EventRun.identity_id == identity.id,
            Run.status.not_in([str(s) for s in TERMINAL]),
        )
    ).scalar_one()
    if in_flight:
        return
    identity.lifecycle_state = (
        LifecycleState.LEFT
        if identity.lifecycle_state == LifecycleState.LEAVER
        else LifecycleState.ACTIVE
    )


def _contains(column: Any, part: str) -> ColumnElement[bool]:
    """`column` holds `part`. The pattern is written into the statement, not bound: PostgreSQL
    then plans each search for its own pattern, through the trigram indexes (0030); a plan
    kept for any pattern walked every identity (100 ms at 100,000)."""
    escaped = part.replace("/", "//").replace("%", "/%").replace("_", "/_")
    pattern: BindParameter[str] = bindparam(None, f"%{escaped}%", literal_execute=True)
    found: ColumnElement[bool] = column.like(pattern, escape="/")
    return found


def list_identities(
    session: Session,
    *,
    query: str | None = None,
    lifecycle_state: str | None = None,
    department: str | None = None,
    include_deleted: bool = False,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Identity]:
    stmt = select(Identity)
    if not include_deleted:
        stmt = stmt.where(Identity.deleted_at.is_(None))
    if query:
        stmt = stmt.where(
            or_(
                *(
                    _contains(column, query.lower())
                    for column in (
                        Identity.email,
                        func.lower(Identity.display_name),
                        func.lower(Identity.user_name),
                    )
                )
            )
        )
    if lifecycle_state:
        stmt = stmt.where(Identity.lifecycle_state == lifecycle_state)
    if department:
        stmt = stmt.where(func.lower(Identity.department) == department.lower())
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Identity.id > after)
    rows = session.execute(stmt.order_by(Identity.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda i: i.id)


def leave_due(session: Session, queue: Queue, today: dt.date) -> list[str]:
    """Identities whose end date has passed leave (the durable timer behind end_date)."""
    due = session.execute(
        select(Identity)
        .where(
            Identity.active.is_(True),
            Identity.deleted_at.is_(None),
            Identity.end_date < today,
        )
        .order_by(Identity.end_date)
        .limit(100)
        .with_for_update(skip_locked=True)
    ).scalars()
    left = []
    for identity in list(due):
        audit.record(
            session,
            Actor.system("lifecycle"),
            "identity.end_date_passed",
            "identity",
            identity.id,
            {"end_date": identity.end_date},
        )
        leave(session, Actor.system("lifecycle"), queue, identity)
        left.append(identity.id)
    return left
