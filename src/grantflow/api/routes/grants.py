"""/api/v1/grants: grant, revoke, extend and dispatch access; each grant shows its automation
chip."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from grantflow.access import grant_lists
from grantflow.access import grants as service
from grantflow.access.automation import Automation
from grantflow.access.grant_lists import Listed
from grantflow.access.grants import GrantStatus
from grantflow.access.models import Grant
from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.identities import EventOut
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.queue.interface import Queue
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/grants", tags=["grants"])


class AutomationOut(BaseModel):
    state: Automation
    runs: list[dict[str, Any]]
    no_run_reason: str | None = None
    event: dict[str, Any] | None = None


class GrantOut(BaseModel):
    id: str
    identity: dict[str, Any]
    application: dict[str, Any]
    role: str | None
    justification: str
    status: GrantStatus
    expires_at: dt.datetime | None
    granted_by: str
    granted_at: dt.datetime
    revoked_by: str | None
    revoked_at: dt.datetime | None
    revoke_reason: str | None
    revoke_comment: str | None
    automation: AutomationOut


class GrantDetailOut(GrantOut):
    events: list[EventOut]


def grant_out(shown: Listed) -> GrantOut:
    grant, chip, holder = shown.grant, shown.chip, shown.holder
    return GrantOut(
        id=grant.id,
        identity={
            "id": grant.identity_id,
            "email": holder.email if holder else None,
            "display_name": holder.display_name if holder else None,
        },
        application={"id": grant.application_id, "name": shown.application},
        role=grant.role or None,
        justification=grant.justification,
        status=GrantStatus(grant.status),
        expires_at=grant.expires_at,
        granted_by=grant.granted_by,
        granted_at=grant.granted_at,
        revoked_by=grant.revoked_by,
        revoked_at=grant.revoked_at,
        revoke_reason=grant.revoke_reason,
        revoke_comment=grant.revoke_comment,
        automation=AutomationOut(
            state=chip.state, runs=chip.runs, no_run_reason=chip.no_run_reason, event=chip.event
        ),
    )


class DispatchOut(GrantDetailOut):
    started: list[dict[str, Any]]  # run_id, workflow_id, workflow_name
    skipped: list[dict[str, Any]]  # workflow_id, workflow_name, skipped (why), next_action


def detail_out(session: Session, grant: Grant) -> GrantDetailOut:
    return GrantDetailOut(
        **grant_out(grant_lists.listed(session, grant)).model_dump(),
        events=[EventOut.model_validate(e) for e in service.events_of(session, grant.id)],
    )


@router.post("", status_code=201, response_model=GrantDetailOut)
def create_grant(
    body: service.GrantCreate,
    actor: Actor = Depends(Require(Permission.GRANT_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Grant access; starts the application's enabled access_granted workflows (if any).
    With an Idempotency-Key, a retry of the same request returns the same grant."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: detail_out(session, service.create_grant(session, actor, q, body)),
        )


@router.get("", response_model=PageOut[GrantOut])
def list_grants(
    identity_id: str | None = Query(None, max_length=36),
    application_id: str | None = Query(None, max_length=36),
    status: GrantStatus | None = Query(None),
    automation: Automation | None = Query(
        None,
        description=(
            f"only grants with this chip; a request reads at most {grant_lists.MOST_READ:,}"
            " grants, so a page may be short, even empty, while next_cursor is set: follow it"
            " until it is null"
        ),
    ),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.GRANT_READ)),
    db: Database = Depends(database),
) -> PageOut[GrantOut]:
    """Grants, oldest first, each with its automation chip (`automation`: only that chip).
    The chip filter reads grants in order until the page is full, the grants end or it has read
    its bound, so a filtered page may be short or empty while `next_cursor` is set; the
    cursor is null once every grant was read."""
    with db.transaction() as session:
        page = grant_lists.list_grants(
            session,
            identity_id=identity_id,
            application_id=application_id,
            status=status,
            automation=automation,
            cursor=cursor,
            limit=limit,
        )
        return PageOut(items=[grant_out(g) for g in page.items], next_cursor=page.next_cursor)


@router.get("/{grant_id}", response_model=GrantDetailOut)
def get_grant(
    grant_id: str,
    _: Actor = Depends(Require(Permission.GRANT_READ)),
    db: Database = Depends(database),
) -> GrantDetailOut:
    with db.transaction() as session:
        return detail_out(session, service.get_grant(session, grant_id))


@router.post("/{grant_id}/revoke", response_model=GrantDetailOut)
def revoke_grant(
    grant_id: str,
    body: service.GrantRevoke | None = None,
    actor: Actor = Depends(Require(Permission.GRANT_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Revoke access; starts the application's enabled access_revoked workflows (if any).
    With an Idempotency-Key, a retry of the same request answers as the first did."""
    comment = body.comment if body else ""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            200,
            lambda: detail_out(
                session, service.revoke_grant(session, actor, q, grant_id, comment=comment)
            ),
        )


@router.post("/{grant_id}/extend", response_model=GrantDetailOut)
def extend_grant(
    grant_id: str,
    body: service.GrantExtend,
    actor: Actor = Depends(Require(Permission.GRANT_WRITE)),
    db: Database = Depends(database),
) -> GrantDetailOut:
    """Change (or clear, with null) the expiry of an active grant; audited."""
    with db.transaction() as session:
        return detail_out(session, service.extend_grant(session, actor, grant_id, body))


@router.post("/{grant_id}/dispatch", response_model=DispatchOut)
def dispatch_grant(
    grant_id: str,
    actor: Actor = Depends(Require(Permission.GRANT_WRITE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Start the grant's access_granted workflows again; says which runs started (with an
    Idempotency-Key: once; a retry returns the same runs)."""
    with db.transaction() as session:

        def dispatch() -> DispatchOut:
            done = service.dispatch_grant(session, actor, q, grant_id)
            return DispatchOut(
                **detail_out(session, done.grant).model_dump(),
                started=done.started,
                skipped=done.skipped,
            )

        return once.respond(session, actor, 200, dispatch)
