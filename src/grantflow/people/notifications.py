"""In-app notifications, deduplicated: the same cause never notifies twice while open."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow


class NotificationKind(enum.StrEnum):
    APPROVAL_PENDING = "approval_pending"
    TASK_ASSIGNED = "task_assigned"
    RUN_NEEDS_ATTENTION = "run_needs_attention"
    REAUTH_REQUIRED = "reauth_required"
    SECURITY_INCIDENT = "security_incident"
    JOB_OVERDUE = "job_overdue"
    CONTROL_FAILED = "control_failed"  # a control evaluation found something to fix
    WORKFLOW_PAUSED_SAFETY = "workflow_paused_safety"  # a safety breaker paused a workflow
    SPEND_CAP_WARNING = "spend_cap_warning"  # 80 % of a spend cap is used
    SPEND_CAP_REACHED = "spend_cap_reached"  # a spend cap is reached: new steps wait


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    # one open notification per cause, e.g. "reauth_required:<connection id>"
    dedup_key: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    target_type: Mapped[str | None] = mapped_column(String(60))
    target_id: Mapped[str | None] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    # addressed to one user; None = everyone who may see notifications (admins, operators)
    recipient_id: Mapped[str | None] = mapped_column(String(36), index=True)
    read_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


def notify(
    session: Session,
    kind: NotificationKind,
    dedup_key: str,
    title: str,
    *,
    body: str = "",
    target_type: str | None = None,
    target_id: str | None = None,
    recipient_id: str | None = None,
    **data: Any,
) -> Notification | None:
    """Raise a notification unless one for the same cause is still open; returns the new one."""
    open_one = session.execute(
        select(Notification.id).where(
            Notification.dedup_key == dedup_key, Notification.resolved_at.is_(None)
        )
    ).first()
    if open_one is not None:
        return None
    note = Notification(
        kind=kind,
        dedup_key=dedup_key,
        title=title,
        body=body,
        target_type=target_type,
        target_id=target_id,
        recipient_id=recipient_id,
        data=data,
    )
    session.add(note)
    session.flush()
    return note


def resolve(session: Session, dedup_key: str) -> None:
    """The cause went away: the next occurrence may notify again."""
    for note in session.execute(
        select(Notification).where(
            Notification.dedup_key == dedup_key, Notification.resolved_at.is_(None)
        )
    ).scalars():
        note.resolved_at = utcnow()
