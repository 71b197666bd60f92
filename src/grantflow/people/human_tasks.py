"""Human tasks: created when a `task` step first runs; Submit / Skip / Fail read back when the
run wakes; an optional timeout skips the step or fails the run (chosen explicitly)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.people import routing, tasks
from grantflow.people.models import Task
from grantflow.people.tasks import TaskKind, TaskStatus
from grantflow.steps.execution import skipped_output
from grantflow.store.base import utcnow

if TYPE_CHECKING:
    from grantflow.steps.execution import StepCall
    from grantflow.steps.task import TaskConfig

ENGINE = Actor.system("engine")


@dataclass
class Outcome:
    task_id: str | None = None
    waiting: bool = False
    wake_at: dt.datetime | None = None
    output: dict[str, Any] | None = None
    skipped: bool = False
    failed: str | None = None
    code: str = "failed_by_person"  # why it failed: a person's Fail, or task_timed_out
    next_action: str | None = None
    event: dict[str, Any] = field(default_factory=dict)


def advance(call: StepCall, config: TaskConfig) -> Outcome:
    session = call.session
    assert session is not None and call.step_run_id is not None
    now = call.now or utcnow()
    task = tasks.for_step_run(session, call.step_run_id)
    if task is None:
        task = Task(
            kind=TaskKind.TASK,
            status=TaskStatus.PENDING,
            run_id=call.run_id,
            step_run_id=call.step_run_id,
            step_id=call.step_id,
            workflow_id=call.workflow_id or "",
            title=config.title,
            instructions=config.instructions,
            requester=call.run_created_by,
            subject_email=(call.run_subject.get("identity") or {}).get("email"),
            stages=[config.assignees.model_dump(mode="json")],
            form=config.form,
            due_at=now + config.timeout if config.timeout else None,
            timeout_action=config.on_timeout,
        )
        session.add(task)
        session.flush()
        routed = routing.resolve(
            session, config.assignees.users, [str(r) for r in config.assignees.roles]
        )
        tasks.add_assignees(session, task, 0, routed.user_ids, routed.roles, "step")
        task.routing_problem = "; ".join(routed.problems) or None
        told = tasks.announce(session, task)
        audit.record(
            session, ENGINE, "task.created", "task", task.id, {"kind": "task", "run": call.run_id}
        )
        return Outcome(task_id=task.id, waiting=True, wake_at=task.due_at, event={"to": told})
    if task.status == TaskStatus.SUBMITTED:
        return Outcome(task_id=task.id, output=task.output or {})
    if task.status == TaskStatus.SKIPPED:
        reason = task.comment or "skipped at the task"
        return Outcome(
            task_id=task.id, skipped=True, output=skipped_output(task.decided_by or "?", reason)
        )
    if task.status == TaskStatus.FAILED:
        return Outcome(
            task_id=task.id,
            failed=f"{task.decided_by} failed the run at this task: {task.comment}",
            next_action="fix what the reason names, then Replay the run",
        )
    if task.due_at is not None and now >= task.due_at:
        task.status = TaskStatus.SKIPPED if task.timeout_action == "skip" else TaskStatus.FAILED
        task.decided_by = "system:timeout"
        task.decided_at = now
        task.comment = "no one acted before the timeout"
        tasks.close_notifications(session, task)
        if task.status == TaskStatus.SKIPPED:
            return Outcome(
                task_id=task.id,
                skipped=True,
                output=skipped_output("system:timeout", task.comment),
            )
        return Outcome(
            task_id=task.id,
            failed="no one acted on the task before its timeout",
            code="task_timed_out",
            next_action="Replay the run, or give the task a longer timeout",
        )
    return Outcome(task_id=task.id, waiting=True, wake_at=task.due_at)
