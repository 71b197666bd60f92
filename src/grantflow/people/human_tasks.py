"""Human tasks: created when a `task` step first runs; Submit / Skip / Fail read back when the
run wakes; an optional timeout skips the step or fails the run (chosen explicitly)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.engine.context import skipped_output
from grantflow.people import routing, tasks
from grantflow.people.models import Task
from grantflow.people.tasks import StepAsk, TaskKind, TaskStatus

ENGINE = Actor.system("engine")


@dataclass(frozen=True)
class TaskRequest:
    """What a task step asks for, in the people service's terms (the `task` step fills it in
    from its validated config)."""

    title: str
    instructions: str
    assignees: dict[str, Any]  # users and roles who may act: {"users": [...], "roles": [...]}
    form: dict[str, Any]  # the JSON Schema of what Submit takes
    timeout: dt.timedelta | None
    on_timeout: str | None  # skip | fail


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


def advance(ask: StepAsk, request: TaskRequest) -> Outcome:
    session = ask.session
    now = ask.now
    task = tasks.for_step_run(session, ask.step_run_id)
    if task is None:
        task = Task(
            kind=TaskKind.TASK,
            status=TaskStatus.PENDING,
            run_id=ask.run_id,
            step_run_id=ask.step_run_id,
            step_id=ask.step_id,
            workflow_id=ask.workflow_id or "",
            title=request.title,
            instructions=request.instructions,
            requester=ask.requester,
            subject_email=(ask.subject.get("identity") or {}).get("email"),
            stages=[request.assignees],
            form=request.form,
            due_at=now + request.timeout if request.timeout else None,
            timeout_action=request.on_timeout,
        )
        session.add(task)
        session.flush()
        routed = routing.resolve(session, request.assignees["users"], request.assignees["roles"])
        tasks.add_assignees(session, task, 0, routed.user_ids, routed.roles, "step")
        task.routing_problem = "; ".join(routed.problems) or None
        told = tasks.announce(session, task)
        audit.record(
            session, ENGINE, "task.created", "task", task.id, {"kind": "task", "run": ask.run_id}
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
