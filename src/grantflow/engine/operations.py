"""Run operations: retry, replay (as-is or with the latest version), cancel, pause, resume.
Each is checked, audited with its actor, and written to the run's timeline."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import advice, audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.lookup import get_workflow
from grantflow.engine import failures
from grantflow.engine.models import Run, StepRun
from grantflow.engine.plans import plan_for
from grantflow.engine.runs import check_dispatching, start_run
from grantflow.engine.states import RunStatus, StepStatus, WaitingReason
from grantflow.engine.timeline import add_event
from grantflow.engine.transitions import acted_steps, move_run, move_step
from grantflow.errors import Conflict, FailureClass, NotFound
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix


def get_run(session: Session, run_id: str, *, lock: bool = False) -> Run:
    run = session.get(Run, run_id, with_for_update=lock, populate_existing=lock)
    if run is None:
        run = by_prefix(session, Run, run_id, "run", lock=lock)
    if run is None:
        raise NotFound(f"run {run_id} does not exist", target_type="run")
    return run


def _latest_step_run(session: Session, run: Run) -> StepRun | None:
    return session.execute(
        select(StepRun).where(StepRun.run_id == run.id).order_by(StepRun.sequence.desc()).limit(1)
    ).scalar_one_or_none()


def retry(session: Session, actor: Actor, queue: Queue, run_id: str) -> Run:
    """Resume a failed, timed-out or escalated run from its failed step, on the same version."""
    actor.require(Permission.RUN_OPERATE)
    run = get_run(session, run_id, lock=True)
    escalated = run.status == RunStatus.WAITING and run.waiting_reason == WaitingReason.ESCALATED
    if run.status not in (RunStatus.FAILED, RunStatus.TIMED_OUT) and not escalated:
        hint = {
            RunStatus.SUCCEEDED: "it succeeded; use Replay to run it again",
            RunStatus.CANCELLED: "it was cancelled; use Replay to run it again",
        }.get(RunStatus(run.status), "only a failed, timed-out or escalated run can be retried")
        raise Conflict(f"run {run.id} is {run.status}: {hint}", code="not_retryable")
    step_run = _latest_step_run(session, run)
    if step_run is not None and step_run.status == StepStatus.SUCCEEDED:
        # The run failed choosing where to go next (a branch condition, a loop bound): the
        # fault is in the workflow, which this version cannot change.
        raise Conflict(
            f"run {run.id} failed after step {step_run.step_id!r} succeeded, while choosing the "
            "next step; retrying the same version would fail the same way",
            next_action="fix the workflow, publish it, then Replay with latest",
            code="not_retryable",
        )
    if step_run is not None and step_run.status == StepStatus.FAILED:
        step_run.attempt_group += 1  # a fresh idempotency key: the operator asked to act again
        step_run.attempts = 0
        step_run.next_attempt_at = None
    plan = plan_for(session, run.workflow_id, run.version)
    if step_run is None:
        # it failed before its first step (its plan was damaged at start, then recompiled)
        entry = plan.steps[plan.entry]
        session.add(
            StepRun(
                run_id=run.id,
                step_id=entry.id,
                step_type=entry.type,
                sequence=1,
                status=StepStatus.PENDING,
                side_effects=entry.side_effects,
            )
        )
        run.current_step = entry.id
        run.stuck_after_seconds = plan.stuck_after_seconds
    run.deadline_at = utcnow() + dt.timedelta(seconds=plan.execution_timeout_seconds)
    run.retry_count += 1
    previous = run.failure
    move_run(session, run, RunStatus.QUEUED, actor=actor.label, operation="retry")
    queue.schedule(session, run.id)
    audit.record(
        session,
        actor,
        "run.retried",
        "run",
        run.id,
        {
            "step": step_run.step_id if step_run else None,
            "previous_failure": (previous or {}).get("message"),
        },
    )
    return run


def replay(session: Session, actor: Actor, queue: Queue, run_id: str, *, latest: bool) -> Run:
    """A new run with the same input: on the run's own version (as-is) or on the active one."""
    actor.require(Permission.RUN_OPERATE)
    run = get_run(session, run_id)
    if not RunStatus(run.status).terminal:
        raise Conflict(
            f"run {run.id} is still {run.status}; only an ended run can be replayed",
            next_action="wait for it to end, or cancel it first",
            code="not_ended",
        )
    version = run.version
    if latest:
        version = check_dispatching(get_workflow(session, run.workflow_id))
        acted = failures.irreversible_steps_done(
            session, run, plan_for(session, run.workflow_id, run.version)
        )
        if acted:
            names = ", ".join(repr(s) for s in acted)
            grant_id = ((run.subject or {}).get("grant") or {}).get("id")
            advised = advice.advise("replay_refused" if grant_id else "replay_refused/no_grant")
            raise Conflict(
                f"replay with latest is refused: run {run.id} already completed the "
                f"non-reversible step(s) {names}; a fresh run would do that again",
                next_action=advised["next_action"],
                code="replay_refused",
                steps=list(acted),
                action=advice.render(advised["operation"], grant_id=grant_id),
            )
    new = start_run(
        session,
        actor,
        queue,
        run.workflow_id,
        run.input,
        trigger=run.trigger,
        subject=run.subject,
        version=version,
        replay_of=run.id,
        replay_mode="latest" if latest else "as_is",
    )
    add_event(
        session,
        run.id,
        "replayed",
        actor=actor.label,
        new_run=new.id,
        mode="latest" if latest else "as_is",
    )
    audit.record(
        session,
        actor,
        "run.replayed",
        "run",
        run.id,
        {"new_run": new.id, "version": version, "latest": latest},
    )
    return new


