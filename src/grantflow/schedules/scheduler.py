"""The scheduler: one leader at a time (a lease row in the database) turns each due scheduled
time into exactly one occurrence — fired, skipped with a reason, or missed — and applies the
misfire policy to what it finds after downtime. Occurrences are keyed by job and scheduled
time, so even two leaders for a moment cannot fire one twice."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.models import Connection, ConnectionStatus
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.plans import plan_for
from grantflow.engine.runs import start_run
from grantflow.engine.states import RunStatus
from grantflow.people.notifications import NotificationKind, notify, resolve
from grantflow.queue.interface import Queue
from grantflow.schedules import cron, jobs, runners
from grantflow.schedules.jobs import JobKind, JobStatus
from grantflow.schedules.models import Job, Occurrence, SchedulerLease
from grantflow.store.base import utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.scheduler")

LEASE = "scheduler"
SCHEDULER = Actor.system("scheduler")
_STARTER = Actor(label="system:scheduler", permissions=frozenset({Permission.RUN_OPERATE}))
_MAX_BACKLOG = 1000  # scheduled times examined per job per tick after a long downtime


@dataclass
class TickResult:
    leader: bool
    occurrences: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        database: Database,
        queue: Queue,
        *,
        holder: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        lease_seconds: float = 15.0,
        tick_seconds: float = 1.0,
    ) -> None:
        self.database = database
        self.queue = queue
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.tick_seconds = tick_seconds
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.release()

    def run_forever(self) -> None:
        log.info("scheduler.started", holder=self.holder)
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler.tick_failed")
            self.stopping.wait(self.tick_seconds)
        log.info("scheduler.stopped", holder=self.holder)

    def tick(self) -> TickResult:
        """Handle every job that is due; only the leader acts."""
        if not self.acquire():
            return TickResult(leader=False)
        result = TickResult(leader=True)
        now = self.clock()
        with self.database.transaction() as session:
            jobs.sync_workflow_jobs(session, now)
        with self.database.transaction() as session:
            due = list(
                session.execute(
                    select(Job.id).where(
                        Job.status != JobStatus.DISABLED,
                        Job.next_fire_at.is_not(None),
                        Job.next_fire_at <= now,
                    )
                ).scalars()
            )
        for job_id in due:
            try:
                with self.database.transaction() as session:
                    result.occurrences += self._handle(session, job_id, now)
            except IntegrityError:
                # another scheduler recorded these occurrences first: they are not fired twice
                log.info("scheduler.occurrence_exists", job_id=job_id)
        return result

    # --- leadership ---------------------------------------------------------------------------
    def acquire(self) -> bool:
        now = self.clock()
        with self.database.transaction() as session:
            taken = session.execute(  # type: ignore[attr-defined]
                update(SchedulerLease)
                .where(
                    SchedulerLease.name == LEASE,
                    or_(SchedulerLease.holder == self.holder, SchedulerLease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=now + self.lease)
                .execution_options(synchronize_session=False)
            ).rowcount
            if taken:
                return True
            if session.get(SchedulerLease, LEASE) is not None:
                return False
        try:
            with self.database.transaction() as session:
                session.add(
                    SchedulerLease(
                        name=LEASE, holder=self.holder, expires_at=now + self.lease, acquired_at=now
                    )
                )
            return True
        except IntegrityError:
            return False

    def release(self) -> None:
        with self.database.transaction() as session:
            session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == LEASE, SchedulerLease.holder == self.holder)
                .values(expires_at=self.clock() - dt.timedelta(seconds=1))
            )

    # --- one job ------------------------------------------------------------------------------
    def _handle(self, session: Session, job_id: str, now: dt.datetime) -> list[str]:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.next_fire_at is None or job.next_fire_at > now:
            return []
        first = job.next_fire_at
        later = cron.fire_times(job.cron, job.timezone, first, until=now, limit=_MAX_BACKLOG)
        times = [first, *later]
        grace = dt.timedelta(seconds=job.grace_seconds)
        window = dt.timedelta(seconds=job.catchup_window_seconds)
        late = [t for t in times if now - t > grace]
        catch_up = max((t for t in late if now - t <= window), default=None)
        recorded = []
        for at in times:
            if at not in late:
                recorded.append(fire(session, self.queue, job, at, now))
            elif job.misfire_policy == "run_once" and at == catch_up:
                recorded.append(fire(session, self.queue, job, at, now, catch_up=True))
            elif now - at > window:
                recorded.append(
                    record(
                        session,
                        job,
                        at,
                        "skipped",
                        now,
                        f"outside the catch-up window: Grantflow was not running at "
                        f"{at:%Y-%m-%d %H:%M}Z and the window is {window}",
                    )
                )
            else:
                why = (
                    "the misfire policy is skip"
                    if job.misfire_policy == "skip"
                    else f"caught up by one run for {catch_up:%Y-%m-%d %H:%M}Z (run_once)"
                )
                recorded.append(
                    record(
                        session,
                        job,
                        at,
                        "missed",
                        now,
                        f"Grantflow was not running at {at:%Y-%m-%d %H:%M}Z; {why}",
                    )
                )
        job.next_fire_at = cron.next_fire(job.cron, job.timezone, max(times[-1], now))
        if job.overdue_since is not None:
            job.overdue_since = None
            resolve(session, f"job_overdue:{job.id}")
        return recorded


def record(
    session: Session,
    job: Job,
    at: dt.datetime,
    status: str,
    now: dt.datetime,
    reason: str | None,
    *,
    manual: bool = False,
    by: str = "system:scheduler",
) -> str:
    occurrence = Occurrence(
        job_id=job.id,
        scheduled_for=at,
        manual=manual,
        status=status,
        reason=reason,
        created_by=by,
        created_at=now,
    )
    session.add(occurrence)
    session.flush()  # the unique key (job, time, manual) refuses a second scheduler here
    return occurrence.id


def fire(
    session: Session,
    queue: Queue,
    job: Job,
    at: dt.datetime,
    now: dt.datetime,
    *,
    manual: bool = False,
    by: str = "system:scheduler",
    catch_up: bool = False,
) -> str:
    """Start the job for scheduled time `at`, or record why not."""
    reason = _why_not(session, job, manual)
    if reason is not None:
        return record(session, job, at, "skipped", now, reason, manual=manual, by=by)
    previous = _running(session, job)
    if previous is not None and job.overlap_policy != "allow":
        if job.overlap_policy == "queue_one" and not _queued(session, job):
            return record(
                session,
                job,
                at,
                "queued",
                now,
                f"waiting for run {previous.id} of the previous occurrence to finish "
                "(overlap policy queue_one)",
                manual=manual,
                by=by,
            )
        return record(
            session,
            job,
            at,
            "skipped",
            now,
            f"overlap: run {previous.id} of the previous occurrence is still {previous.status}"
            + (" and one is already queued" if job.overlap_policy == "queue_one" else ""),
            manual=manual,
            by=by,
        )
    occurrence_id = record(session, job, at, "fired", now, None, manual=manual, by=by)
    _start(session, queue, job, session.get(Occurrence, occurrence_id), now, catch_up)
    return occurrence_id


def _start(
    session: Session,
    queue: Queue,
    job: Job,
    occurrence: Occurrence | None,
    now: dt.datetime,
    catch_up: bool = False,
) -> None:
    assert occurrence is not None
    occurrence.status = "fired"
    occurrence.started_at = now
    occurrence.lag_ms = round((now - occurrence.scheduled_for).total_seconds() * 1000, 3)
    if catch_up:
        occurrence.reason = "a catch-up run after downtime (misfire policy run_once)"
    if job.kind == JobKind.WORKFLOW:
        assert job.workflow_id is not None
        run = start_run(
            session,
            _STARTER,
            queue,
            job.workflow_id,
            {
                "scheduled_for": occurrence.scheduled_for.isoformat(),
                "occurrence_id": occurrence.id,
                "manual": occurrence.manual,
            },
            trigger="manual" if occurrence.manual else "schedule",
        )
        occurrence.run_id = run.id
        if run.status == RunStatus.FAILED:  # a corrupt plan fails at once, visibly
            occurrence.outcome = "failed"
        return
    result = runners.run(session, queue, job, occurrence)
    occurrence.result_type, occurrence.result_id = result.result_type, result.result_id
    occurrence.outcome = result.outcome


def _why_not(session: Session, job: Job, manual: bool) -> str | None:
    if job.status == JobStatus.PAUSED and not manual:
        return f"the job is paused (by {job.status_changed_by} at {job.status_changed_at})"
    if job.kind != JobKind.WORKFLOW:
        return None
    workflow = session.get(Workflow, job.workflow_id) if job.workflow_id else None
    if workflow is None:
        return "its workflow no longer exists"
    if not workflow.enabled:
        return f"workflow {workflow.name!r} is disabled"
    if workflow.active_version is None:
        return f"workflow {workflow.name!r} has no active version"
    plan = plan_for(session, workflow.id, workflow.active_version)
    names = sorted(
        {str(s.config.get("connection")) for s in plan.steps.values() if s.config.get("connection")}
    )
    if names and plan.application_id:
        for connection in session.execute(
            select(Connection).where(
                Connection.application_id == plan.application_id, Connection.name.in_(names)
            )
        ).scalars():
            if connection.status != ConnectionStatus.CONNECTED:
                return (
                    f"connection {connection.name!r} is {connection.status}"
                    + (f": {connection.status_reason}" if connection.status_reason else "")
                    + " — fix it (Test connection) and use Run now"
                )
    return None


def _running(session: Session, job: Job) -> Run | None:
    runs = select(Occurrence.run_id).where(
        Occurrence.job_id == job.id, Occurrence.run_id.is_not(None)
    )
    return session.execute(
        select(Run)
        .where(
            Run.id.in_(runs),
            Run.status.not_in(["succeeded", "failed", "cancelled", "timed_out"]),
        )
        .limit(1)
    ).scalar_one_or_none()


def _queued(session: Session, job: Job) -> Occurrence | None:
    return (
        session.execute(
            select(Occurrence).where(Occurrence.job_id == job.id, Occurrence.status == "queued")
        )
        .scalars()
        .first()
    )


def start_queued(session: Session, queue: Queue, job: Job, now: dt.datetime) -> None:
    """The previous occurrence's run ended: the one queued behind it (queue_one) starts."""
    waiting = _queued(session, job)
    if waiting is not None and _running(session, job) is None:
        waiting.reason = (waiting.reason or "") + "; started when the previous run ended"
        _start(session, queue, job, waiting, now)


