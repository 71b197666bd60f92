"""/api/v1/applications"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from grantflow.access import applications as service
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import Deleted, PageOut
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/applications", tags=["applications"])


class ApplicationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    kind: str
    homepage_url: str | None
    owner_id: str | None
    labels: dict[str, str]
    created_at: dt.datetime
    updated_at: dt.datetime


@router.post("", status_code=201, response_model=ApplicationOut)
def create_application(
    body: service.ApplicationCreate,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    db: Database = Depends(database),
) -> ApplicationOut:
    with db.transaction() as session:
        return ApplicationOut.model_validate(service.create_application(session, actor, body))


@router.get("", response_model=PageOut[ApplicationOut])
def list_applications(
    name: str | None = Query(None, max_length=100, description="substring of the name"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.CONNECTION_READ)),
    db: Database = Depends(database),
) -> PageOut[ApplicationOut]:
    with db.transaction() as session:
        page = service.list_applications(session, name=name, cursor=cursor, limit=limit)
        return PageOut(
            items=[ApplicationOut.model_validate(a) for a in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/{app_id}", response_model=ApplicationOut)
def get_application(
    app_id: str,
    _: Actor = Depends(Require(Permission.CONNECTION_READ)),
    db: Database = Depends(database),
) -> ApplicationOut:
    """By id, name or unique id prefix."""
    with db.transaction() as session:
        return ApplicationOut.model_validate(service.find_application(session, app_id))


@router.patch("/{app_id}", response_model=ApplicationOut)
def update_application(
    app_id: str,
    body: service.ApplicationUpdate,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    db: Database = Depends(database),
) -> ApplicationOut:
    with db.transaction() as session:
        app = service.update_application(session, actor, app_id, body)
        return ApplicationOut.model_validate(app)


@router.delete("/{app_id}", response_model=Deleted)
def delete_application(
    app_id: str,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    db: Database = Depends(database),
) -> Deleted:
    with db.transaction() as session:
        service.delete_application(session, actor, app_id)
    return Deleted(id=app_id)
