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
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.models import Connection, ConnectionStatus
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.plans import plan_for
from grantflow.engine.runs import start_run
from grantflow.engine.states import RunStatus
from grantflow.errors import GrantflowError
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
    more: bool = False  # stopped early (lost the lease, or a backlog left for the next tick)


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
        batch_size: int = 200,
    ) -> None:
        self.database = database
        self.queue = queue
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.tick_seconds = tick_seconds
        self.batch_size = batch_size
        self.leading = False
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
        """Tick until `stopping` is set. The leader sleeps until the earliest due job (at most
        `tick_seconds`), so an occurrence fires within milliseconds of its time."""
        log.info("scheduler.started", holder=self.holder)
        while not self.stopping.is_set():
            wait = self.tick_seconds
            try:
                result = self.tick()
                if result.more:
                    wait = 0.0
                elif result.leader:
                    wait = self._until_next_due()
            except Exception:
                log.exception("scheduler.tick_failed")
            self.stopping.wait(wait)
        log.info("scheduler.stopped", holder=self.holder)

    def _until_next_due(self) -> float:
        with self.database.transaction() as session:
            earliest = session.execute(
                select(func.min(Job.next_fire_at)).where(
                    Job.status != JobStatus.DISABLED, Job.next_fire_at.is_not(None)
                )
            ).scalar()
        if earliest is None:
            return self.tick_seconds
        seconds = (earliest - self.clock()).total_seconds()
        # still due (a job that failed, or one locked by another transaction): the next tick
        return self.tick_seconds if seconds <= 0 else min(self.tick_seconds, seconds)

    def tick(self) -> TickResult:
        """Handle every job that is due; only the leader acts."""
        if not self.acquire():
            return TickResult(leader=False)
        result = TickResult(leader=True)
        now = self.clock()
        try:
            with self.database.transaction() as session:
                jobs.sync_workflow_jobs(session, now)
        except IntegrityError:
            log.info("scheduler.sync_raced")  # the API synced the same workflow: next tick
        with self.database.transaction() as session:
            due = list(
                session.execute(
                    select(Job.id)
                    .where(
                        Job.status != JobStatus.DISABLED,
                        Job.next_fire_at.is_not(None),
                        Job.next_fire_at <= now,
                    )
                    .order_by(Job.next_fire_at, Job.id)
                ).scalars()
            )
        for start in range(0, len(due), self.batch_size):
            if start and not self.acquire():  # a long tick renews the lease between batches
                result.more = True
                break
            found, more = self._handle_batch(due[start : start + self.batch_size])
            result.occurrences += found
            result.more = result.more or more
        return result

    def _handle_batch(self, job_ids: list[str]) -> tuple[list[str], bool]:
        """Due jobs in one transaction (rows another scheduler holds are skipped); if any job
        fails, the batch is redone one job per transaction so the others still fire."""
        try:
            with self.database.transaction() as session:
                found: list[str] = []
                more = False
                batch = list(
                    session.execute(
                        select(Job)
                        .where(Job.id.in_(job_ids))
                        .order_by(Job.next_fire_at, Job.id)
                        .with_for_update(skip_locked=True)
                    ).scalars()
                )
                _preload(session, batch)
                for job in batch:
                    handled, backlog = self._handle(session, job, self.clock())
                    found += handled
                    more = more or backlog
                return found, more
        except Exception:
            if len(job_ids) == 1:
                log.exception("scheduler.job_failed", job_id=job_ids[0])
                return [], False
        log.warning("scheduler.batch_failed", jobs=len(job_ids))
        found, more = [], False
        for job_id in job_ids:
            handled, backlog = self._handle_batch([job_id])
            found += handled
            more = more or backlog
        return found, more

    # --- leadership ---------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Renew our lease, or take an expired one (a new term), or create the first."""
        now = self.clock()
        try:
            with self.database.transaction() as session:
                lease = session.get(SchedulerLease, LEASE, with_for_update=True)
                if lease is None:
                    session.add(
                        SchedulerLease(
                            name=LEASE,
                            holder=self.holder,
                            expires_at=now + self.lease,
                            acquired_at=now,
                            term=1,
                        )
                    )
                    session.flush()
                    previous, term = None, 1
                elif lease.holder == self.holder and lease.expires_at >= now:
                    lease.expires_at = now + self.lease
                    self.leading = True
                    return True
                elif lease.expires_at < now:
                    previous, term = lease.holder, lease.term + 1
                    lease.holder, lease.acquired_at, lease.term = self.holder, now, term
                    lease.expires_at = now + self.lease
                else:
                    if self.leading:
                        log.warning("scheduler.leadership_lost", holder=self.holder)
                    self.leading = False
                    return False
        except IntegrityError:  # another scheduler created the first lease at the same moment
            self.leading = False
            return False
        self.leading = True
        log.info("scheduler.leader", holder=self.holder, term=term, previous=previous)
        return True

    def release(self) -> None:
        with self.database.transaction() as session:
            session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == LEASE, SchedulerLease.holder == self.holder)
                .values(expires_at=self.clock() - dt.timedelta(seconds=1))
            )
        if self.leading:
            log.info("scheduler.released", holder=self.holder)
        self.leading = False

    # --- one job ------------------------------------------------------------------------------
    def _handle(self, session: Session, job: Job, now: dt.datetime) -> tuple[list[str], bool]:
        """Every scheduled time of `job` up to `now`: one occurrence each. Returns the
        occurrences and whether a backlog is left for the next tick."""
        if job.status == JobStatus.DISABLED or job.next_fire_at is None or job.next_fire_at > now:
            return [], False  # handled meanwhile by another scheduler, or just disabled
        first = job.next_fire_at
        later = cron.fire_times(job.cron, job.timezone, first, until=now, limit=_MAX_BACKLOG)
        backlog = len(later) >= _MAX_BACKLOG  # the rest is recorded by the next ticks
        times = [first, *later]
        grace = dt.timedelta(seconds=job.grace_seconds)
        window = dt.timedelta(seconds=job.catchup_window_seconds)
        late = {t for t in times if now - t > grace}
        # run_once: one run for the latest missed time inside the window (when the backlog
        # goes on, a later batch holds that time)
        catch_up = None if backlog else max((t for t in late if now - t <= window), default=None)
        recorded = []
        for at in times:
            if at not in late or job.status == JobStatus.PAUSED:
                # on time (or paused: skipped, naming who paused it, whatever the misfire)
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
                    ).id
                )
            else:
                if job.misfire_policy == "skip":
                    why = "the misfire policy is skip"
                elif catch_up is not None:
                    why = f"caught up by one run for {catch_up:%Y-%m-%d %H:%M}Z (run_once)"
                else:
                    why = "caught up by one run for a later time (run_once)"
                recorded.append(
                    record(
                        session,
                        job,
                        at,
                        "missed",
                        now,
                        f"Grantflow was not running at {at:%Y-%m-%d %H:%M}Z; {why}",
                    ).id
                )
        job.next_fire_at = cron.next_fire(
            job.cron, job.timezone, times[-1] if backlog else max(times[-1], now)
        )
        if job.overdue_since is not None:
            job.overdue_since = None
            resolve(session, f"job_overdue:{job.id}")
        return recorded, backlog