def run_now(session: Session, actor: Actor, queue: Queue, job_id: str) -> Occurrence:
    """An occurrence on demand, recorded as manual (allowed for paused jobs too)."""
    actor.require(Permission.JOB_MANAGE)
    job = jobs.get_job(session, job_id, lock=True)
    now = utcnow()
    occurrence_id = fire(session, queue, job, now, now, manual=True, by=actor.label)
    occurrence = session.get(Occurrence, occurrence_id)
    assert occurrence is not None
    from grantflow import audit

    audit.record(
        session,
        actor,
        "job.run_now",
        "job",
        job.id,
        {"occurrence": occurrence.id, "status": occurrence.status, "reason": occurrence.reason},
    )
    return occurrence


def mark_overdue(session: Session, now: dt.datetime) -> list[str]:
    """Jobs whose next occurrence is past its grace period with nothing recorded (the
    scheduler is down or behind): flagged, with one job_overdue notification each."""
    flagged = []
    for job in session.execute(
        select(Job).where(
            Job.status == JobStatus.ENABLED,
            Job.next_fire_at.is_not(None),
            Job.next_fire_at < now,
            Job.overdue_since.is_(None),
        )
    ).scalars():
        assert job.next_fire_at is not None
        if now - job.next_fire_at <= dt.timedelta(seconds=job.grace_seconds):
            continue
        job.overdue_since = job.next_fire_at
        notify(
            session,
            NotificationKind.JOB_OVERDUE,
            f"job_overdue:{job.id}",
            f"Job {job.name!r} is overdue: its occurrence at {job.next_fire_at:%Y-%m-%d %H:%M}Z "
            "has not started",
            body="Is a scheduler running? (`grantflow scheduler`, or `grantflow serve`)",
            target_type="job",
            target_id=job.id,
        )
        flagged.append(job.id)
    return flagged
