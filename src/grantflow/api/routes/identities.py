"""/api/v1/identities: the people, their lifecycle state and their lifecycle events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import object_session

from grantflow.access import identities as service
from grantflow.access.identity_lookup import find_identity
from grantflow.access.lifecycle import LifecycleState, failures_of
from grantflow.access.models import Identity, LifecycleEvent
from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.queue.interface import Queue
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/identities", tags=["identities"])


class LifecycleFailureOut(BaseModel):
    """A lifecycle run of the identity that did not succeed (cleared once one does)."""

    run_id: str
    run_url: str
    workflow_id: str
    workflow_name: str
    event_id: str
    event_kind: str
    grant_id: str | None
    status: str
    message: str
    finished_at: dt.datetime | None
    next_action: str | None


class IdentityOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str | None
    user_name: str
    external_id: str | None
    display_name: str
    given_name: str | None
    family_name: str | None
    title: str | None
    department: str | None
    manager_id: str | None
    start_date: dt.date | None
    end_date: dt.date | None
    lifecycle_state: str
    active: bool
    attributes: dict[str, Any]
    source: str
    deleted_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    lifecycle_failures: list[LifecycleFailureOut] = []


class IdentityChangedOut(IdentityOut):
    changes: dict[str, list[Any]] = {}  # field -> [old, new], for the fields that changed


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    identity_id: str | None
    grant_id: str | None
    application_id: str | None
    actor: str
    details: dict[str, Any]
    dispatch: list[dict[str, Any]]
    no_run_reason: str | None
    created_at: dt.datetime


def out(identity: Identity, failures: list[dict[str, Any]] | None = None) -> IdentityOut:
    session = object_session(identity)
    if session is not None:  # a join or a move settles the state last: show what is stored
        session.flush()
        if failures is None:
            failures = failures_of(session, [identity.id]).get(identity.id, [])
    shown = IdentityOut.model_validate(identity)
    shown.lifecycle_failures = [LifecycleFailureOut.model_validate(f) for f in failures or []]
    return shown


@router.post("", status_code=201, response_model=IdentityOut)
def create_identity(
    body: service.IdentityCreate,
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Create an identity (identity_joined when active); with an Idempotency-Key, a retry of
    the same request returns the same identity."""
    with db.transaction() as session:
        return once.respond(
            session, actor, 201, lambda: out(service.create_identity(session, actor, q, body))
        )


@router.get("", response_model=PageOut[IdentityOut])
def list_identities(
    q: str | None = Query(None, max_length=320, description="substring of email, name, userName"),
    lifecycle_state: LifecycleState | None = Query(None),
    department: str | None = Query(None, max_length=200),
    include_deleted: bool = Query(False),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.IDENTITY_READ)),
    db: Database = Depends(database),
) -> PageOut[IdentityOut]:
    with db.transaction() as session:
        page = service.list_identities(
            session,
            query=q,
            lifecycle_state=lifecycle_state,
            department=department,
            include_deleted=include_deleted,
            cursor=cursor,
            limit=limit,
        )
        failures = failures_of(session, [i.id for i in page.items])
        return PageOut(
            items=[out(i, failures.get(i.id, [])) for i in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/{identity_id}", response_model=IdentityOut)
def get_identity(
    identity_id: str,
    _: Actor = Depends(Require(Permission.IDENTITY_READ)),
    db: Database = Depends(database),
) -> IdentityOut:
    """By id, email, userName or a unique id prefix."""
    with db.transaction() as session:
        return out(find_identity(session, identity_id))


def changed_out(identity: Identity, changes: dict[str, Any]) -> IdentityChangedOut:
    shown = out(identity)
    return IdentityChangedOut(
        **shown.model_dump(), changes={k: list(v) for k, v in changes.items()}
    )


@router.patch("/{identity_id}", response_model=IdentityChangedOut)
def update_identity(
    identity_id: str,
    body: service.IdentityUpdate,
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> IdentityChangedOut:
    """Only the fields sent change (`changes` lists them, old and new). `active: false`
    offboards the identity (identity_left)."""
    with db.transaction() as session:
        identity, changes = service.update_identity(session, actor, q, identity_id, body)
        return changed_out(identity, changes)


@router.post("/{identity_id}/leave", response_model=IdentityChangedOut)
def leave(
    identity_id: str,
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Offboard now: revoke every active grant and start the identity_left workflows (with an
    Idempotency-Key, a retry of the same request answers as the first did)."""
    body = service.IdentityFields(active=False)
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            200,
            lambda: changed_out(*service.update_identity(session, actor, q, identity_id, body)),
        )


@router.delete("/{identity_id}", response_model=IdentityOut)
def delete_identity(
    identity_id: str,
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> IdentityOut:
    """The record is kept for audit; an active identity leaves first (offboarding)."""
    with db.transaction() as session:
        return out(service.delete_identity(session, actor, q, identity_id))


@router.get("/{identity_id}/events", response_model=list[EventOut])
def identity_events(
    identity_id: str,
    _: Actor = Depends(Require(Permission.IDENTITY_READ)),
    db: Database = Depends(database),
) -> list[EventOut]:
    """Lifecycle events of the identity, with the runs each started or why none started (a
    deleted identity's: 404)."""
    with db.transaction() as session:
        service.get_live_identity(session, identity_id)
        rows = session.execute(
            select(LifecycleEvent)
            .where(LifecycleEvent.identity_id == identity_id)
            .order_by(LifecycleEvent.id)
        ).scalars()
        return [EventOut.model_validate(e) for e in rows]
