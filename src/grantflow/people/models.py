"""Tables for people in the loop: tasks (approvals, human tasks, escalations), who they are
assigned to, the decisions taken on them, e-mails to deliver and single-use action links."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow


class Task(Base):
    """Something a run waits on a person for. One per waiting step run."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_status_due", "status", "due_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(20), index=True)  # approval | task | escalation
    status: Mapped[str] = mapped_column(String(20), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step_run_id: Mapped[str] = mapped_column(String(36), unique=True)
    step_id: Mapped[str] = mapped_column(String(63))
    workflow_id: Mapped[str] = mapped_column(String(36), index=True)
    title: Mapped[str] = mapped_column(String(300))
    instructions: Mapped[str] = mapped_column(Text, default="")
    # who asked (the run's starter) and whom it is about: neither may approve it
    requester: Mapped[str | None] = mapped_column(String(320))
    subject_email: Mapped[str | None] = mapped_column(String(320))
    # approvals: [{"users": [...], "roles": [...], "policy": "any|all|n_of_m", "required": n}]
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    current_stage: Mapped[int] = mapped_column(Integer, default=0)
    require_justification: Mapped[bool] = mapped_column(Boolean, default=False)
    form: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # tasks: JSON Schema
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # escalations
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    remind_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    timeout_action: Mapped[str | None] = mapped_column(String(20))  # escalate|reject|approve
    fallback: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # {"users", "roles"}
    escalated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # why no one can act on it (a missing or deactivated approver), with what to do
    routing_problem: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TaskAssignee(Base):
    """A user or a role that may act on a task at a stage (rows, so the inbox is one join)."""

    __tablename__ = "task_assignees"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    role: Mapped[str | None] = mapped_column(String(40), index=True)
    # how it got here: "step" (the definition), "fallback" (a timeout), "reassigned" (an admin)
    origin: Mapped[str] = mapped_column(String(20), default="step")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class TaskDecision(Base):
    __tablename__ = "task_decisions"
    __table_args__ = (UniqueConstraint("task_id", "stage", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(320))
    # approve | reject | submit | skip | fail | retry | auto_approve | auto_reject
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    via: Mapped[str] = mapped_column(String(20), default="api")  # api | cli | console | email_link
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailMessage(Base):
    """An e-mail to deliver over SMTP; delivery is retried and its outcome recorded."""

    __tablename__ = "email_messages"
    __table_args__ = (Index("ix_email_messages_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40))
    to_address: Mapped[str] = mapped_column(String(320))
    to_user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(36), index=True)
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20))  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ActionLink(Base):
    """A signed, single-use, expiring link in an e-mail that lets its addressee decide a task
    (after logging in). Only the HMAC of the token is stored."""

    __tablename__ = "action_links"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(36))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
