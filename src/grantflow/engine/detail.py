"""Reading runs: the run detail with its step runs and attempts, the timeline, listing with
filters, and stuck detection with the most likely cause computed from facts."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from grantflow import advice, timestamps
from grantflow.definitions.models import Workflow
from grantflow.engine import history, hooks
from grantflow.engine.models import Run, RunEvent, StepAttempt, StepRun
from grantflow.engine.states import PERSON_WAITS, TERMINAL, RunStatus
from grantflow.queue import workers
from grantflow.queue.interface import Queue, QueueStats, TransportHealth
from grantflow.queue.models import QueueItem
from grantflow.store.base import first_id_at, utcnow
from grantflow.store.pagination import Page, decode_cursor, newest_of, page_of


def _iso(value: dt.datetime | None) -> str | None:
    return timestamps.rfc3339(value)


class QueueFacts:
    """The queue's statistics and its live workers, read when a stuck run first needs them and
    then shared by every run of the same page (not read again per stuck run)."""

    def __init__(self, session: Session, queue: Queue, now: dt.datetime) -> None:
        self._session = session
        self._queue = queue
        self._now = now
        self._items: dict[str, QueueItem | None] = {}

    def read_items(self, run_ids: list[str]) -> None:
        """The queue items of `run_ids` in one query (a run without one has none)."""
        query = select(QueueItem).where(QueueItem.run_id.in_(run_ids))
        self._items.update(dict.fromkeys(run_ids))
        self._items.update({item.run_id: item for item in self._session.scalars(query)})

    def queue_item(self, run_id: str) -> QueueItem | None:
        if run_id not in self._items:
            self._items[run_id] = self._session.get(QueueItem, run_id)
        return self._items[run_id]

    @functools.cached_property
    def stats(self) -> QueueStats:
        return self._queue.stats(self._session)  # in this transaction: SQLite allows one writer

    @functools.cached_property
    def transport(self) -> TransportHealth:
        return self._queue.health()

    @functools.cached_property
    def live_workers(self) -> list[str]:
        return workers.live_ids(self._session, self._now)  # (live while its lease holds)


def _is_stuck(run: Run, now: dt.datetime) -> bool:
    return (
        RunStatus(run.status) not in TERMINAL and run.stuck_at is not None and now >= run.stuck_at
    )


def stuck_reports(
    session: Session, runs: list[Run], queue: Queue
) -> dict[str, dict[str, Any] | None]:
    """`stuck_report` for a page of runs: the queue items of its stuck runs in one query, the
    queue's statistics and live workers once."""
    now = utcnow()
    facts = QueueFacts(session, queue, now)
    stuck = [run.id for run in runs if _is_stuck(run, now)]
    if stuck:
        facts.read_items(stuck)
    return {run.id: stuck_report(session, run, queue, now, facts) for run in runs}


def stuck_report(
    session: Session,
    run: Run,
    queue: Queue,
    now: dt.datetime | None = None,
    facts: QueueFacts | None = None,
) -> dict[str, Any] | None:
    """None unless the run made no progress for its stuck-after threshold; then the facts."""
    now = now or utcnow()
    if not _is_stuck(run, now):
        return None
    report: dict[str, Any] = {
        "stuck": True,
        "last_progress_at": _iso(run.last_progress_at),
        "no_progress_for_seconds": round((now - run.last_progress_at).total_seconds(), 1),
    }
    report.update(_likely_cause(session, run, facts or QueueFacts(session, queue, now), now))
    cause = report["cause"]
    if cause == "paused":
        key = "paused.operator"
    elif cause == "waiting_on_person" and run.waiting_reason:
        key = f"waiting.{run.waiting_reason}"
    else:
        key = f"stuck.{cause}"
    advised = advice.advise(key, hint=report.get("explanation"))
    report["next_action"] = advised["next_action"]
    report["action"] = advice.render(advised["operation"], **action_ids(run, run.failure))
    return report


def _likely_cause(
    session: Session, run: Run, facts: QueueFacts, now: dt.datetime
) -> dict[str, Any]:
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
    item = facts.queue_item(run.id)
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
    transport = facts.transport
    if not transport.up:
        return {
            "cause": "transport_down",
            "explanation": f"the {transport.kind} queue transport at {transport.location} is "
            f"unreachable since {_iso(transport.down_since)} ({transport.error}); the run "
            "is queued in the database and is dispatched within seconds of it coming back: "
            "start Valkey/Redis, or fix GRANTFLOW_QUEUE_URL",
            "transport": transport.kind,
            "down_since": _iso(transport.down_since),
        }
    stats = facts.stats
    live = facts.live_workers
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
        "failure": failure_with_action(run),
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


