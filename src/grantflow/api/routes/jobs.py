"""/api/v1/jobs: scheduled jobs (schedule-triggered workflows and built-in governance jobs),
their status, preview, Run now, and occurrences."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.queue.interface import Queue
from grantflow.schedules import cron, jobs, scheduler
from grantflow.schedules.jobs import BuiltInJobCreate, JobKind, JobUpdate
from grantflow.schedules.models import JobStatus
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT
from grantflow.strict import Int

router = APIRouter(prefix=API_PREFIX, tags=["jobs"])


class PreviewRequest(BaseModel):
    """An expression not saved yet: its next fire times, description and warnings."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(..., max_length=100, description="5 fields, e.g. '30 2 * * 1-5'")
    timezone: str = Field("UTC", max_length=64, description="IANA name, e.g. Europe/Berlin")
    count: Int = Field(10, ge=1, le=100)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            cron.zone(value)
        except cron.CronError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            cron.check(value)
        except cron.CronError as exc:
            raise ValueError(str(exc)) from None
        return value


def _sync(db: Database) -> None:
    """A workflow published a moment ago with a schedule trigger shows up as a job at once."""
    jobs.sync_now(db)


def _detail(db: Database, job_id: str) -> dict[str, Any]:
    with db.transaction() as session:
        return jobs.job_view(session, jobs.get_job(session, job_id))


@router.get("/jobs", response_model=PageOut[dict[str, Any]])
def list_jobs(
    kind: JobKind | None = Query(None),
    status: JobStatus | None = Query(None),
    overdue: bool | None = Query(None, description="only overdue jobs (or only those not)"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> PageOut[dict[str, Any]]:
    """Jobs by name: status, next fire time, last occurrence and outcome, overdue."""
    _sync(db)
    with db.transaction() as session:
        page = jobs.list_jobs(
            session, kind=kind, status=status, overdue=overdue, cursor=cursor, limit=limit
        )
        return PageOut(items=jobs.job_views(session, page.items), next_cursor=page.next_cursor)


@router.post("/jobs", status_code=201)
def create_job(
    body: BuiltInJobCreate,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """A built-in job (access_review, control_evaluation, report). Workflow jobs appear by
    themselves when a workflow with a schedule trigger is published."""
    _sync(db)  # a name taken by a workflow published a moment ago is a conflict
    with db.transaction() as session:
        job = jobs.create_built_in(session, actor, body)
        return jobs.job_view(session, job)


@router.post("/jobs/preview")
def preview_expression(
    body: PreviewRequest,
    _: Actor = Depends(Require(Permission.JOB_READ)),
) -> dict[str, Any]:
    """The next fire times (local and UTC), a plain-words description, and warnings for an
    expression that fires rarely or never."""
    return jobs.preview((body.cron, body.timezone), body.count)


@router.get("/jobs/{job_id}")
def get_job(
    job_id: str,
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """One job: status with who and when, next fire time (UTC and local), last occurrence and
    outcome, overdue since, the health note, settings, and its workflow."""
    _sync(db)
    return _detail(db, job_id)


@router.patch("/jobs/{job_id}")
def update_job(
    job_id: str,
    body: JobUpdate,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Change the schedule (built-in jobs), misfire and overlap policies, grace, config."""
    with db.transaction() as session:
        job = jobs.update_job(session, actor, job_id, body)
        job_id = job.id
    return _detail(db, job_id)


def _set_status(db: Database, actor: Actor, job_id: str, status: JobStatus) -> dict[str, Any]:
    with db.transaction() as session:
        job_id = jobs.set_status(session, actor, job_id, status).id
    return _detail(db, job_id)


@router.post("/jobs/{job_id}/pause")
def pause(
    job_id: str,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Paused: each scheduled time is recorded as a skipped occurrence naming who paused it."""
    return _set_status(db, actor, job_id, JobStatus.PAUSED)


@router.post("/jobs/{job_id}/resume")
def resume(
    job_id: str,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Back to enabled."""
    return _set_status(db, actor, job_id, JobStatus.ENABLED)


@router.post("/jobs/{job_id}/enable")
def enable(
    job_id: str,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Enabled; a job that was disabled starts from the next time after now."""
    return _set_status(db, actor, job_id, JobStatus.ENABLED)


@router.post("/jobs/{job_id}/disable")
def disable(
    job_id: str,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Disabled: off, no occurrences at all (Run now still works)."""
    return _set_status(db, actor, job_id, JobStatus.DISABLED)


@router.post("/jobs/{job_id}/run-now", status_code=201, response_model=dict[str, Any])
def run_now(
    job_id: str,
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """An occurrence on demand, recorded as manual (paused and disabled jobs too): fired with
    its run, or skipped with the reason (an unhealthy connection, an overlapping run). With an
    Idempotency-Key, a retry of the same request returns the same occurrence."""
    with db.transaction() as session:

        def fire() -> dict[str, Any]:
            occurrence = scheduler.run_now(session, actor, q, job_id)
            job = jobs.get_job(session, occurrence.job_id)
            return jobs.occurrence_views(session, [occurrence], job.timezone)[0]

        return once.respond(session, actor, 201, fire)


@router.get("/jobs/{job_id}/occurrences", response_model=PageOut[dict[str, Any]])
def list_occurrences(
    job_id: str,
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> PageOut[dict[str, Any]]:
    """Newest first: status (fired, skipped, missed, queued), reason, run link, outcome, lag,
    and whether it was a Run now (manual)."""
    with db.transaction() as session:
        job = jobs.get_job(session, job_id)
        page = jobs.occurrences(session, job, cursor=cursor, limit=limit)
        return PageOut(
            items=jobs.occurrence_views(session, page.items, job.timezone),
            next_cursor=page.next_cursor,
        )


@router.get("/jobs/{job_id}/preview")
def preview_job(
    job_id: str,
    count: int = Query(10, ge=1, le=100),
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """The job's next fire times in its timezone (and UTC), description and warnings."""
    with db.transaction() as session:
        return jobs.preview(jobs.get_job(session, job_id), count)
