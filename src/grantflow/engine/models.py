"""Tables for runs, step runs, attempts and the run timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from grantflow.store.base import COUNTER, Base, JSONType, UTCDateTime, new_id, utcnow


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # the runs list, newest first, by status or by workflow (0023)
        Index("ix_runs_status_id", "status", "id"),
        Index("ix_runs_workflow_id", "workflow_id", "id"),
        Index("ix_runs_workflow_version", "workflow_id", "version", "id"),  # (0033)
        Index("ix_runs_status_wake", "status", "wake_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    waiting_reason: Mapped[str | None] = mapped_column(String(20))
    # what a waiting run waits on: a connection (reauth), later a task or an approval
    waiting_on: Mapped[str | None] = mapped_column(String(36), index=True)

    trigger: Mapped[str] = mapped_column(String(40))
    input: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # identity, grant, application snapshots taken when the run was created
    subject: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    current_step: Mapped[str | None] = mapped_column(String(63))
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    wake_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    stuck_after_seconds: Mapped[float] = mapped_column(Float)
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The worker turn advancing the run (a token written when a worker that holds the queue
    # lease starts a turn): every write of a step outcome, attempt or run status is conditional
    # on it, so a worker that lost its lease (frozen past it) writes nothing over its successor.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    replay_of: Mapped[str | None] = mapped_column(String(36), index=True)
    replay_mode: Mapped[str | None] = mapped_column(String(20))
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    acted_steps: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_progress_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # last_progress_at + stuck_after: a run still not terminal after this is flagged stuck.
    # Not indexed: every step boundary rewrites it, and on PostgreSQL a changed indexed column
    # costs an entry in each of the run's indexes (migration 0020).
    stuck_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    step_runs: Mapped[list[StepRun]] = relationship(
        back_populates="run", order_by="StepRun.sequence", cascade="all, delete-orphan"
    )


class StepRun(Base):
    __tablename__ = "step_runs"
    # (its run's step runs are found by this key's leading column: no index of run_id alone)
    __table_args__ = (UniqueConstraint("run_id", "step_id", "iteration"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(63))
    step_type: Mapped[str] = mapped_column(String(100))
    sequence: Mapped[int] = mapped_column(Integer)  # order of execution within the run
    iteration: Mapped[int] = mapped_column(Integer, default=1)  # nth pass (loops)
    attempt_group: Mapped[int] = mapped_column(Integer, default=1)  # bumped by an operator retry
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    side_effects: Mapped[bool] = mapped_column(Boolean)
    output: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    next_step: Mapped[str | None] = mapped_column(String(63))
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # when the safety gate counted this step's start (safety/gate.py): once, whatever the
    # retries and workers
    counted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    run: Mapped[Run] = relationship(back_populates="step_runs")
    attempt_rows: Mapped[list[StepAttempt]] = relationship(
        back_populates="step_run", order_by="StepAttempt.number", cascade="all, delete-orphan"
    )


class StepAttempt(Base):
    __tablename__ = "step_attempts"
    __table_args__ = (UniqueConstraint("step_run_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    step_run_id: Mapped[str] = mapped_column(ForeignKey("step_runs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running | succeeded | failed
    request: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # secrets redacted
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # status, capped body
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float | None] = mapped_column(Float)

    step_run: Mapped[StepRun] = relationship(back_populates="attempt_rows")


class RunEvent(Base):
    """One line of a run's timeline."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(COUNTER, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    step_id: Mapped[str | None] = mapped_column(String(63))
    attempt: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String(320))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