def action_ids(run: Run, failure: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ids an operation offered on this run may need."""
    grant = (run.subject or {}).get("grant") or {}
    waiting_on = run.waiting_on if run.status == RunStatus.WAITING else None
    return {
        "run_id": run.id,
        "workflow_id": run.workflow_id,
        "version": run.version,
        "grant_id": grant.get("id"),
        "task_id": waiting_on if run.waiting_reason in ("approval", "task") else None,
        "connection_id": (failure or {}).get("connection_id"),
    }


def failure_with_action(run: Run) -> dict[str, Any] | None:
    """The run's failure reason with its next action rendered as a concrete action."""
    if run.failure is None:
        return None
    failure = dict(run.failure)
    if "operation" not in failure:  # recorded before the advice table: advise it now
        failure.update(
            advice.advise(
                str(failure.get("code")),
                status_code=failure.get("status_code"),
                hint=failure.get("next_action"),
            )
        )
    failure["action"] = advice.render(failure.get("operation"), **action_ids(run, failure))
    return failure


def _paused(session: Session, run: Run) -> dict[str, Any] | None:
    """Who paused the run (or asked to), when and why: shown at once, not only when stuck."""
    if run.status != RunStatus.PAUSED and not run.pause_requested:
        return None
    kinds = ("paused", "pause_requested")
    events = (
        session.execute(
            select(RunEvent)
            .where(RunEvent.run_id == run.id, RunEvent.kind.in_(kinds))
            .order_by(RunEvent.id.desc())
            .limit(2)
        )
        .scalars()
        .all()
    )
    latest = events[0] if events else None
    actor = next((e.actor for e in events if e.actor), None)
    return {
        "kind": "run_paused",  # one run, paused by an operator (not its workflow: see `held`)
        "requested": run.status != RunStatus.PAUSED,
        "by": actor,
        "at": _iso(latest.at) if latest else None,
        "reason": ((latest.data or {}).get("reason") if latest else None) or "operator",
        "was_waiting_for": run.waiting_reason if run.status == RunStatus.PAUSED else None,
        "resumed_by": "Resume on this run (run:operate)",
    }


_HELD = ("safety", "spend_cap")
# How far apart a run's id time and its created_at may be: both are read from the process's
# clock as the run is made (runs.py; new_id never moves its millisecond ahead), so
# milliseconds; the rest allows for the clock being stepped meanwhile.
ID_CLOCK_SLACK = dt.timedelta(minutes=10)


def _held(run: Run) -> dict[str, Any] | None:
    """A run held by the safety gate: its workflow paused for safety, or a spend cap reached
    (told apart from an operator's pause of this one run), with what resumes it."""
    if run.waiting_reason not in _HELD or run.status not in (RunStatus.QUEUED, RunStatus.WAITING):
        return None
    failure = run.failure or {}
    if run.waiting_reason == "safety":
        return {
            "kind": "workflow_paused_for_safety",
            "breaker": failure.get("breaker"),
            "figures": failure.get("figures"),
            "tripped_at": failure.get("tripped_at"),
            "held_at": failure.get("held_at"),
            "message": failure.get("message"),
            "resumed_by": "Resume workflow on the workflow (workflow:publish); every held run "
            "goes on, oldest first",
        }
    return {
        "kind": "spend_cap",
        "cap": failure.get("cap"),
        "resets_at": failure.get("resets_at"),
        "held_at": failure.get("held_at"),
        "message": failure.get("message"),
        "resumed_by": "itself: when the period rolls over, or at once when the cap is raised",
    }


def next_step_advice(
    run: Run, paused: dict[str, Any] | None, stuck: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The one next action for the run as it stands: its failure's, its wait's, or Resume for
    a paused run; words and the concrete action, from the advice table."""
    ids = action_ids(run, run.failure)
    if run.failure is not None and run.status in (
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.WAITING,
    ):
        failure = failure_with_action(run) or {}
        if run.status != RunStatus.WAITING or run.waiting_reason in ("escalated", "reauth"):
            if run.waiting_reason == "reauth":
                advised = advice.advise("waiting.reauth")
                return {**advised, "action": advice.render(advised["operation"], **ids)}
            return {
                "advice": failure.get("advice"),
                "next_action": failure.get("next_action"),
                "operation": failure.get("operation"),
                "action": failure.get("action"),
            }
    if paused is not None and not paused["requested"]:
        advised = advice.advise("paused.operator")
        who = f" ({paused['by']}, {paused['at']})" if paused.get("by") else ""
        advised["next_action"] = advised["next_action"].replace(
            "paused the run", f"paused the run{who}"
        )
    elif run.waiting_reason and run.status in (RunStatus.WAITING, RunStatus.QUEUED):
        advised = advice.advise(f"waiting.{run.waiting_reason}")
    elif stuck is not None:
        advised = advice.advise(f"stuck.{stuck['cause']}", hint=stuck.get("explanation"))
    else:
        return None
    return {**advised, "action": advice.render(advised["operation"], **ids)}


def _workflow_name(session: Session, run: Run, new: bool) -> str | None:
    """A run started in this transaction: the name its start read (engine/runs.py)."""
    started = session.info.get("workflow_names", {}).get(run.workflow_id) if new else None
    workflow = None if started else session.get(Workflow, run.workflow_id)
    return started or (workflow.name if workflow else None)


def run_detail(
    session: Session, run: Run, queue: Queue, *, new: bool = False, steps_limit: int | None = None
) -> dict[str, Any]:
    """Everything about a run. `new`: the run was created in this transaction (a start, a
    replay), so it has no replay and no attempt yet, and its step runs are the ones it was
    created with, in memory: three reads fewer inside the transaction that creates it.
    `steps_limit`: only its last step runs (`steps_total` counts them all)."""
    detail = run_summary(run, _workflow_name(session, run, new))
    detail["input"] = run.input
    detail["subject"] = run.subject
    detail["stuck"] = stuck_report(session, run, queue)
    detail["paused"] = _paused(session, run)
    detail["held"] = _held(run)
    detail["next"] = next_step_advice(run, detail["paused"], detail["stuck"])
    # who or what a waiting run waits for (the approvers of a task, their deadline, ...)
    detail["waiting_for"] = (
        hooks.describe_wait(session, run)
        if run.status == RunStatus.WAITING or detail["held"]
        else None
    )
    created = new and "step_runs" in inspect(run).dict  # (its step runs are in memory)
    detail["replays"] = (
        []
        if created
        else list(
            session.execute(
                select(Run.id).where(Run.replay_of == run.id).order_by(Run.created_at)
            ).scalars()
        )
    )
    if created:
        step_runs = sorted(run.step_runs, key=lambda s: s.sequence)
        total = len(step_runs)
        step_runs = step_runs[-steps_limit:] if steps_limit else step_runs
    else:
        step_runs, total = history.last_step_runs(session, run, steps_limit)
    detail["steps_total"] = total
    detail["steps"] = history.step_entries(session, step_runs, attempts=not created)
    return detail


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
    order: list[Any] = []
    before = decode_cursor(cursor, str)
    if workflow_id and version is not None:
        # (ix_runs_workflow_version, from the version's newest run: an old version's runs are
        # not found by walking every newer run; a status is a filter on that walk. The version
        # is compared by the walk alone: an `=` too would let PostgreSQL, the column being
        # constant, walk the workflow's narrower index or the primary key and filter.)
        equal = [(Run.workflow_id, workflow_id), (Run.version, version)]
        where, order = newest_of(session, equal, Run.id, before)
        stmt = stmt.where(*where)
        if status:
            stmt = stmt.where(Run.status == status)
    elif status and workflow_id:
        # (both: the smaller of their sets of runs, through both indexes)
        stmt = stmt.where(Run.status == status, Run.workflow_id == workflow_id)
    elif status or workflow_id:
        # (ix_runs_status_id, ix_runs_workflow_id, from the value's newest run)
        column, value = (Run.status, status) if status else (Run.workflow_id, workflow_id)
        where, order = newest_of(session, [(column, value)], Run.id, before)
        stmt = stmt.where(*where)
    if version is not None and not workflow_id:  # (with a workflow: compared by the walk)
        stmt = stmt.where(Run.version == version)
    # A time window bounds the ids too (time-ordered, minted with created_at: ID_CLOCK_SLACK),
    # so the newest-first walk starts and stops near the window.
    if since:
        stmt = stmt.where(Run.created_at >= since, Run.id >= first_id_at(since - ID_CLOCK_SLACK))
    if until:
        stmt = stmt.where(Run.created_at < until, Run.id < first_id_at(until + ID_CLOCK_SLACK))
    if stuck is not None:
        # by the statuses a run can be stuck in (ix_runs_status_wake: stuck_at has no index);
        # a NULL stuck_at is not stuck, and must not drop the run from `stuck=false` either
        flagged = (
            Run.status.in_(sorted(set(RunStatus) - TERMINAL))
            & Run.stuck_at.is_not(None)
            & (Run.stuck_at <= utcnow())
        )
        stmt = stmt.where(flagged if stuck else ~flagged)
    if before is not None:
        stmt = stmt.where(Run.id < before)
    rows = session.execute(stmt.order_by(*order, Run.id.desc()).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda r: r.id)
