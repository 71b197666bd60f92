"""The scheduler: one leader at a time (a lease row in the database) turns each due scheduled
time into exactly one occurrence — fired, skipped with a reason, or missed — and applies the
misfire policy to what it finds after downtime. Occurrences are keyed by job and scheduled
time, so even two leaders for a moment cannot fire one twice.

Due jobs are handled in batches: one transaction per batch, its job rows locked with SKIP
LOCKED, the facts the decisions need (workflows, plans, connections, runs in progress) loaded
in a few queries, and the occurrences and runs written in one flush — 1,000 jobs due at the
same second fire in well under a second on PostgreSQL (bench/scheduler.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Text, cast, func, insert, select, tuple_, update
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.models import Connection, ConnectionStatus
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.definitions.plan import Plan, load_plan
from grantflow.engine.models import Run, RunEvent, StepRun
from grantflow.engine.runs import start_run, validate_input
from grantflow.engine.states import TERMINAL, RunStatus, StepStatus
from grantflow.errors import GrantflowError
from grantflow.people.notifications import resolve
from grantflow.queue.interface import Queue
from grantflow.schedules import cron, jobs, runners
from grantflow.schedules.jobs import JobKind
from grantflow.schedules.models import STARTER_LABEL, Job, JobStatus, Occurrence, SchedulerLease
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database
from grantflow.store.faults import fault_text

log = structlog.get_logger("grantflow.scheduler")

LEASE = "scheduler"
SCHEDULER = Actor.system("scheduler")
_STARTER = Actor(label=STARTER_LABEL, permissions=frozenset({Permission.RUN_OPERATE}))
_MAX_BACKLOG = 1000  # scheduled times examined per job per tick after a long downtime

_UNFINISHED = sorted(set(RunStatus) - TERMINAL)


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
        # after the due jobs (they wait for nothing): jobs for workflows published meanwhile
        try:
            with self.database.transaction() as session:
                jobs.sync_workflow_jobs(session, self.clock())
        except IntegrityError:
            log.info("scheduler.sync_raced")  # the API synced the same workflow: next tick
        return result

    def _handle_batch(self, job_ids: list[str], careful: bool = False) -> tuple[list[str], bool]:
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
                facts = Facts.load(session, batch)
                for job in batch:
                    handled, backlog = self._handle(
                        session, job, self.clock(), facts, careful=careful
                    )
                    found += handled
                    more = more or backlog
                facts.finish(session, self.queue)
                return found, more
        except Exception:
            if len(job_ids) == 1:
                if not careful:  # e.g. an occurrence already recorded: step over it
                    return self._handle_batch(job_ids, careful=True)
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
    def _handle(
        self, session: Session, job: Job, now: dt.datetime, facts: Facts, careful: bool = False
    ) -> tuple[list[str], bool]:
        """Every scheduled time of `job` up to `now`: one occurrence each. Returns the
        occurrences and whether a backlog is left for the next tick. `careful`: first look for
        times already recorded (an earlier attempt failed on one) and step over them."""
        if job.status == JobStatus.DISABLED or job.next_fire_at is None or job.next_fire_at > now:
            return [], False  # handled meanwhile by another scheduler, or just disabled
        first = job.next_fire_at
        key = (job.cron, job.timezone, first)
        known = facts.times.get(key)  # jobs of a batch often share a schedule and a due time
        if known is not None and (known[1] is None or known[1] > now):
            later, following, backlog = known  # nothing fired between then and now
        else:
            later = cron.fire_times(job.cron, job.timezone, first, until=now, limit=_MAX_BACKLOG)
            backlog = len(later) >= _MAX_BACKLOG  # the rest is recorded by the next ticks
            last = later[-1] if later else first
            following = cron.next_fire(job.cron, job.timezone, last if backlog else max(last, now))
            facts.times[key] = (later, following, backlog)
        times = [first, *later]
        done: set[dt.datetime] = set()
        if careful:
            done = set(
                session.execute(
                    select(Occurrence.scheduled_for).where(
                        Occurrence.job_id == job.id,
                        Occurrence.manual.is_(False),
                        Occurrence.scheduled_for.between(first, times[-1]),
                    )
                ).scalars()
            )
            if done:
                log.warning("scheduler.already_recorded", job_id=job.id, times=len(done))
        grace = dt.timedelta(seconds=job.grace_seconds)
        window = dt.timedelta(seconds=job.catchup_window_seconds)
        late = {t for t in times if now - t > grace}
        # run_once: one run for the latest missed time inside the window (when the backlog
        # goes on, a later batch holds that time)
        catch_up = None if backlog else max((t for t in late if now - t <= window), default=None)
        recorded = []
        for at in times:
            if at in done:
                continue
            if at not in late or job.status == JobStatus.PAUSED:
                # on time (or paused: skipped, naming who paused it, whatever the misfire)
                recorded.append(fire(session, self.queue, job, at, now, facts).id)
            elif job.misfire_policy == "run_once" and at == catch_up:
                recorded.append(fire(session, self.queue, job, at, now, facts, catch_up=True).id)
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
        job.next_fire_at = following
        if job.overdue_since is not None:
            job.overdue_since = None
            resolve(session, f"job_overdue:{job.id}")
        return recorded, backlog


@functools.lru_cache(maxsize=4096)
def _plan(name: str, version: int, text: str) -> Plan:
    """Parsed and integrity-checked once per stored text (like engine.plans.plan_for)."""
    return load_plan(json.loads(text), workflow=name, version=version)


@dataclass
class Facts:
    """What deciding a batch of due jobs needs, loaded in five queries: their workflows, the
    active versions' plans, the connections those use, the runs still in progress, and the
    occurrences queued behind them. Updated as the batch fires."""

    workflows: dict[str, Workflow]
    plans: dict[tuple[str, int], Plan | None]  # None: the plan is missing or corrupt
    connections: dict[tuple[str, str], Connection]  # (application id, name)
    busy: dict[str, tuple[str, str]]  # job id -> (run id, status) of a run in progress
    queued: dict[str, Occurrence]  # job id -> its occurrence waiting behind a run
    # (cron, timezone, first due time) -> (later due times, the next time after, backlog)
    times: dict[
        tuple[str, str, dt.datetime], tuple[list[dt.datetime], dt.datetime | None, bool]
    ] = field(default_factory=dict)
    # runs to write at the end of the batch (multi-row inserts), then put on the queue
    runs: list[dict[str, Any]] = field(default_factory=list)
    step_runs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, session: Session, batch: list[Job]) -> Facts:
        ids = [job.id for job in batch]
        workflow_ids = {job.workflow_id for job in batch if job.workflow_id}
        workflows = {
            w.id: w
            for w in (
                session.execute(select(Workflow).where(Workflow.id.in_(workflow_ids))).scalars()
                if workflow_ids
                else []
            )
        }
        pairs = {(w.id, w.active_version) for w in workflows.values() if w.active_version}
        plans: dict[tuple[str, int], Plan | None] = dict.fromkeys(pairs)
        if pairs:
            for workflow_id, number, stored, name in session.execute(
                select(
                    WorkflowVersion.workflow_id,
                    WorkflowVersion.number,
                    cast(WorkflowVersion.plan, Text),  # the stored text is the cache key
                    Workflow.name,
                )
                .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
                .where(tuple_(WorkflowVersion.workflow_id, WorkflowVersion.number).in_(pairs))
            ):
                if stored is None or stored == "null":
                    continue
                with contextlib.suppress(GrantflowError, ValueError):  # start_run fails it
                    plans[(workflow_id, number)] = _plan(name, number, stored)
        applications = {p.application_id for p in plans.values() if p and p.application_id}
        connections = {
            (c.application_id, c.name): c
            for c in (
                session.execute(
                    select(Connection).where(Connection.application_id.in_(applications))
                ).scalars()
                if applications
                else []
            )
        }
        busy: dict[str, tuple[str, str]] = {}
        queued: dict[str, Occurrence] = {}
        if ids:
            for job_id, run_id, status in session.execute(
                select(Occurrence.job_id, Run.id, Run.status)
                .join(Run, Run.id == Occurrence.run_id)
                # (the unfinished statuses by name: ix_runs_status_id finds the few such runs;
                # "not finished" made the server read every run, 100 ms a batch at 200,000)
                .where(Occurrence.job_id.in_(ids), Run.status.in_(_UNFINISHED))
                .order_by(Run.created_at)
            ):
                busy.setdefault(job_id, (run_id, status))
            for occurrence in session.execute(
                select(Occurrence)
                .where(Occurrence.job_id.in_(ids), Occurrence.status == "queued")
                .order_by(Occurrence.scheduled_for)
            ).scalars():
                queued.setdefault(occurrence.job_id, occurrence)
        return cls(workflows, plans, connections, busy, queued)

    def plan_of(self, workflow: Workflow) -> Plan | None:
        if workflow.active_version is None:
            return None
        return self.plans.get((workflow.id, workflow.active_version))

    def finish(self, session: Session, queue: Queue) -> None:
        """Write what the batch recorded: the occurrences and job changes (one flush), the
        runs with their first step and queued event (multi-row inserts), then the queue."""
        session.flush()
        if not self.runs:
            return
        session.execute(insert(Run), self.runs)
        session.execute(insert(StepRun), self.step_runs)
        session.execute(insert(RunEvent), self.events)
        _enqueue(session, queue, [run["id"] for run in self.runs])
        self.runs.clear()
        self.step_runs.clear()
        self.events.clear()


def _enqueue(session: Session, queue: Queue, run_ids: list[str]) -> None:
    """Every new run available now: one multi-row upsert and one wake-up, instead of a
    statement and a wake-up per run."""
    if len(run_ids) == 1:
        queue.schedule(session, run_ids[0])
    else:
        queue.schedule_many(session, run_ids)


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
    """An occurrence, written at the next flush; the unique key (job, time, manual) refuses a
    second one there."""
    occurrence = Occurrence(
        id=new_id(),
        job_id=job.id,
        scheduled_for=at,
        manual=manual,
        status=status,
        reason=reason,
        created_by=by,
        created_at=now,
    )
    session.add(occurrence)
    return occurrence


def fire(
    session: Session,
    queue: Queue,
    job: Job,
    at: dt.datetime,
    now: dt.datetime,
    facts: Facts,
    *,
    manual: bool = False,
    by: str = "system:scheduler",
    catch_up: bool = False,
) -> Occurrence:
    """Start the job for scheduled time `at`, or record why not."""
    reason = _why_not(job, manual, facts)
    if reason is not None:
        return record(session, job, at, "skipped", now, reason, manual=manual, by=by)
    previous = facts.busy.get(job.id)
    if previous is not None and job.overlap_policy != "allow":
        run_id, run_status = previous
        if job.overlap_policy == "queue_one" and job.id not in facts.queued:
            waiting = record(
                session,
                job,
                at,
                "queued",
                now,
                f"waiting for run {run_id} of the previous occurrence to finish "
                "(overlap policy queue_one)",
                manual=manual,
                by=by,
            )
            facts.queued[job.id] = waiting
            return waiting
        return record(
            session,
            job,
            at,
            "skipped",
            now,
            f"overlap: run {run_id} of the previous occurrence is still {run_status}"
            + (" and one is already queued" if job.overlap_policy == "queue_one" else ""),
            manual=manual,
            by=by,
        )
    occurrence = record(session, job, at, "fired", now, None, manual=manual, by=by)
    _start(session, queue, job, occurrence, now, facts, catch_up)
    return occurrence


def _start(
    session: Session,
    queue: Queue,
    job: Job,
    occurrence: Occurrence,
    now: dt.datetime,
    facts: Facts,
    catch_up: bool = False,
) -> None:
    occurrence.status = "fired"
    occurrence.started_at = now
    occurrence.lag_ms = round((now - occurrence.scheduled_for).total_seconds() * 1000, 3)
    if catch_up:
        occurrence.reason = "a catch-up run after downtime (misfire policy run_once)"
    if job.kind == JobKind.WORKFLOW:
        _start_run(session, queue, job, occurrence, facts)
        return
    try:
        with session.begin_nested():  # what a failing runner wrote is undone, not the record
            result = runners.run(session, queue, job, occurrence)
    except Exception as exc:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # the database is gone: nothing can be recorded, the tick fails as a whole
        # (the words a failure is kept in everywhere: a database error's first line, never
        # its statement or its parameters, which may hold rows' values — nor in the log)
        message = fault_text(exc)
        if not isinstance(exc, GrantflowError):
            log.error(
                "scheduler.runner_failed",
                job_id=job.id,
                kind=job.kind,
                error=message,
                exc_info=None if isinstance(exc, StatementError) else exc,
            )
        occurrence.outcome = "failed"
        occurrence.reason = f"{job.kind} failed: {message}"
        return
    occurrence.result_type, occurrence.result_id = result.result_type, result.result_id
    occurrence.outcome = result.outcome


def _start_run(
    session: Session, queue: Queue, job: Job, occurrence: Occurrence, facts: Facts
) -> None:
    """The occurrence's run of the workflow's active version, as engine.runs.start_run makes
    it (tests/integration/test_scheduler.py holds the two alike) but written with the batch;
    a plan that is missing or corrupt goes through start_run, which fails the run visibly."""
    assert job.workflow_id is not None
    trigger = "manual" if occurrence.manual else "schedule"
    run_input = {
        "scheduled_for": occurrence.scheduled_for.isoformat(),
        "occurrence_id": occurrence.id,
        "manual": occurrence.manual,
    }
    workflow = facts.workflows[job.workflow_id]
    plan = facts.plan_of(workflow)
    try:
        if plan is None:
            run = start_run(session, _STARTER, queue, workflow.id, run_input, trigger=trigger)
            run_id, status = run.id, run.status
        else:
            if trigger == "manual":
                validate_input(plan.trigger.get("input_schema") or {"type": "object"}, run_input)
            run_id, status = _new_run(facts, workflow, plan, trigger, run_input), RunStatus.QUEUED
    except GrantflowError as exc:
        occurrence.status, occurrence.started_at, occurrence.lag_ms = "skipped", None, None
        occurrence.reason = f"the run could not start: {exc.message}"
        return
    occurrence.run_id = run_id
    if status == RunStatus.FAILED:  # a corrupt plan fails at once, visibly
        occurrence.outcome = "failed"
        return
    facts.busy[job.id] = (run_id, status)


def _new_run(
    facts: Facts, workflow: Workflow, plan: Plan, trigger: str, run_input: dict[str, Any]
) -> str:
    """The rows start_run writes for a new run: the run, its first step run, the queued
    event (the queue item comes after the batch's inserts)."""
    assert workflow.active_version is not None
    now = utcnow()
    run_id = new_id()
    entry = plan.steps[plan.entry]
    facts.runs.append(
        {
            "id": run_id,
            "workflow_id": workflow.id,
            "version": workflow.active_version,
            "status": RunStatus.QUEUED,
            "waiting_reason": None,
            "waiting_on": None,
            "trigger": trigger,
            "input": run_input,
            "subject": {},
            "current_step": plan.entry,
            "failure": None,
            "wake_at": None,
            "deadline_at": now + dt.timedelta(seconds=plan.execution_timeout_seconds),
            "stuck_after_seconds": plan.stuck_after_seconds,
            "pause_requested": False,
            "replay_of": None,
            "replay_mode": None,
            "retry_count": 0,
            "acted_steps": [],
            "created_by": _STARTER.label,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "last_progress_at": now,
            "stuck_at": now + dt.timedelta(seconds=plan.stuck_after_seconds),
        }
    )
    facts.step_runs.append(
        {
            "id": new_id(),
            "run_id": run_id,
            "step_id": entry.id,
            "step_type": entry.type,
            "sequence": 1,
            "status": StepStatus.PENDING,
            "side_effects": entry.side_effects,
        }
    )
    facts.events.append(
        {
            "run_id": run_id,
            "at": now,
            "kind": "queued",
            "step_id": None,
            "attempt": None,
            "actor": _STARTER.label,
            "data": {"trigger": trigger, "version": workflow.active_version},
        }
    )
    return run_id


def _why_not(job: Job, manual: bool, facts: Facts) -> str | None:
    if job.status == JobStatus.PAUSED and not manual:
        return f"the job is paused (by {job.status_changed_by} at {job.status_changed_at})"
    if job.kind != JobKind.WORKFLOW:
        return None
    workflow = facts.workflows.get(job.workflow_id) if job.workflow_id else None
    if workflow is None:
        return "its workflow no longer exists"
    if not workflow.enabled:
        return f"workflow {workflow.name!r} is disabled"
    if workflow.active_version is None:
        return f"workflow {workflow.name!r} has no active version"
    plan = facts.plan_of(workflow)
    if plan is None or not plan.application_id:
        return None
    names = sorted(
        {str(s.config.get("connection")) for s in plan.steps.values() if s.config.get("connection")}
    )
    for name in names:
        connection = facts.connections.get((plan.application_id, name))
        if connection is not None and connection.status != ConnectionStatus.CONNECTED:
            return (
                f"connection {connection.name!r} is {connection.status}"
                + (f": {connection.status_reason}" if connection.status_reason else "")
                + " — fix it (Test connection) and use Run now"
            )
    return None


def start_queued(session: Session, queue: Queue, job: Job, now: dt.datetime) -> None:
    """The previous occurrence's run ended: the one queued behind it (queue_one) starts —
    unless the job was paused (or its connection went unhealthy) meanwhile."""
    facts = Facts.load(session, [job])
    waiting = facts.queued.get(job.id)
    if waiting is None or job.id in facts.busy:
        return
    reason = _why_not(job, waiting.manual, facts)
    if reason is not None:
        waiting.status = "skipped"
        waiting.reason = f"{reason} (it was queued behind the previous run)"
        return
    waiting.reason = (waiting.reason or "") + "; started when the previous run ended"
    del facts.queued[job.id]
    _start(session, queue, job, waiting, now, facts)
    facts.finish(session, queue)


def run_now(session: Session, actor: Actor, queue: Queue, job_id: str) -> Occurrence:
    """An occurrence on demand, recorded as manual (allowed for paused jobs too)."""
    actor.require(Permission.JOB_MANAGE)
    job = jobs.get_job(session, job_id, lock=True)
    now = utcnow()
    facts = Facts.load(session, [job])
    occurrence = fire(session, queue, job, now, now, facts, manual=True, by=actor.label)
    facts.finish(session, queue)
    audit.record(
        session,
        actor,
        "job.run_now",
        "job",
        job.id,
        {"occurrence": occurrence.id, "status": occurrence.status, "reason": occurrence.reason},
    )
    return occurrence
