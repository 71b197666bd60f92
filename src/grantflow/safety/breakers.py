"""Safety breakers: when one trips, the whole workflow is paused for safety (`paused_safety`,
with the breaker, the figures that tripped it and the time) and one notification goes out. Runs
that arrive meanwhile are accepted and held (status `queued`, waiting reason `safety`); running
runs stop at their next step boundary the same way. Resuming the workflow releases every held
run, oldest first, with the execution time it had left.

The breakers: runs started per minute and external calls per minute (checked by the gate as
steps start), and failed runs within a window (checked as a run fails)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from grantflow import advice, audit, timestamps
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.lookup import get_workflow
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus, WaitingReason
from grantflow.engine.timeline import add_event
from grantflow.errors import Conflict
from grantflow.people.notifications import NotificationKind, notify, resolve
from grantflow.queue.interface import Queue
from grantflow.safety import periods
from grantflow.safety.config import Breakers
from grantflow.safety.hold import Hold
from grantflow.safety.models import UsageCounter
from grantflow.store.base import utcnow

log = structlog.get_logger("grantflow.safety")

HELD_CODE = "workflow_paused_for_safety"
SAFETY_ACTOR = Actor.system("safety")
_DESCRIBE = {
    "runs_per_minute": "more runs started in a minute than its limit",
    "external_calls_per_minute": "more external calls in a minute than its limit",
    "failed_runs": "more failed runs within the window than its limit",
}


def _dedup(workflow_id: str) -> str:
    return f"{NotificationKind.WORKFLOW_PAUSED_SAFETY}:{workflow_id}"


def trip(
    session: Session, workflow_id: str, breaker: str, figures: dict[str, Any], now: dt.datetime
) -> dict[str, Any]:
    """Pause the workflow for safety (once: a breaker that trips on a paused workflow changes
    nothing); its pause record."""
    workflow = session.get(
        Workflow, workflow_id, with_for_update={"key_share": True}, populate_existing=True
    )
    assert workflow is not None
    if workflow.safety_pause is not None:
        return workflow.safety_pause
    summary = _DESCRIBE.get(breaker, breaker)
    pause = {
        "breaker": breaker,
        "figures": figures,
        "tripped_at": timestamps.rfc3339(now),
        "message": f"safety breaker {breaker} tripped: {summary} ({_figures_text(figures)})",
    }
    workflow.safety_pause = pause
    audit.record(session, SAFETY_ACTOR, "workflow.paused_safety", "workflow", workflow.id, pause)
    owners = _owners(session, workflow)
    notify(
        session,
        NotificationKind.WORKFLOW_PAUSED_SAFETY,
        _dedup(workflow.id),
        f"Workflow {workflow.name!r} is paused for safety",
        body=f"{pause['message']}. New runs are accepted and held; running runs stop at "
        "their next step. Find the cause, then Resume workflow: held runs continue in order.",
        target_type="workflow",
        target_id=workflow.id,
        breaker=breaker,
        figures=figures,
        owners=owners,
    )
    log.warning("workflow.paused_safety", workflow_id=workflow.id, breaker=breaker, **figures)
    return pause


def _figures_text(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items())


def _owners(session: Session, workflow: Workflow) -> list[str]:
    """Who owns the workflow: whoever created it and whoever published its active version."""
    rows = session.execute(
        select(WorkflowVersion.created_by, WorkflowVersion.published_by).where(
            WorkflowVersion.workflow_id == workflow.id,
            (WorkflowVersion.number == 1) | (WorkflowVersion.number == workflow.active_version),
        )
    ).all()
    return sorted({who for row in rows for who in row if who})


def held(session: Session, workflow_id: str, pause: dict[str, Any]) -> Hold:
    """The Hold for a step of a workflow paused for safety."""
    workflow = session.get(Workflow, workflow_id)
    name = workflow.name if workflow else workflow_id
    failure = {
        "class": "safety",
        "code": HELD_CODE,
        "message": f"workflow {name!r} is paused for safety ({pause.get('message')}, at "
        f"{pause.get('tripped_at')}): the run is held, not lost",
        "step_id": None,
        **advice.advise(f"waiting.{WaitingReason.SAFETY}"),
        "breaker": pause.get("breaker"),
        "figures": pause.get("figures"),
        "tripped_at": pause.get("tripped_at"),
    }
    return Hold(WaitingReason.SAFETY, failure)


def hold_new_run(session: Session, run: Run, workflow: Workflow, queue: Queue) -> None:
    """A run created while its workflow is paused for safety: accepted and held at once."""
    assert workflow.safety_pause is not None
    hold = held(session, workflow.id, workflow.safety_pause)
    now = utcnow()
    run.failure = {
        **hold.failure,
        "held_at": timestamps.rfc3339(now),
        "remaining_seconds": (run.deadline_at - now).total_seconds(),
    }
    run.waiting_reason = WaitingReason.SAFETY
    run.stuck_at = None
    add_event(session, run.id, "held", reason=str(WaitingReason.SAFETY))
    queue.remove(session, run.id)


# --- the failed-runs breaker ---------------------------------------------------------------------
def check_failed_runs(session: Session, workflow_id: str, safety: dict[str, Any]) -> None:
    """A run of the workflow failed (committed): trip when too many failed within the window
    (runs created before the last resume are not counted again)."""
    workflow = session.get(Workflow, workflow_id)
    if workflow is None or workflow.safety_pause is not None:
        return
    limits = Breakers.of(safety)
    now = utcnow()
    since = now - dt.timedelta(seconds=limits.failed_runs_window_seconds)
    query = select(func.count()).where(
        Run.workflow_id == workflow_id,
        Run.status == RunStatus.FAILED,
        Run.finished_at >= since,
    )
    if workflow.safety_resumed_at is not None:
        query = query.where(Run.created_at >= workflow.safety_resumed_at)
    failed = int(session.execute(query).scalar_one())
    if failed < limits.max_failed_runs:
        return
    window = dt.timedelta(seconds=limits.failed_runs_window_seconds)
    trip(
        session,
        workflow_id,
        "failed_runs",
        {
            "limit": limits.max_failed_runs,
            "failed": failed,
            "window": str(window),
            "setting": "safety.max_failed_runs (default GRANTFLOW_SAFETY_MAX_FAILED_RUNS)",
        },
        now,
    )


# --- resuming -------------------------------------------------------------------------------------
def resume(session: Session, actor: Actor, queue: Queue, workflow_id: str) -> Workflow:
    """Resume a workflow paused for safety: held runs are released, oldest first, each with the
    execution time it had left; the breakers count afresh from now."""
    actor.require(Permission.WORKFLOW_PUBLISH)
    workflow = get_workflow(session, workflow_id)
    session.refresh(workflow, with_for_update={"key_share": True})
    if workflow.safety_pause is None:
        raise Conflict(
            f"workflow {workflow.name!r} is not paused for safety",
            code="not_paused_for_safety",
            next_action="nothing to resume; an operator's pause of one run is resumed on the run",
        )
    pause, now = workflow.safety_pause, utcnow()
    workflow.safety_pause = None
    workflow.safety_resumed_at, workflow.safety_resumed_by = now, actor.label
    released = release_held(session, queue, workflow.id, now, actor.label)
    resolve(session, _dedup(workflow.id))
    audit.record(
        session,
        actor,
        "workflow.safety_resumed",
        "workflow",
        workflow.id,
        {
            "breaker": pause.get("breaker"),
            "tripped_at": pause.get("tripped_at"),
            "released": released,
        },
    )
    return workflow


def release_held(
    session: Session, queue: Queue, workflow_id: str, now: dt.datetime, actor: str
) -> int:
    """Queue every run held for safety, oldest first (one microsecond apart, so workers take
    them in that order)."""
    runs = session.execute(
        select(Run)
        .where(
            Run.workflow_id == workflow_id,
            Run.waiting_reason == WaitingReason.SAFETY,
            Run.status == RunStatus.QUEUED,
        )
        .order_by(Run.created_at, Run.id)
        .with_for_update()
    ).scalars()
    count = 0
    for count, run in enumerate(runs, start=1):
        remaining = (run.failure or {}).get("remaining_seconds")
        if isinstance(remaining, int | float):
            run.deadline_at = now + dt.timedelta(seconds=max(float(remaining), 1.0))
        run.failure, run.waiting_reason = None, None
        run.last_progress_at = now
        run.stuck_at = now + dt.timedelta(seconds=run.stuck_after_seconds)
        add_event(session, run.id, "released", actor=actor, reason=str(WaitingReason.SAFETY))
        queue.schedule(session, run.id, now + dt.timedelta(microseconds=count))
    return count


def pause_view(session: Session, workflow: Workflow) -> dict[str, Any] | None:
    """What the workflow detail shows while it is paused for safety: the breaker, its figures,
    when, how many runs are held, and who resumes it how."""
    if workflow.safety_pause is None:
        return None
    held_runs = session.execute(
        select(func.count()).where(
            Run.workflow_id == workflow.id,
            Run.waiting_reason == WaitingReason.SAFETY,
            Run.status == RunStatus.QUEUED,
        )
    ).scalar_one()
    advised = advice.advise(f"waiting.{WaitingReason.SAFETY}")
    return {
        **workflow.safety_pause,
        "held_runs": int(held_runs),
        "resumed_by": "a person with workflow:publish, on the workflow (not on each run)",
        "next_action": advised["next_action"],
        "action": advice.render(advised["operation"], workflow_id=workflow.id),
    }


def forget_old_minutes(session: Session, now: dt.datetime) -> int:
    """The per-minute usage counters before the previous minute: no breaker reads them (a
    breaker's window is this minute and the one before), and a busy workflow writes up to one
    per shard and counted kind every minute. Days and months are kept (the usage report)."""
    oldest_kept = periods.minute_key(now - dt.timedelta(minutes=2))
    result = session.execute(
        delete(UsageCounter).where(
            # the range is for the index; the prefix decides: in a linguistic collation (a
            # PostgreSQL database created en_US.UTF-8) "m:2031-05" sorts inside the range
            UsageCounter.period_key >= periods.MINUTE_PREFIX,
            UsageCounter.period_key < oldest_kept,
            func.substr(UsageCounter.period_key, 1, len(periods.MINUTE_PREFIX))
            == periods.MINUTE_PREFIX,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
