"""/api/v1/incidents: security incidents raised when a revocation fails."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy.orm import Session

from grantflow.access import incidents as service
from grantflow.access.incidents import IncidentStatus
from grantflow.access.models import Identity, Incident
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.store.database import Database
from grantflow.store.ids import by_ids
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/incidents", tags=["incidents"])


class IncidentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    status: str
    identity_id: str | None
    identity: str | None = None  # the identity's email (or userName), for people to read
    application_id: str | None
    grant_id: str | None
    run_id: str | None
    step_id: str | None
    system: str
    summary: str
    failure: dict[str, Any]
    instruction: str
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str | None
    resolution: str | None
    resolution_comment: str | None


def out(
    session: Session, incident: Incident, people: dict[str, Identity] | None = None
) -> IncidentOut:
    """`people`: the identities a page of incidents names, read at once (else read here)."""
    shown = IncidentOut.model_validate(incident)
    named = {incident.identity_id} if incident.identity_id else set()
    if people is None:
        people = by_ids(session, Identity, named)
    person = people.get(incident.identity_id) if incident.identity_id else None
    shown.identity = (person.email or person.user_name) if person else None
    return shown


class IncidentResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = ""


@router.get("", response_model=PageOut[IncidentOut])
def list_incidents(
    status: IncidentStatus | None = Query(None),
    identity_id: str | None = Query(None, max_length=36),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.INCIDENT_READ)),
    db: Database = Depends(database),
) -> PageOut[IncidentOut]:
    with db.transaction() as session:
        page = service.list_incidents(
            session, status=status, identity_id=identity_id, cursor=cursor, limit=limit
        )
        people = by_ids(session, Identity, {i.identity_id for i in page.items if i.identity_id})
        return PageOut(
            items=[out(session, i, people) for i in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/{incident_id}", response_model=IncidentOut)
def get_incident(
    incident_id: str,
    _: Actor = Depends(Require(Permission.INCIDENT_READ)),
    db: Database = Depends(database),
) -> IncidentOut:
    with db.transaction() as session:
        return out(session, service.get_incident(session, incident_id))


@router.post("/{incident_id}/resolve", response_model=IncidentOut)
def resolve_incident(
    incident_id: str,
    body: IncidentResolve | None = None,
    actor: Actor = Depends(Require(Permission.INCIDENT_MANAGE)),
    db: Database = Depends(database),
) -> IncidentOut:
    """Needs an evidence file on the run (proof of manual revocation) or a succeeded run."""
    with db.transaction() as session:
        incident = service.resolve_incident(
            session, actor, incident_id, body.comment if body else ""
        )
        return out(session, incident)
