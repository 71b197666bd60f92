"""The run and step state machine: every status change goes through these functions, which
check the transition, stamp the times and write the timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.engine import hooks
from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import (
    RunStatus,
    StepStatus,
    WaitingReason,
    check_run_transition,
    check_step_transition,
)
from grantflow.engine.timeline import add_event
from grantflow.store.base import utcnow

_EVENT_FOR = {
    RunStatus.QUEUED: "queued",
    RunStatus.PAUSED: "paused",
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.TIMED_OUT: "timed_out",
}


# A run that ends without succeeding records which steps with side effects already acted,
# so a person knows which systems may hold partial changes.
_ACTED_RECORDED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})


def acted_steps(session: Session, run: Run) -> list[str]:
    """Steps with side effects that have already sent at least one call."""
    rows = session.execute(
        select(StepRun.step_id)
        .where(StepRun.run_id == run.id, StepRun.side_effects.is_(True), StepRun.attempts > 0)
        .order_by(StepRun.sequence)
    ).scalars()
    return list(dict.fromkeys(rows))


def move_run(
    session: Session,
    run: Run,
    new: RunStatus,
    *,
    waiting_reason: WaitingReason | None = None,
    wake_at: dt.datetime | None = None,
    failure: dict[str, Any] | None = None,
    actor: str | None = None,
    **data: Any,
) -> None:
    old = run.status
    check_run_transition(old, new)
    now = utcnow()
    run.status = new
    if new == RunStatus.WAITING:
        run.waiting_reason, run.wake_at = waiting_reason, wake_at
    elif new != RunStatus.PAUSED:  # a paused run remembers what it waited for, to resume it
        run.waiting_reason, run.wake_at = None, None
    if failure is not None:
        run.failure = failure
    elif new in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.SUCCEEDED):
        run.failure = None
    if new == RunStatus.RUNNING:
        kind = "resumed" if old == RunStatus.WAITING or run.started_at else "started"
        run.started_at = run.started_at or now
    elif new == RunStatus.WAITING:
        kind = "waiting"
        data = {"reason": str(waiting_reason), **data}
        if wake_at:
            data["until"] = timestamps.rfc3339(wake_at)
    else:
        kind = _EVENT_FOR[new]
    if new in _ACTED_RECORDED:
        run.acted_steps = acted_steps(session, run)
    elif new == RunStatus.QUEUED:
        run.acted_steps = []  # (a retried run: recorded again if it ends unfinished)
    if RunStatus(new).terminal:
        run.finished_at = now
    else:
        run.finished_at = None
    touch(run, now)
    if failure is not None:
        data = {**data, "class": failure.get("class"), "message": failure.get("message")}
    add_event(session, run.id, kind, step_id=run.current_step, actor=actor, **data)
    if old != new:
        hooks.run_status_changed(session, run, old, new)


def touch(run: Run, now: dt.datetime) -> None:
    """Record progress: the run is stuck if it makes none before `stuck_at`."""
    run.last_progress_at = now
    run.stuck_at = now + dt.timedelta(seconds=run.stuck_after_seconds)


def move_step(
    session: Session, step_run: StepRun, new: StepStatus, *, event: str | None = None, **data: Any
) -> None:
    check_step_transition(step_run.status, new)
    now = utcnow()
    step_run.status = new
    if new == StepStatus.RUNNING and step_run.started_at is None:
        step_run.started_at = now
    if new in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
        step_run.finished_at = now
    if event:
        add_event(
            session,
            step_run.run_id,
            event,
            step_id=step_run.step_id,
            attempt=step_run.attempts or None,
            **data,
        )