def cancel(
    session: Session, actor: Actor, queue: Queue, run_id: str, *, force: bool = False
) -> Run:
    """Stop a run. Immediate while no step with side effects has acted; after that only with
    `force`, and the run records which steps had already acted."""
    actor.require(Permission.RUN_OPERATE)
    run = get_run(session, run_id, lock=True)
    if RunStatus(run.status).terminal:
        raise Conflict(f"run {run.id} already ended ({run.status})", code="already_ended")
    acted = acted_steps(session, run)
    if acted and not force:
        raise Conflict(
            f"steps {', '.join(acted)} already acted on external systems; cancelling now could "
            "leave partial changes (orphaned accounts or access)",
            next_action="cancel with force=true to stop anyway (the acted steps are recorded "
            "on the run so you can check those systems)",
            code="cancel_needs_force",
            acted_steps=acted,
        )
    step_run = _latest_step_run(session, run)
    if step_run is not None and step_run.status in (
        StepStatus.PENDING,
        StepStatus.RETRYING,
        StepStatus.WAITING,
    ):
        move_step(session, step_run, StepStatus.CANCELLED, event="step_cancelled")
    run.acted_steps = acted
    message = f"cancelled by {actor.label}"
    next_action = "Replay the run if it should still happen"
    if acted:
        message += f" after steps {', '.join(acted)} had acted"
        next_action = (
            f"check {', '.join(acted)} in their systems for partial changes; " + next_action
        )
    failure = failures.reason(
        FailureClass.CANCELLED,
        "cancelled",
        message,
        next_action,
        run.current_step,
        forced=force,
        acted_steps=acted,
    )
    move_run(session, run, RunStatus.CANCELLED, failure=failure, actor=actor.label)
    queue.remove(session, run.id)
    audit.record(
        session, actor, "run.cancelled", "run", run.id, {"force": force, "acted_steps": acted}
    )
    return run


def pause(session: Session, actor: Actor, queue: Queue, run_id: str) -> Run:
    """Stop the run at the next step boundary (at once when no worker holds it)."""
    actor.require(Permission.RUN_OPERATE)
    run = get_run(session, run_id, lock=True)
    status = RunStatus(run.status)
    if status.terminal:
        raise Conflict(f"run {run.id} already ended ({run.status})", code="already_ended")
    if status == RunStatus.PAUSED:
        return run
    if status == RunStatus.RUNNING:
        run.pause_requested = True
        add_event(session, run.id, "pause_requested", actor=actor.label)
    else:
        move_run(
            session, run, RunStatus.PAUSED, actor=actor.label, reason="operator", **_keep_wait(run)
        )
        queue.schedule(session, run.id, run.deadline_at)
    audit.record(session, actor, "run.paused", "run", run.id, {"was": str(status)})
    return run


def _keep_wait(run: Run) -> dict[str, Any]:
    return {"was_waiting_for": run.waiting_reason} if run.waiting_reason else {}


def resume(session: Session, actor: Actor, queue: Queue, run_id: str) -> Run:
    actor.require(Permission.RUN_OPERATE)
    run = get_run(session, run_id, lock=True)
    if run.pause_requested and run.status == RunStatus.RUNNING:
        run.pause_requested = False
    elif run.status != RunStatus.PAUSED:
        raise Conflict(f"run {run.id} is {run.status}, not paused", code="not_paused")
    elif run.waiting_reason is not None:
        move_run(
            session,
            run,
            RunStatus.WAITING,
            waiting_reason=WaitingReason(run.waiting_reason),
            wake_at=run.wake_at,
            actor=actor.label,
            operation="resume",
        )
        queue.schedule(session, run.id)
    else:
        move_run(session, run, RunStatus.QUEUED, actor=actor.label, operation="resume")
        queue.schedule(session, run.id)
    audit.record(session, actor, "run.resumed", "run", run.id, {})
    return run
