"""What the safety package does on the engine's hooks (found through the
`grantflow.engine_listeners` entry point): the failed-runs breaker as runs fail, spend-cap
roll-overs and forgetting old webhook deliveries and per-minute counters on the timers, and
saying what a held run waits for."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import structlog
from sqlalchemy.orm import Session

from grantflow.engine import hooks
from grantflow.engine.models import Run
from grantflow.engine.plans import plan_for
from grantflow.engine.states import RunStatus, WaitingReason
from grantflow.errors import InternalError
from grantflow.safety import breakers, config, spend, webhooks
from grantflow.store.after_commit import after_commit
from grantflow.store.database import database_of

log = structlog.get_logger("grantflow.safety")

_PRUNE_EVERY = dt.timedelta(hours=1)
_MINUTE = dt.timedelta(minutes=1)
_pruned: dict[str, dt.datetime] = {}
_lock = threading.Lock()


@hooks.on_run_status(wants=lambda end: end.status == RunStatus.FAILED)
def failed_runs_breaker(session: Session, run: Run, _old: str, new: str) -> None:
    """A run failed: once that is committed, the workflow's failed-runs breaker may trip. (It
    counts after the commit, in a transaction of its own: runs failing at the same moment each
    see the others' failures, and the engine's transaction takes no lock for it.)"""
    if new != RunStatus.FAILED:
        return
    try:
        safety = dict(plan_for(session, run.workflow_id, run.version).safety)
    except InternalError:  # a damaged plan: the defaults
        safety = {}
    database = database_of(session)
    workflow_id = run.workflow_id

    def check(_items: object) -> None:
        try:
            with database.transaction() as own:
                breakers.check_failed_runs(own, workflow_id, safety)
        except Exception:  # the run's failure is committed; a breaker check must not undo it
            log.exception("safety.failed_runs_check_failed", workflow_id=workflow_id)

    after_commit(session, check)


@hooks.on_tick
def spend_cap_rollovers(session: Session, queue: Any, _now: dt.datetime) -> None:
    """Runs waiting on a spend cap whose period rolled over go on (by the safety clock)."""
    spend.wake_capped(session, queue, "system:safety", due_only=True)


def _due(chore: str, every: dt.timedelta, now: dt.datetime) -> bool:
    """Whether a chore paced per process (the tick comes every few seconds) is due; if so, it
    is marked done now."""
    with _lock:
        last = _pruned.get(chore)
        if last is not None and now - last < every:
            return False
        _pruned[chore] = now
        return True


@hooks.on_tick
def prune_deliveries(session: Session, _queue: Any, now: dt.datetime) -> None:
    """Accepted deliveries older than a day, once an hour per process."""
    if _due("accepted", _PRUNE_EVERY, now):
        webhooks.prune_accepted(session, now)


@hooks.on_tick
def forget_old_minutes(session: Session, _queue: Any, now: dt.datetime) -> None:
    """Per-minute usage counters no breaker reads any more, once a minute per process."""
    if _due("minutes", _MINUTE, now):
        breakers.forget_old_minutes(session, config.now())  # (the clock the breakers count by)


@hooks.wait_describer
def held_for_safety(_session: Session, run: Run) -> dict[str, Any] | None:
    """What a run held by the safety gate waits for, and what resumes it."""
    failure = run.failure or {}
    if run.waiting_reason == WaitingReason.SAFETY:
        return {
            "reason": "safety",
            "summary": failure.get("message") or "the workflow is paused for safety",
            "breaker": failure.get("breaker"),
            "figures": failure.get("figures"),
            "tripped_at": failure.get("tripped_at"),
            "resumed_by": "Resume workflow on the workflow (workflow:publish); not on the run",
        }
    if run.waiting_reason == WaitingReason.SPEND_CAP:
        return {
            "reason": "spend_cap",
            "summary": failure.get("message") or "a spend cap is reached",
            "cap": failure.get("cap"),
            "resets_at": failure.get("resets_at"),
            "resumed_by": "itself, when the period rolls over or the cap is raised",
        }
    return None
