"""/api/v1/notifications: in-app notifications, per user, with an unread count.

A notification is addressed to one user (an approval waiting on them, a task assigned to them)
or broadcast (recipient_id null: a run needs attention, a connection needs reauthorising, a
security incident). Everyone sees their own; broadcasts are shown to users who may read runs
(run:read). The unread count is computed over exactly what the list would show. A broadcast
has one read flag, shared by the team that watches it (like a shared on-call inbox).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, false, func, or_, select, update
from sqlalchemy.orm import Session

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import NotFound
from grantflow.people.notifications import Notification, NotificationKind
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from grantflow.store.pagination import decode_cursor, page_of

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
    read_at: dt.datetime | None
    recipient_id: str | None
    broadcast: bool


class NotificationsOut(BaseModel):
    unread: int
    items: list[NotificationOut]
    next_cursor: str | None = None


class ReadAllOut(BaseModel):
    marked: int
    unread: int


def _out(note: Notification) -> NotificationOut:
    return NotificationOut(
        id=note.id,
        kind=note.kind,
        title=note.title,
        body=note.body,
        target_type=note.target_type,
        target_id=note.target_id,
        data=note.data or {},
        created_at=note.created_at,
        resolved_at=note.resolved_at,
        read=note.read,
        read_at=note.read_at,
        recipient_id=note.recipient_id,
        broadcast=note.recipient_id is None,
    )


def visible_to(actor: Actor) -> ColumnElement[bool]:
    """Mine, plus the broadcasts when I may read runs; nothing at all for a userless actor
    (a system actor sees the broadcasts only)."""
    mine: ColumnElement[bool] = (
        Notification.recipient_id == actor.user_id if actor.user_id else false()
    )
    if Permission.RUN_READ in actor.permissions:
        return or_(mine, Notification.recipient_id.is_(None))
    return mine


def _unread(session: Session, actor: Actor) -> int:
    count: int = session.execute(
        select(func.count())
        .select_from(Notification)
        .where(visible_to(actor), Notification.read.is_(False))
    ).scalar_one()
    return count


@router.get("/notifications", response_model=NotificationsOut)
def list_notifications(
    kind: NotificationKind | None = Query(None, description="only this kind"),
    unread: bool | None = Query(None, description="true: only unread; false: only read"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(50, ge=1, le=500),
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> NotificationsOut:
    """My notifications (and the broadcast ones when I may read runs), newest first, with
    the number still unread (over all of them, whatever the filters)."""
    with db.transaction() as session:
        stmt = select(Notification).where(visible_to(actor))
        if kind is not None:
            stmt = stmt.where(Notification.kind == kind)
        if unread is not None:
            stmt = stmt.where(Notification.read.is_(not unread))
        after = decode_cursor(cursor, str)
        if after is not None:
            stmt = stmt.where(Notification.id < after)
        # ids are time-ordered (UUIDv7): newest first, and a stable cursor
        rows = session.execute(stmt.order_by(Notification.id.desc()).limit(limit + 1)).scalars()
        page = page_of(list(rows), limit, key=lambda n: n.id)
        return NotificationsOut(
            unread=_unread(session, actor),
            items=[_out(n) for n in page.items],
            next_cursor=page.next_cursor,
        )


@router.post("/notifications/read-all", response_model=ReadAllOut)
def mark_all_read(
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> ReadAllOut:
    """Mark every notification I can see as read."""
    with db.transaction() as session:
        result = session.execute(
            update(Notification)
            .where(visible_to(actor), Notification.read.is_(False))
            .values(read=True, read_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        marked = int(getattr(result, "rowcount", 0) or 0)
        return ReadAllOut(marked=marked, unread=_unread(session, actor))


@router.post("/notifications/{notification_id}/read", response_model=NotificationOut)
def mark_read(
    notification_id: str,
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> NotificationOut:
    """Mark one of my notifications (or a broadcast one) as read; someone else's is a 404."""
    with db.transaction() as session:
        note = session.execute(
            select(Notification).where(Notification.id == notification_id, visible_to(actor))
        ).scalar_one_or_none()
        if note is None:
            raise NotFound(
                f"notification {notification_id} does not exist",
                target_type="notification",
                target_id=notification_id,
            )
        if not note.read:
            note.read = True
            note.read_at = utcnow()
        return _out(note)