def _preload(session: Session, batch: list[Job]) -> None:
    """The batch's workflows in one query (later lookups hit the session's identity map)."""
    ids = {job.workflow_id for job in batch if job.workflow_id}
    if ids:
        session.execute(select(Workflow).where(Workflow.id.in_(ids))).scalars().all()


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
) -> Occurrence:
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
    return occurrence


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
        return record(session, job, at, "skipped", now, reason, manual=manual, by=by).id
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
            ).id
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
        ).id
    occurrence = record(session, job, at, "fired", now, None, manual=manual, by=by)
    _start(session, queue, job, occurrence, now, catch_up)
    return occurrence.id


def _start(
    session: Session,
    queue: Queue,
    job: Job,
    occurrence: Occurrence,
    now: dt.datetime,
    catch_up: bool = False,
) -> None:
    occurrence.status = "fired"
    occurrence.started_at = now
    occurrence.lag_ms = round((now - occurrence.scheduled_for).total_seconds() * 1000, 3)
    if catch_up:
        occurrence.reason = "a catch-up run after downtime (misfire policy run_once)"
    if job.kind == JobKind.WORKFLOW:
        assert job.workflow_id is not None
        try:
            # start_run refuses (disabled, no active version) before it writes anything
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
        except GrantflowError as exc:
            occurrence.status, occurrence.started_at, occurrence.lag_ms = "skipped", None, None
            occurrence.reason = f"the run could not start: {exc.message}"
            return
        occurrence.run_id = run.id
        if run.status == RunStatus.FAILED:  # a corrupt plan fails at once, visibly
            occurrence.outcome = "failed"
        return
    try:
        with session.begin_nested():  # what a failing runner wrote is undone, not the record
            result = runners.run(session, queue, job, occurrence)
    except Exception as exc:
        if not isinstance(exc, GrantflowError):
            log.exception("scheduler.runner_failed", job_id=job.id, kind=job.kind)
        message = exc.message if isinstance(exc, GrantflowError) else f"internal error: {exc!r}"
        occurrence.outcome = "failed"
        occurrence.reason = f"{job.kind} failed: {message}"
        return
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
    """The previous occurrence's run ended: the one queued behind it (queue_one) starts —
    unless the job was paused (or its connection went unhealthy) meanwhile."""
    waiting = _queued(session, job)
    if waiting is None or _running(session, job) is not None:
        return
    reason = _why_not(session, job, waiting.manual)
    if reason is not None:
        waiting.status = "skipped"
        waiting.reason = f"{reason} (it was queued behind the previous run)"
        return
    waiting.reason = (waiting.reason or "") + "; started when the previous run ended"
    _start(session, queue, job, waiting, now)


def run_now(session: Session, actor: Actor, queue: Queue, job_id: str) -> Occurrence:
    """An occurrence on demand, recorded as manual (allowed for paused jobs too)."""
    actor.require(Permission.JOB_MANAGE)
    job = jobs.get_job(session, job_id, lock=True)
    now = utcnow()
    occurrence_id = fire(session, queue, job, now, now, manual=True, by=actor.label)
    occurrence = session.get_one(Occurrence, occurrence_id)

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
        select(Job)
        .where(
            Job.status == JobStatus.ENABLED,
            Job.next_fire_at.is_not(None),
            Job.next_fire_at < now,
            Job.overdue_since.is_(None),
        )
        # a job the scheduler is handling right now is not overdue
        .with_for_update(skip_locked=True)
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
