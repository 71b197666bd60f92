"""/api/v1/notifications: in-app notifications with an unread count."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import NotFound
from grantflow.people.notifications import Notification
from grantflow.store.database import Database

router = APIRouter(prefix=API_PREFIX, tags=["notifications"])


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    title: str
    body: str
    target_type: str | None
    target_id: str | None
    data: dict[str, Any]
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    read: bool


class NotificationsOut(BaseModel):
    unread: int
    items: list[NotificationOut]


@router.get("/notifications", response_model=NotificationsOut)
def list_notifications(
    kind: str | None = Query(None, max_length=40),
    unread: bool | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
    _: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> NotificationsOut:
    """Newest first, with the number still unread."""
    with db.transaction() as session:
        stmt = select(Notification)
        if kind:
            stmt = stmt.where(Notification.kind == kind)
        if unread is not None:
            stmt = stmt.where(Notification.read.is_(not unread))
        rows = session.execute(stmt.order_by(Notification.created_at.desc()).limit(limit)).scalars()
        count = session.execute(
            select(func.count()).select_from(Notification).where(Notification.read.is_(False))
        ).scalar_one()
        return NotificationsOut(
            unread=count, items=[NotificationOut.model_validate(n) for n in rows]
        )


@router.post("/notifications/{notification_id}/read", response_model=NotificationOut)
def mark_read(
    notification_id: str,
    _: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> NotificationOut:
    with db.transaction() as session:
        note = session.get(Notification, notification_id)
        if note is None:
            raise NotFound(f"notification {notification_id} does not exist")
        note.read = True
        return NotificationOut.model_validate(note)
