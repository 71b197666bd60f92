"""Reading runs: the run detail with its step runs and attempts, the timeline, listing with
filters, and stuck detection with the most likely cause computed from facts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.definitions.models import Workflow
from grantflow.engine import hooks
from grantflow.engine.models import Run, RunEvent, StepAttempt, StepRun
from grantflow.engine.states import PERSON_WAITS, TERMINAL, RunStatus
from grantflow.queue.interface import Queue
from grantflow.queue.models import QueueItem, Worker
from grantflow.store.base import utcnow
from grantflow.store.pagination import Page, decode_cursor, page_of

LIVE_WORKER = dt.timedelta(seconds=60)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def stuck_report(
    session: Session, run: Run, queue: Queue, now: dt.datetime | None = None
) -> dict[str, Any] | None:
    """None unless the run made no progress for its stuck-after threshold; then the facts."""
    now = now or utcnow()
    if RunStatus(run.status) in TERMINAL or run.stuck_at is None or now < run.stuck_at:
        return None
    report: dict[str, Any] = {
        "stuck": True,
        "last_progress_at": _iso(run.last_progress_at),
        "no_progress_for_seconds": round((now - run.last_progress_at).total_seconds(), 1),
    }
    report.update(_likely_cause(session, run, queue, now))
    return report


def _likely_cause(session: Session, run: Run, queue: Queue, now: dt.datetime) -> dict[str, Any]:
    status = RunStatus(run.status)
    if status == RunStatus.PAUSED:
        return {"cause": "paused", "explanation": "an operator paused the run; resume it"}
    if status == RunStatus.WAITING:
        if run.waiting_reason in PERSON_WAITS:
            waits = hooks.describe_wait(session, run)
            if waits:
                return {
                    "cause": "waiting_on_person",
                    "explanation": waits.get("summary", "waiting for a person"),
                    "waiting_for": waits,
                }
            return {
                "cause": "waiting_on_person",
                "explanation": f"waiting for a person ({run.waiting_reason}) at step "
                f"{run.current_step!r}; act on it, or Retry or cancel",
            }
        return {
            "cause": f"waiting_on_{run.waiting_reason}",
            "explanation": f"waiting on a {run.waiting_reason} timer until "
            f"{_iso(run.wake_at)} at step {run.current_step!r}",
        }
    item = session.get(QueueItem, run.id)
    if status == RunStatus.RUNNING and item is not None and item.lease_owner:
        if item.lease_expires_at is not None and item.lease_expires_at < now:
            return {
                "cause": "worker_lost",
                "explanation": f"worker {item.lease_owner} stopped heartbeating; its lease "
                f"expired at {_iso(item.lease_expires_at)} and another "
                "worker will resume the run from its last committed step",
                "worker": item.lease_owner,
            }
        attempt = session.execute(
            select(StepAttempt)
            .join(StepRun)
            .where(StepRun.run_id == run.id, StepAttempt.status == "running")
            .order_by(StepAttempt.started_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        if attempt is not None:
            return {
                "cause": "external_call_slow",
                "explanation": f"step {run.current_step!r} attempt {attempt.number} has "
                f"waited on the external system since "
                f"{_iso(attempt.started_at)}; check that system's health",
                "call_started_at": _iso(attempt.started_at),
            }
    stats = queue.stats(session)  # in this transaction: SQLite allows one writer
    live = (
        session.execute(select(Worker.id).where(Worker.heartbeat_at >= now - LIVE_WORKER))
        .scalars()
        .all()
    )
    if not live:
        return {
            "cause": "no_worker",
            "explanation": "no live worker is taking runs: start `grantflow worker` or "
            "`grantflow serve`; queued runs resume once one runs",
            "queue_depth": stats.ready,
        }
    return {
        "cause": "queue_backlog",
        "explanation": f"{stats.ready} runs are ready before or with it; the oldest has "
        f"waited {stats.oldest_ready_age_seconds or 0:.0f}s for "
        f"{len(live)} live worker(s)",
        "queue_depth": stats.ready,
        "oldest_ready_age_seconds": stats.oldest_ready_age_seconds,
    }


def run_summary(run: Run, workflow_name: str | None = None) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "workflow": workflow_name,
        "version": run.version,
        "status": run.status,
        "waiting_reason": run.waiting_reason,
        "wake_at": _iso(run.wake_at),
        "trigger": run.trigger,
        "current_step": run.current_step,
        "failure": run.failure,
        "created_by": run.created_by,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "last_progress_at": _iso(run.last_progress_at),
        "deadline_at": _iso(run.deadline_at),
        "pause_requested": run.pause_requested,
        "replay_of": run.replay_of,
        "replay_mode": run.replay_mode,
        "retry_count": run.retry_count,
        "acted_steps": run.acted_steps or [],
    }


def run_detail(session: Session, run: Run, queue: Queue) -> dict[str, Any]:
    workflow = session.get(Workflow, run.workflow_id)
    detail = run_summary(run, workflow.name if workflow else None)
    detail["input"] = run.input
    detail["subject"] = run.subject
    detail["stuck"] = stuck_report(session, run, queue)
    # who or what a waiting run waits for (the approvers of a task, their deadline, ...)
    detail["waiting_for"] = (
        hooks.describe_wait(session, run) if run.status == RunStatus.WAITING else None
    )
    detail["replays"] = list(
        session.execute(
            select(Run.id).where(Run.replay_of == run.id).order_by(Run.created_at)
        ).scalars()
    )
    step_runs = (
        session.execute(select(StepRun).where(StepRun.run_id == run.id).order_by(StepRun.sequence))
        .scalars()
        .all()
    )
    attempts: dict[str, list[StepAttempt]] = {}
    if step_runs:
        for attempt in session.execute(
            select(StepAttempt)
            .where(StepAttempt.step_run_id.in_([s.id for s in step_runs]))
            .order_by(StepAttempt.number)
        ).scalars():
            attempts.setdefault(attempt.step_run_id, []).append(attempt)
    detail["steps"] = [
        {
            "step_id": s.step_id,
            "type": s.step_type,
            "sequence": s.sequence,
            "iteration": s.iteration,
            "status": s.status,
            "attempts": s.attempts,
            "side_effects": s.side_effects,
            "output": s.output,
            "error": s.error,
            "next_step": s.next_step,
            "next_attempt_at": _iso(s.next_attempt_at),
            "started_at": _iso(s.started_at),
            "finished_at": _iso(s.finished_at),
            "attempt_log": [
                {
                    "number": a.number,
                    "idempotency_key": a.idempotency_key,
                    "status": a.status,
                    "request": a.request,
                    "response": a.response,
                    "error": a.error,
                    "started_at": _iso(a.started_at),
                    "finished_at": _iso(a.finished_at),
                    "duration_ms": a.duration_ms,
                }
                for a in attempts.get(s.id, [])
            ],
        }
        for s in step_runs
    ]
    return detail


def timeline(session: Session, run: Run) -> list[dict[str, Any]]:
    events = session.execute(
        select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id)
    ).scalars()
    return [
        {
            "at": _iso(e.at),
            "kind": e.kind,
            "step_id": e.step_id,
            "attempt": e.attempt,
            "actor": e.actor,
            **({"data": e.data} if e.data else {}),
        }
        for e in events
    ]


def list_runs(
    session: Session,
    *,
    status: str | None = None,
    workflow_id: str | None = None,
    version: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    stuck: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Run]:
    """Newest first."""
    stmt = select(Run)
    if status:
        stmt = stmt.where(Run.status == status)
    if workflow_id:
        stmt = stmt.where(Run.workflow_id == workflow_id)
    if version is not None:
        stmt = stmt.where(Run.version == version)
    if since:
        stmt = stmt.where(Run.created_at >= since)
    if until:
        stmt = stmt.where(Run.created_at < until)
    if stuck is not None:
        flagged = Run.status.not_in(list(TERMINAL)) & (Run.stuck_at <= utcnow())
        stmt = stmt.where(flagged if stuck else ~flagged)
    before = decode_cursor(cursor, str)
    if before is not None:
        stmt = stmt.where(Run.id < before)
    rows = session.execute(stmt.order_by(Run.id.desc()).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda r: r.id)
