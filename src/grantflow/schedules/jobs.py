"""Jobs: scheduled workflows (kept in step with their active version's `schedule` trigger) and
built-in governance jobs; status changes, preview, and their occurrences."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.models import Workflow
from grantflow.engine.plans import plan_for
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.schedules import cron
from grantflow.schedules.models import Job, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.pagination import Page, decode_cursor, page_of


class JobKind(enum.StrEnum):
    WORKFLOW = "workflow"
    ACCESS_REVIEW = "access_review"
    CONTROL_EVALUATION = "control_evaluation"
    REPORT = "report"


class JobStatus(enum.StrEnum):
    ENABLED = "enabled"
    PAUSED = "paused"  # occurrences are recorded as skipped (paused), so nothing is silent
    DISABLED = "disabled"  # off: no occurrences at all


BUILT_IN = (JobKind.ACCESS_REVIEW, JobKind.CONTROL_EVALUATION, JobKind.REPORT)
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class JobSettings(BaseModel):
    """How a job behaves (for workflow jobs the cron and timezone come from the trigger)."""

    model_config = ConfigDict(extra="forbid")

    misfire_policy: Literal["run_once", "skip"] = "run_once"
    catchup_window_seconds: float = Field(3600.0, ge=0, le=30 * 86400)
    overlap_policy: Literal["skip", "queue_one", "allow"] = "skip"
    grace_seconds: float = Field(300.0, ge=1, le=86400)


class BuiltInJobCreate(JobSettings):
    name: Name
    kind: Literal["access_review", "control_evaluation", "report"]
    cron: str = Field(..., max_length=100)
    timezone: str = Field("UTC", max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            cron.zone(value)
        except cron.CronError as exc:
            raise ValueError(str(exc)) from None
        return value


class JobUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, max_length=100)
    timezone: str | None = Field(None, max_length=64)
    misfire_policy: Literal["run_once", "skip"] | None = None
    catchup_window_seconds: float | None = Field(None, ge=0, le=30 * 86400)
    overlap_policy: Literal["skip", "queue_one", "allow"] | None = None
    grace_seconds: float | None = Field(None, ge=1, le=86400)
    config: dict[str, Any] | None = None


def _check_cron(expression: str, timezone: str) -> None:
    try:
        cron.check(expression, timezone)
    except cron.CronError as exc:
        raise ValidationError(
            f"cron: {exc}", details=[{"field": "body.cron", "message": str(exc)}]
        ) from None


def get_job(session: Session, job_id: str, *, lock: bool = False) -> Job:
    job = session.get(Job, job_id, with_for_update=lock or None)
    if job is None:
        job = session.execute(select(Job).where(func.lower(Job.name) == job_id.lower())).scalar()
    if job is None:
        raise NotFound(f"no job with id or name {job_id!r}", target_type="job")
    return job


def create_built_in(session: Session, actor: Actor, data: BuiltInJobCreate) -> Job:
    actor.require(Permission.JOB_MANAGE)
    _check_cron(data.cron, data.timezone)
    from grantflow.schedules import runners

    runners.check_config(data.kind, data.config)
    if session.execute(select(Job.id).where(func.lower(Job.name) == data.name.lower())).scalar():
        raise Conflict(f"a job named {data.name!r} already exists", code="job_exists")
    now = utcnow()
    job = Job(
        name=data.name,
        kind=data.kind,
        config=data.config,
        cron=data.cron,
        timezone=data.timezone,
        status=JobStatus.ENABLED,
        status_changed_by=actor.label,
        status_changed_at=now,
        misfire_policy=data.misfire_policy,
        catchup_window_seconds=data.catchup_window_seconds,
        overlap_policy=data.overlap_policy,
        grace_seconds=data.grace_seconds,
        next_fire_at=cron.next_fire(data.cron, data.timezone, now),
        created_by=actor.label,
    )
    session.add(job)
    session.flush()
    audit.record(
        session,
        actor,
        "job.created",
        "job",
        job.id,
        {"name": job.name, "kind": job.kind, "cron": job.cron, "timezone": job.timezone},
    )
    return job


def update_job(session: Session, actor: Actor, job_id: str, data: JobUpdate) -> Job:
    actor.require(Permission.JOB_MANAGE)
    job = get_job(session, job_id, lock=True)
    sent = data.model_dump(exclude_unset=True)
    if job.kind == JobKind.WORKFLOW and ({"cron", "timezone", "config"} & set(sent)):
        raise ValidationError(
            "cron: a workflow job takes its cron and timezone from the workflow's schedule "
            "trigger; publish a new version to change them",
            details=[{"field": "body.cron", "message": "set by the workflow"}],
        )
    expression = sent.get("cron") or job.cron
    timezone = sent.get("timezone") or job.timezone
    _check_cron(expression, timezone)
    if "config" in sent:
        from grantflow.schedules import runners

        runners.check_config(job.kind, sent["config"] or {})
    changes = {}
    for name, value in sent.items():
        if value is not None and getattr(job, name) != value:
            changes[name] = [getattr(job, name), value]
            setattr(job, name, value)
    if {"cron", "timezone"} & set(changes):
        job.next_fire_at = cron.next_fire(job.cron, job.timezone, utcnow())
    if changes:
        audit.record(session, actor, "job.updated", "job", job.id, {"changes": changes})
    return job


def set_status(session: Session, actor: Actor, job_id: str, status: JobStatus) -> Job:
    actor.require(Permission.JOB_MANAGE)
    job = get_job(session, job_id, lock=True)
    if job.status == status:
        return job
    old = job.status
    job.status = status
    job.status_changed_by = actor.label
    job.status_changed_at = utcnow()
    if status == JobStatus.ENABLED and old == JobStatus.DISABLED:
        # disabled means off: re-enabling starts from now, not from the missed past
        job.next_fire_at = cron.next_fire(job.cron, job.timezone, utcnow())
    if status != JobStatus.ENABLED:
        job.overdue_since = None
    audit.record(session, actor, f"job.{status}", "job", job.id, {"from": old})
    return job


def sync_workflow_jobs(session: Session, now: dt.datetime | None = None) -> None:
    """One job per workflow whose active version is schedule-triggered, in step with it."""
    now = now or utcnow()
    scheduled = session.execute(
        select(Workflow).where(
            Workflow.trigger_type == "schedule", Workflow.active_version.is_not(None)
        )
    ).scalars()
    existing = {
        j.workflow_id: j
        for j in session.execute(select(Job).where(Job.kind == JobKind.WORKFLOW)).scalars()
    }
    for workflow in scheduled:
        assert workflow.active_version is not None
        trigger = plan_for(session, workflow.id, workflow.active_version).trigger
        expression, timezone = str(trigger.get("cron")), str(trigger.get("timezone") or "UTC")
        job = existing.get(workflow.id)
        if job is None:
            session.add(
                Job(
                    name=workflow.name[:100],
                    kind=JobKind.WORKFLOW,
                    workflow_id=workflow.id,
                    cron=expression,
                    timezone=timezone,
                    status=JobStatus.ENABLED,
                    status_changed_by="system:scheduler",
                    status_changed_at=now,
                    next_fire_at=cron.next_fire(expression, timezone, now),
                    created_by="system:scheduler",
                )
            )
        elif (job.cron, job.timezone) != (expression, timezone):
            job.cron, job.timezone = expression, timezone
            job.next_fire_at = cron.next_fire(expression, timezone, now)
    session.flush()


def preview(job_or_expr: Job | tuple[str, str], count: int = 10) -> dict[str, Any]:
    expression, timezone = (
        (job_or_expr.cron, job_or_expr.timezone) if isinstance(job_or_expr, Job) else job_or_expr
    )
    now = utcnow()
    tz = cron.zone(timezone)
    times = cron.fire_times(expression, timezone, now, limit=count)
    return {
        "cron": expression,
        "timezone": timezone,
        "description": cron.describe(expression),
        "next": [{"local": t.astimezone(tz).isoformat(), "utc": t.isoformat()} for t in times],
        "warnings": cron.warnings(expression, timezone, now),
    }


def list_jobs(
    session: Session, *, kind: str | None = None, cursor: str | None = None, limit: int = 50
) -> Page[Job]:
    stmt = select(Job)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Job.id > after)
    rows = session.execute(stmt.order_by(Job.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda j: j.id)


def occurrences(
    session: Session, job: Job, *, cursor: str | None = None, limit: int = 50
) -> Page[Occurrence]:
    stmt = select(Occurrence).where(Occurrence.job_id == job.id)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Occurrence.id < after)
    rows = (
        session.execute(
            stmt.order_by(Occurrence.scheduled_for.desc(), Occurrence.id.desc()).limit(limit + 1)
        )
        .scalars()
        .all()
    )
    return page_of(rows, limit, key=lambda o: o.id)


def health_note(session: Session, job: Job) -> str | None:
    """Says so when Run now succeeds while the scheduled occurrences fail."""
    last = {}
    for manual in (True, False):
        last[manual] = session.execute(
            select(Occurrence)
            .where(
                Occurrence.job_id == job.id,
                Occurrence.manual.is_(manual),
                Occurrence.outcome.is_not(None),
            )
            .order_by(Occurrence.scheduled_for.desc())
            .limit(1)
        ).scalar_one_or_none()
    manual_run, scheduled = last[True], last[False]
    if (
        manual_run is not None
        and scheduled is not None
        and manual_run.outcome == "succeeded"
        and scheduled.outcome in ("failed", "timed_out", "cancelled")
    ):
        return (
            f"Run now succeeded ({manual_run.scheduled_for:%Y-%m-%d %H:%M}Z) but the last "
            f"scheduled occurrence ({scheduled.scheduled_for:%Y-%m-%d %H:%M}Z) "
            f"{scheduled.outcome}: what differs is when it runs — check connections' health "
            "and rate limits at the scheduled time, and the run's failure reason"
        )
    return None
