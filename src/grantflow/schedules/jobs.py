"""Jobs: scheduled workflows (kept in step with their active version's `schedule` trigger) and
built-in governance jobs; status changes, preview, and their occurrences."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.models import Workflow
from grantflow.engine.plans import plan_for
from grantflow.errors import BadRequest, Conflict, NotFound, ValidationError
from grantflow.schedules import cron
from grantflow.schedules.models import Job, JobStatus, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from grantflow.store.ids import by_prefix
from grantflow.store.names import name_key
from grantflow.store.pagination import Page, decode_cursor, page_of
from grantflow.strict import NotNull, Number


class JobKind(enum.StrEnum):
    WORKFLOW = "workflow"
    ACCESS_REVIEW = "access_review"
    CONTROL_EVALUATION = "control_evaluation"
    REPORT = "report"


BUILT_IN = (JobKind.ACCESS_REVIEW, JobKind.CONTROL_EVALUATION, JobKind.REPORT)
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class JobSettings(BaseModel):
    """How a job behaves (for workflow jobs the cron and timezone come from the trigger)."""

    model_config = ConfigDict(extra="forbid")

    misfire_policy: Literal["run_once", "skip"] = "run_once"
    catchup_window_seconds: Number = Field(3600.0, ge=0, le=30 * 86400)
    overlap_policy: Literal["skip", "queue_one", "allow"] = "skip"
    grace_seconds: Number = Field(300.0, ge=1, le=86400)


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

    cron: NotNull[str] = Field(None, max_length=100)
    timezone: NotNull[str] = Field(None, max_length=64)
    misfire_policy: NotNull[Literal["run_once", "skip"]] = None
    catchup_window_seconds: NotNull[Number] = Field(None, ge=0, le=30 * 86400)
    overlap_policy: NotNull[Literal["skip", "queue_one", "allow"]] = None
    grace_seconds: NotNull[Number] = Field(None, ge=1, le=86400)
    config: NotNull[dict[str, Any]] = None


def _check_cron(expression: str, timezone: str) -> None:
    """A bad timezone names `timezone`, a bad expression names `cron`."""
    for field, check in (
        ("timezone", lambda: cron.zone(timezone)),
        ("cron", lambda: cron.check(expression, timezone)),
    ):
        try:
            check()
        except cron.CronError as exc:
            raise ValidationError(
                f"{field}: {exc}", details=[{"field": f"body.{field}", "message": str(exc)}]
            ) from None


def get_job(session: Session, job_id: str, *, lock: bool = False) -> Job:
    job = session.get(Job, job_id, with_for_update=lock or None)
    if job is None:
        job = session.execute(select(Job).where(Job.name_key == name_key(job_id))).scalar()
    if job is None:
        job = by_prefix(session, Job, job_id, "job", lock=lock, named=True)
    if job is None:
        raise NotFound(f"no job with id or name {job_id!r}", target_type="job")
    return job


def create_built_in(session: Session, actor: Actor, data: BuiltInJobCreate) -> Job:
    actor.require(Permission.JOB_MANAGE)
    _check_cron(data.cron, data.timezone)
    from grantflow.schedules import runners

    runners.check_config(data.kind, data.config)
    if session.execute(select(Job.id).where(Job.name_key == name_key(data.name))).scalar():
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
        job.next_fire_at = _rescheduled(job, utcnow())
    if changes:
        audit.record(session, actor, "job.updated", "job", job.id, {"changes": changes})
    return job


def _rescheduled(job: Job, now: dt.datetime) -> dt.datetime | None:
    """The next time after a cron change. A time of the old schedule that is already due but
    not yet handled stays first, so it still gets its occurrence: nothing skips silently."""
    upcoming = _next_or_none(job.cron, job.timezone, now)
    due = job.next_fire_at
    if due is not None and due <= now:
        return due
    return upcoming


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


# (workflow id, version) -> (cron, timezone) of its schedule trigger; versions are immutable
_TRIGGERS: dict[tuple[str, int], tuple[str, str]] = {}
# who a job's status changed by when its workflow stops (or starts again) being scheduled
SYNC_ACTOR = "system:scheduler"


def _trigger_of(session: Session, workflow_id: str, version: int) -> tuple[str, str]:
    key = (workflow_id, version)
    if key not in _TRIGGERS:
        trigger = plan_for(session, workflow_id, version).trigger
        _TRIGGERS[key] = (str(trigger.get("cron")), str(trigger.get("timezone") or "UTC"))
    return _TRIGGERS[key]


def sync_workflow_jobs(session: Session, now: dt.datetime | None = None) -> None:
    """One job per workflow whose active version is schedule-triggered, in step with it.

    A workflow whose new active version has another trigger gets its job disabled (by
    system:scheduler); publishing a schedule trigger again re-enables it, unless a person
    disabled it. Cheap when nothing changed (two queries), so the scheduler runs it every tick.
    """
    now = now or utcnow()
    scheduled = {
        row.id: row
        for row in session.execute(
            select(Workflow.id, Workflow.name, Workflow.active_version).where(
                Workflow.trigger_type == "schedule", Workflow.active_version.is_not(None)
            )
        )
    }
    existing = {
        row.workflow_id: row
        for row in session.execute(
            select(
                Job.id,
                Job.workflow_id,
                Job.cron,
                Job.timezone,
                Job.status,
                Job.status_changed_by,
            ).where(Job.kind == JobKind.WORKFLOW)
        )
    }
    names: set[str] | None = None
    for workflow_id, workflow in scheduled.items():
        assert workflow.active_version is not None
        expression, timezone = _trigger_of(session, workflow_id, workflow.active_version)
        row = existing.get(workflow_id)
        if row is None:
            if names is None:
                names = set(session.execute(select(Job.name_key)).scalars())
            name = workflow.name[:100]
            if name_key(name) in names:  # a built-in job has the name: never block scheduling
                name = f"{workflow.name[:80]} (workflow {workflow_id[:8]})"
            names.add(name_key(name))
            session.add(
                Job(
                    name=name,
                    kind=JobKind.WORKFLOW,
                    workflow_id=workflow_id,
                    cron=expression,
                    timezone=timezone,
                    status=JobStatus.ENABLED,
                    status_changed_by=SYNC_ACTOR,
                    status_changed_at=now,
                    next_fire_at=_next_or_none(expression, timezone, now),
                    created_by=SYNC_ACTOR,
                )
            )
            continue
        if (row.cron, row.timezone) != (expression, timezone):
            job = session.get_one(Job, row.id)
            job.cron, job.timezone = expression, timezone
            job.next_fire_at = _rescheduled(job, now)
        if row.status == JobStatus.DISABLED and row.status_changed_by == SYNC_ACTOR:
            job = session.get_one(Job, row.id)
            job.status, job.status_changed_at = JobStatus.ENABLED, now
            job.next_fire_at = _next_or_none(expression, timezone, now)
    for workflow_id, row in existing.items():
        if workflow_id not in scheduled and row.status != JobStatus.DISABLED:
            job = session.get_one(Job, row.id)
            job.status, job.status_changed_by, job.status_changed_at = (
                JobStatus.DISABLED,
                SYNC_ACTOR,
                now,
            )
            job.overdue_since = None
            audit.record(
                session,
                Actor.system("scheduler"),
                "job.disabled",
                "job",
                job.id,
                {"from": row.status, "reason": "its active version has no schedule trigger"},
            )
    session.flush()


def sync_now(database: Database) -> None:
    """Before showing jobs: a workflow published a moment ago with a schedule trigger shows
    up as a job at once (API, CLI and console call this before listing or showing jobs)."""
    try:
        with database.transaction() as session:
            sync_workflow_jobs(session)
    except IntegrityError:
        pass  # the scheduler synced the same workflow at the same moment: it exists now


def _next_or_none(expression: str, timezone: str, now: dt.datetime) -> dt.datetime | None:
    """The next fire time; None (rather than an error that stops every job) when the
    published expression cannot be read."""
    try:
        return cron.next_fire(expression, timezone, now)
    except cron.CronError:
        return None


def preview(
    job_or_expr: Job | tuple[str, str], count: int = 10, now: dt.datetime | None = None
) -> dict[str, Any]:
    expression, timezone = (
        (job_or_expr.cron, job_or_expr.timezone) if isinstance(job_or_expr, Job) else job_or_expr
    )
    _check_cron(expression, timezone)
    now = now or utcnow()
    tz = cron.zone(timezone)
    times = cron.fire_times(expression, timezone, now, limit=count)
    return {
        "cron": expression,
        "timezone": timezone,
        "description": cron.describe(expression, timezone),
        "next": [{"local": t.astimezone(tz).isoformat(), "utc": t.isoformat()} for t in times],
        "warnings": cron.warnings(expression, timezone, now),
    }


def list_jobs(
    session: Session,
    *,
    kind: str | None = None,
    status: str | None = None,
    overdue: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Job]:
    stmt = select(Job)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if status:
        stmt = stmt.where(Job.status == status)
    if overdue is not None:
        stmt = stmt.where(
            Job.overdue_since.is_not(None) if overdue else Job.overdue_since.is_(None)
        )
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Job.name > after)
    rows = session.execute(stmt.order_by(Job.name).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda j: j.name)


def occurrences(
    session: Session, job: Job, *, cursor: str | None = None, limit: int = 50
) -> Page[Occurrence]:
    """Newest scheduled time first; the cursor carries (scheduled_for, id) of the last row."""
    stmt = select(Occurrence).where(Occurrence.job_id == job.id)
    after = decode_cursor(cursor, str)
    if after is not None:
        at_text, _, last_id = after.partition("|")
        try:
            at = dt.datetime.fromisoformat(at_text)
        except ValueError:
            at = None
        if at is None or not last_id:
            raise BadRequest(
                "cursor: not a cursor returned by this API",
                next_action="pass the next_cursor value from the previous page unchanged",
                details=[{"field": "query.cursor", "message": "invalid cursor"}],
            )
        stmt = stmt.where(
            (Occurrence.scheduled_for < at)
            | ((Occurrence.scheduled_for == at) & (Occurrence.id < last_id))
        )
    rows = (
        session.execute(
            stmt.order_by(Occurrence.scheduled_for.desc(), Occurrence.id.desc()).limit(limit + 1)
        )
        .scalars()
        .all()
    )
    return page_of(rows, limit, key=lambda o: f"{o.scheduled_for.isoformat()}|{o.id}")


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
        head = (
            f"Run now succeeded ({manual_run.scheduled_for:%Y-%m-%d %H:%M}Z) but the last "
            f"scheduled occurrence ({scheduled.scheduled_for:%Y-%m-%d %H:%M}Z) "
            f"{scheduled.outcome}"
        )
        if job.kind == JobKind.WORKFLOW:
            return (
                f"{head}: what differs is when it runs — check connections' health and rate "
                "limits at the scheduled time, and the run's failure reason"
            )
        # a built-in job has no run nor connection: its occurrence says why it failed
        return (
            f"{head} ({scheduled.reason or 'no reason recorded'}): what differs is when it "
            "runs — the data and the workers' load at the scheduled time"
        )
    return None


# --- how a job and its occurrences are shown (API and CLI alike) ---------------------------------
_API = "/api/v1"  # links to runs and workflows


def _local(value: dt.datetime | None, timezone: str) -> str | None:
    if value is None:
        return None
    try:
        return value.astimezone(cron.zone(timezone)).isoformat()
    except cron.CronError:
        return None


def _run_statuses(session: Session, run_ids: set[str]) -> dict[str, str]:
    from grantflow.engine.models import Run

    if not run_ids:
        return {}
    rows = session.execute(select(Run.id, Run.status).where(Run.id.in_(run_ids))).all()
    return {str(run_id): str(status) for run_id, status in rows}


def occurrence_view(
    occurrence: Occurrence, timezone: str, run_status: str | None = None
) -> dict[str, Any]:
    """An occurrence: what became of one scheduled time (or a Run now) and why."""
    outcome = occurrence.outcome
    if outcome is None and run_status in ("succeeded", "failed", "cancelled", "timed_out"):
        outcome = run_status
    return {
        "id": occurrence.id,
        "job_id": occurrence.job_id,
        "scheduled_for": occurrence.scheduled_for,
        "scheduled_for_local": _local(occurrence.scheduled_for, timezone),
        "manual": occurrence.manual,
        "status": occurrence.status,
        "reason": occurrence.reason,
        "run_id": occurrence.run_id,
        "run": f"{_API}/runs/{occurrence.run_id}" if occurrence.run_id else None,
        "run_status": run_status,
        "result_type": occurrence.result_type,
        "result_id": occurrence.result_id,
        "outcome": outcome,
        "started_at": occurrence.started_at,
        "lag_ms": occurrence.lag_ms,
        "created_by": occurrence.created_by,
        "created_at": occurrence.created_at,
    }


def occurrence_views(
    session: Session, items: Sequence[Occurrence], timezone: str
) -> list[dict[str, Any]]:
    statuses = _run_statuses(session, {o.run_id for o in items if o.run_id})
    return [
        occurrence_view(o, timezone, statuses.get(o.run_id) if o.run_id else None) for o in items
    ]


def _last_occurrences(session: Session, job_ids: list[str]) -> dict[str, Occurrence]:
    """Each job's latest occurrence: one step down its (job_id, scheduled_for) index apiece,
    not a ranking of every occurrence (a five-minute job has 100,000 in a year)."""
    if not job_ids:
        return {}
    latest = (
        select(Occurrence.id)
        .where(Occurrence.job_id == Job.id)
        .order_by(Occurrence.scheduled_for.desc(), Occurrence.id.desc())
        .limit(1)
        .correlate(Job)
        .scalar_subquery()
    )
    found = session.execute(
        select(Occurrence).where(Occurrence.id.in_(select(latest).where(Job.id.in_(job_ids))))
    ).scalars()
    return {o.job_id: o for o in found}


def job_views(
    session: Session, items: Sequence[Job], *, detail: bool = False
) -> list[dict[str, Any]]:
    """Jobs as the API and CLI show them: status with who and when, the next fire time in UTC
    and in the job's timezone, the last occurrence and its outcome, overdue, settings."""
    last = _last_occurrences(session, [j.id for j in items])
    statuses = _run_statuses(session, {o.run_id for o in last.values() if o.run_id})
    workflow_ids = {j.workflow_id for j in items if j.workflow_id}
    workflows = {
        w.id: w
        for w in (
            session.execute(select(Workflow).where(Workflow.id.in_(workflow_ids))).scalars()
            if workflow_ids
            else []
        )
    }
    shown = []
    for job in items:
        next_at = None if job.status == JobStatus.DISABLED else job.next_fire_at
        occurrence = last.get(job.id)
        workflow = workflows.get(job.workflow_id) if job.workflow_id else None
        view: dict[str, Any] = {
            "id": job.id,
            "name": job.name,
            "kind": job.kind,
            "status": job.status,
            "status_changed_by": job.status_changed_by,
            "status_changed_at": job.status_changed_at,
            "cron": job.cron,
            "timezone": job.timezone,
            "description": cron.describe(job.cron, job.timezone),
            "next_fire_at": next_at,
            "next_fire_at_local": _local(next_at, job.timezone),
            "overdue": job.overdue_since is not None,
            "overdue_since": job.overdue_since,
            "last_occurrence": (
                occurrence_view(
                    occurrence,
                    job.timezone,
                    statuses.get(occurrence.run_id) if occurrence.run_id else None,
                )
                if occurrence
                else None
            ),
            "settings": {
                "misfire_policy": job.misfire_policy,
                "catchup_window_seconds": job.catchup_window_seconds,
                "overlap_policy": job.overlap_policy,
                "grace_seconds": job.grace_seconds,
            },
            "config": job.config,
            "workflow": (
                {
                    "id": workflow.id,
                    "name": workflow.name,
                    "status": str(workflow.status),
                    "link": f"{_API}/workflows/{workflow.id}",
                }
                if workflow
                else None
            ),
            "created_by": job.created_by,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
        }
        if detail:
            view["health_note"] = health_note(session, job)
        shown.append(view)
    return shown


def job_view(session: Session, job: Job) -> dict[str, Any]:
    """One job in detail: its view plus the health note (Run now succeeds, schedule fails)."""
    return job_views(session, [job], detail=True)[0]
