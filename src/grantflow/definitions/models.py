"""Tables for workflows and their versions."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from grantflow.access import references
from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow
from grantflow.store.names import UniqueNameKeyed


class VersionState(enum.StrEnum):
    DRAFT = "draft"  # editable; at most one per workflow
    PUBLISHED = "published"  # immutable, passed the gate, has a compiled plan


class WorkflowStatus(enum.StrEnum):
    DRAFT = "draft"  # no published version is active yet
    PUBLISHED = "published"  # a version is active and the workflow dispatches runs
    DISABLED = "disabled"  # switched off by someone; dispatches nothing
    PAUSED_SAFETY = "paused_safety"  # stopped by a safety breaker (throughput, spend cap)


class Workflow(UniqueNameKeyed, Base):
    __tablename__ = "workflows"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    application_id: Mapped[str | None] = mapped_column(
        ForeignKey("applications.id", ondelete="RESTRICT"), index=True
    )
    trigger_type: Mapped[str] = mapped_column(String(40), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    enabled_changed_by: Mapped[str | None] = mapped_column(String(320))
    active_version: Mapped[int | None] = mapped_column(Integer)
    # set while a safety breaker holds the workflow: {breaker, figures, tripped_at, ...}
    safety_pause: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    safety_resumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    safety_resumed_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[WorkflowVersion]] = relationship(
        back_populates="workflow", order_by="WorkflowVersion.number", cascade="all, delete-orphan"
    )

    @property
    def status(self) -> WorkflowStatus:
        if not self.enabled:
            return WorkflowStatus.DISABLED
        if self.active_version is None:
            return WorkflowStatus.DRAFT
        if self.safety_pause is not None:
            return WorkflowStatus.PAUSED_SAFETY
        return WorkflowStatus.PUBLISHED


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"
    __table_args__ = (UniqueConstraint("workflow_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    document: Mapped[dict[str, Any]] = mapped_column(JSONType)
    content_hash: Mapped[str] = mapped_column(String(64))
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    published_by: Mapped[str | None] = mapped_column(String(320))

    workflow: Mapped[Workflow] = relationship(back_populates="versions")


def _workflows_using_application(session: Any, application_id: str) -> list[str]:
    from sqlalchemy import select

    rows = session.execute(
        select(Workflow.name, Workflow.id).where(Workflow.application_id == application_id)
    ).all()
    return [f"workflow {name!r} ({wf_id})" for name, wf_id in rows]


# Deleting an application is refused while a workflow belongs to it (access.references).
references.register("application", _workflows_using_application)


def _workflows_using_connection(session: Any, connection_id: str) -> list[str]:
    """Workflows whose active version has a step naming the connection."""
    from sqlalchemy import select

    from grantflow.connections.models import Connection

    connection = session.get(Connection, connection_id)
    if connection is None:
        return []
    rows = session.execute(
        select(Workflow.name, Workflow.id, WorkflowVersion.plan)
        .join(WorkflowVersion, WorkflowVersion.workflow_id == Workflow.id)
        .where(
            Workflow.application_id == connection.application_id,
            WorkflowVersion.number == Workflow.active_version,
        )
    ).all()
    found = []
    for name, wf_id, plan in rows:
        steps = (plan or {}).get("steps", {}).values()
        if any((s.get("config") or {}).get("connection") == connection.name for s in steps):
            found.append(f"workflow {name!r} ({wf_id})")
    return found


# Deleting a connection is refused while an active workflow version uses it.
references.register("connection", _workflows_using_connection)
