"""Tables for jobs, their occurrences, and the scheduler's leader lease."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow
from grantflow.store.names import UniqueNameKeyed

# the `created_by` of every run an occurrence started
STARTER_LABEL = "system:scheduler"


class JobStatus(enum.StrEnum):
    ENABLED = "enabled"
    PAUSED = "paused"  # occurrences are recorded as skipped (paused), so nothing is silent
    DISABLED = "disabled"  # off: no occurrences at all


class Job(UniqueNameKeyed, Base):
    """A scheduled job: a `schedule`-triggered workflow or a built-in governance job."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # workflow | access_review | control_evaluation | report
    kind: Mapped[str] = mapped_column(String(30), index=True)
    workflow_id: Mapped[str | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), unique=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    status: Mapped[str] = mapped_column(String(20), index=True)  # enabled | paused | disabled
    status_changed_by: Mapped[str | None] = mapped_column(String(320))
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    misfire_policy: Mapped[str] = mapped_column(String(20), default="run_once")  # or skip
    catchup_window_seconds: Mapped[float] = mapped_column(Float, default=3600.0)
    overlap_policy: Mapped[str] = mapped_column(String(20), default="skip")  # queue_one|allow
    grace_seconds: Mapped[float] = mapped_column(Float, default=300.0)
    # the next scheduled time (UTC) the scheduler has not yet handled
    next_fire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    overdue_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Occurrence(Base):
    """One scheduled time of a job (or a Run now), and what became of it. Keyed by job and
    scheduled time, so two schedulers can never fire the same occurrence twice."""

    __tablename__ = "job_occurrences"
    __table_args__ = (
        UniqueConstraint("job_id", "scheduled_for", "manual"),
        Index("ix_job_occurrences_job_time", "job_id", "scheduled_for"),
        # a job's last Run now and its last scheduled occurrence (its health note: 0025)
        Index("ix_job_occurrences_job_kind_time", "job_id", "manual", "scheduled_for"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    scheduled_for: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    # fired | skipped | missed | queued (waiting for the previous one, overlap queue_one)
    status: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # what a built-in job produced: a campaign, an evaluation, a report
    result_type: Mapped[str | None] = mapped_column(String(40))
    result_id: Mapped[str | None] = mapped_column(String(36))
    outcome: Mapped[str | None] = mapped_column(String(20))  # the run's or job's final status
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lag_ms: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SchedulerLease(Base):
    """The scheduler's leader lease: whoever holds an unexpired one fires occurrences."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    term: Mapped[int] = mapped_column(Integer, default=1)
