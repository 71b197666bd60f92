"""How people react to the engine: escalated failures become tasks, a waiting run says whom
it waits for, a run that ends closes its open tasks, and a run that ends failed or timed out
tells the people who watch runs (run_needs_attention, once per run until it succeeds). Loaded
through the `grantflow.engine_listeners` entry point."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.definitions.models import Workflow
from grantflow.engine import hooks
from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import RunStatus
from grantflow.people import routing, tasks
from grantflow.people.models import Task
from grantflow.people.notifications import NotificationKind, notify, resolve
from grantflow.people.tasks import TaskKind, TaskStatus
from grantflow.store.base import utcnow

ESCALATION_ROLES = [Role.OPERATOR.value, Role.ADMIN.value]


@hooks.on_escalation
def _escalated(session: Session, run: Run, step_run: StepRun, failure: dict[str, Any]) -> None:
    """A step exhausted its retries with on_failure: escalate — a task for operators."""
    existing = tasks.for_step_run(session, step_run.id)
    if existing is not None:  # escalated again after a retry: reopen the same task
        tasks.close_notifications(session, existing)
        # a new round (the same people may decide again; each decision is one per round)
        current = routing.assignees(session, existing)
        existing.current_stage += 1
        existing.stages = [*existing.stages, existing.stages[-1]]
        tasks.add_assignees(
            session,
            existing,
            existing.current_stage,
            [a.user_id for a in current if a.user_id],
            [a.role for a in current if a.role],
            "step",
        )
        existing.status = TaskStatus.PENDING
        existing.failure = failure
        existing.decided_by = existing.decided_at = existing.comment = None
        tasks.announce(session, existing)
        return
    task = Task(
        kind=TaskKind.ESCALATION,
        status=TaskStatus.PENDING,
        run_id=run.id,
        step_run_id=step_run.id,
        step_id=step_run.step_id,
        workflow_id=run.workflow_id,
        title=f"Step {step_run.step_id!r} failed and needs a decision",
        instructions=f"{failure.get('message')}. Retry the step once the cause is fixed, "
        "skip it, or fail the run.",
        requester=run.created_by,
        stages=[{"roles": ESCALATION_ROLES}],
        failure=failure,
    )
    session.add(task)
    session.flush()
    tasks.add_assignees(session, task, 0, [], ESCALATION_ROLES, "step")
    tasks.announce(session, task)
    audit.record(
        session,
        Actor.system("engine"),
        "task.created",
        "task",
        task.id,
        {"kind": "escalation", "run": run.id, "step": step_run.step_id},
    )


@hooks.wait_describer
def _describe(session: Session, run: Run) -> dict[str, Any] | None:
    task = _open_task(session, run.id)
    return tasks.describe(session, task) if task is not None else None


# (only a plan with people has tasks; they settle when a run ends or is retried)
@hooks.on_run_status(
    wants=lambda end: (
        end.people and (RunStatus(end.status).terminal or end.status == RunStatus.QUEUED)
    )
)
def _run_status(session: Session, run: Run, old: str, new: str) -> None:
    if not RunStatus(new).terminal:
        if RunStatus(new) == RunStatus.QUEUED:  # retried by an operator: escalation settled
            for task in _open_tasks(session, run.id, TaskKind.ESCALATION):
                task.status = TaskStatus.RETRIED
                task.decided_at = utcnow()
                tasks.close_notifications(session, task)
        return
    for task in _open_tasks(session, run.id):
        task.status = TaskStatus.CANCELLED
        task.decided_at = utcnow()
        task.comment = f"the run ended {new}"
        tasks.close_notifications(session, task)


NEEDS_ATTENTION = (RunStatus.FAILED, RunStatus.TIMED_OUT)


def attention_key(run_id: str) -> str:
    return f"{NotificationKind.RUN_NEEDS_ATTENTION}:{run_id}"


@hooks.on_run_status(
    wants=lambda end: (
        end.status in NEEDS_ATTENTION
        or (end.status == RunStatus.SUCCEEDED and bool(end.retry_count or end.replay_of))
    )
)
def _needs_attention(session: Session, run: Run, old: str, new: str) -> None:
    """A run that ends failed or timed out raises one broadcast notification (it stays the
    one while open: a retried run failing again raises no second); it is resolved when the
    run, retried, succeeds, or when a replay of it succeeds. A rejected approval raises
    none: the run ended the way a person decided."""
    status = RunStatus(new)
    if status == RunStatus.SUCCEEDED:
        if run.retry_count:  # only a run that ended failed (then was retried) raised one
            resolve(session, attention_key(run.id))
        if run.replay_of:
            resolve(session, attention_key(run.replay_of))
        return
    if status not in NEEDS_ATTENTION:
        return
    if (run.failure or {}).get("class") == "rejected":
        return  # an approver said no: the run ended as decided, nothing needs fixing
    workflow = session.get(Workflow, run.workflow_id)
    name = workflow.name if workflow else run.workflow_id
    failure = run.failure or {}
    where = f" at step {failure['step_id']!r}" if failure.get("step_id") else ""
    message = failure.get("message") or f"the run ended {new}"
    notify(
        session,
        NotificationKind.RUN_NEEDS_ATTENTION,
        attention_key(run.id),
        f"Run of {name!r} {'timed out' if status == RunStatus.TIMED_OUT else 'failed'}{where}",
        body=f"{message}. Next: {failure.get('next_action') or 'open the run and act on it'}",
        target_type="run",
        target_id=run.id,
        recipient_id=None,
        run_id=run.id,
        workflow_id=run.workflow_id,
        status=new,
        failure_class=failure.get("class"),
        step_id=failure.get("step_id"),
    )


def _open_tasks(session: Session, run_id: str, kind: str | None = None) -> list[Task]:
    stmt = select(Task).where(Task.run_id == run_id, Task.status == TaskStatus.PENDING)
    if kind:
        stmt = stmt.where(Task.kind == kind)
    return list(session.execute(stmt).scalars())


def _open_task(session: Session, run_id: str) -> Task | None:
    found = _open_tasks(session, run_id)
    return found[-1] if found else None
