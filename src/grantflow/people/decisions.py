"""Acting on tasks: approve, reject, submit, skip, fail, retry — by an assignee with
workflow:task — and reassigning (task:reassign). A decision that settles a task wakes its run
at once; the run holds no worker while it waits."""

from __future__ import annotations

import enum
from typing import Any

import jsonschema
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.engine import failures, operations
from grantflow.engine.context import skipped_output
from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import RunStatus, StepStatus
from grantflow.engine.transitions import move_run, move_step
from grantflow.errors import (
    Conflict,
    FailureClass,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from grantflow.people import approvals, routing, tasks
from grantflow.people.models import Task, TaskAssignee, TaskDecision
from grantflow.people.tasks import TaskKind, TaskStatus
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix


class Action(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    SUBMIT = "submit"
    SKIP = "skip"
    FAIL = "fail"
    RETRY = "retry"


ALLOWED = {
    TaskKind.APPROVAL: {Action.APPROVE, Action.REJECT},
    TaskKind.TASK: {Action.SUBMIT, Action.SKIP, Action.FAIL},
    TaskKind.ESCALATION: {Action.RETRY, Action.SKIP, Action.FAIL},
}


def get_task(session: Session, task_id: str, *, lock: bool = False) -> Task:
    task = session.get(Task, task_id, with_for_update=lock or None, populate_existing=lock)
    if task is None:
        task = by_prefix(session, Task, task_id, "task", lock=lock)
    if task is None:
        raise NotFound(f"task {task_id} does not exist", target_type="task", target_id=task_id)
    return task


def _user(session: Session, actor: Actor) -> User:
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None or not user.active:
        raise PermissionDenied(
            "only an active user can act on tasks (a decision is always someone's)",
            next_action="act as a user: an API token, or the CLI's --as EMAIL",
        )
    return user


def _check_can_act(session: Session, actor: Actor, task: Task, user: User, action: Action) -> None:
    actor.require(routing.permission_for(task.kind))
    if task.status != TaskStatus.PENDING:
        raise Conflict(
            f"task {task.id} is already {task.status}"
            + (f" (by {task.decided_by})" if task.decided_by else ""),
            code="task_closed",
        )
    if action not in ALLOWED[task.kind]:
        names = ", ".join(sorted(ALLOWED[task.kind]))
        raise ValidationError(
            f"action: {'a' if task.kind == TaskKind.TASK else 'an'} {task.kind} takes {names}, "
            f"not {action}",
            details=[{"field": "action", "message": f"not allowed for a {task.kind}"}],
        )
    if not routing.is_assignee(session, task, user):
        who = tasks.describe(session, task)["assignees"]
        raise PermissionDenied(
            f"{user.email} is not an assignee of task {task.id} (assigned to: "
            f"{', '.join(who) or 'no one'})",
            next_action="ask an assignee to act, or an admin to reassign the task to you",
            code="not_assignee",
        )
    separation = routing.separation_problem(task, user)
    if separation is not None:
        raise PermissionDenied(
            f"separation of duties: {separation}",
            next_action="another approver must decide",
            code="self_approval",
        )


def decide(
    session: Session,
    actor: Actor,
    queue: Queue,
    task_id: str,
    action: Action,
    *,
    comment: str | None = None,
    data: dict[str, Any] | None = None,
    via: str = "api",
) -> Task:
    # Lock the run before the task, in the order the worker takes them (it locks the run, then
    # reads the task): the other order deadlocks with a worker looking at the same approval.
    run_id = session.execute(select(Task.run_id).where(Task.id == task_id)).scalar_one_or_none()
    if run_id is not None:
        session.get(Run, run_id, with_for_update=True, populate_existing=True)
    task = get_task(session, task_id, lock=True)
    user = _user(session, actor)
    _check_can_act(session, actor, task, user, action)
    comment = (comment or "").strip() or None
    if action == Action.APPROVE and task.require_justification and not comment:
        raise ValidationError(
            "comment: this approval requires a justification",
            details=[{"field": "comment", "message": "required: say why you approve"}],
        )
    if action in (Action.FAIL, Action.REJECT) and task.kind != TaskKind.APPROVAL and not comment:
        raise ValidationError(
            "comment: say why the run should fail",
            details=[{"field": "comment", "message": "required"}],
        )
    if action == Action.SUBMIT:
        data = validate_form(task, data or {})
    row = TaskDecision(
        task_id=task.id,
        stage=task.current_stage,
        user_id=user.id,
        actor=user.email,
        decision=action,
        comment=comment,
        data=data,
        via=via,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict(
            f"{user.email} already decided on stage {task.current_stage + 1} of task {task.id}",
            code="already_decided",
        ) from None
    settled = _apply(session, actor, queue, task, user, action, comment, data)
    audit.record(
        session,
        actor,
        f"task.{action}",
        "task",
        task.id,
        {"run": task.run_id, "kind": task.kind, "comment": comment, "via": via},
    )
    if settled and task.kind != TaskKind.ESCALATION:
        wake(session, queue, task.run_id)
    return task


def validate_form(task: Task, data: dict[str, Any]) -> dict[str, Any]:
    """Submit's data checked against the task's form (JSON Schema): a 422 with one detail per
    problem, each naming its field (`data.<path>`) — what the API and the console show."""
    validator = jsonschema.Draft202012Validator(
        task.form or {"type": "object"}, format_checker=jsonschema.FormatChecker()
    )
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if errors:
        details = [
            {"field": "data" + "".join(f".{p}" for p in _field_path(e)), "message": e.message}
            for e in errors
        ]
        raise ValidationError(
            "data does not match the task's form: "
            + "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]),
            details=details,
        )
    return data


def _field_path(error: jsonschema.ValidationError) -> list[Any]:
    """Where an error is: a missing required property is named as the field itself (the
    validator reports it on the object that lacks it)."""
    path = list(error.path)
    wanted = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [
            name
            for name in (wanted if isinstance(wanted, list) else [])
            if name not in error.instance and error.message.startswith(f"{name!r} ")
        ]
        path += missing[:1]
    return path


def _apply(
    session: Session,
    actor: Actor,
    queue: Queue,
    task: Task,
    user: User,
    action: Action,
    comment: str | None,
    data: dict[str, Any] | None,
) -> bool:
    """Record what the decision settles; True when the task is closed."""
    if task.kind == TaskKind.APPROVAL:
        if action == Action.REJECT:
            approvals.finish(session, task, approved=False, by=user.email, comment=comment)
            return True
        if not approvals.stage_complete(session, task):
            tasks.resolve_for(session, task, user)  # this approver is done; the others wait
            return False
        if approvals.next_stage(session, task):
            return False
        approvals.finish(session, task, approved=True, by=user.email, comment=comment)
        return True
    task.decided_by = user.email
    task.decided_at = utcnow()
    task.comment = comment
    tasks.close_notifications(session, task)
    if task.kind == TaskKind.TASK:
        task.status = {
            Action.SUBMIT: TaskStatus.SUBMITTED,
            Action.SKIP: TaskStatus.SKIPPED,
            Action.FAIL: TaskStatus.FAILED,
        }[action]
        task.output = data if action == Action.SUBMIT else None
        return True
    _act_on_escalation(session, actor, queue, task, action, comment)
    return True


def _act_on_escalation(
    session: Session,
    actor: Actor,
    queue: Queue,
    task: Task,
    action: Action,
    comment: str | None,
) -> None:
    """The assignee of an escalated failure retries the step, skips it, or fails the run."""
    run = session.get(Run, task.run_id, with_for_update=True)
    if run is None or run.status != RunStatus.WAITING:
        raise Conflict(
            f"run {task.run_id} is no longer waiting on this escalation ({run and run.status})",
            code="task_stale",
        )
    operator = Actor(
        label=actor.label,
        user_id=actor.user_id,
        permissions=actor.permissions | {Permission.RUN_OPERATE},
        request_id=actor.request_id,
    )
    if action == Action.RETRY:
        task.status = TaskStatus.RETRIED
        operations.retry(session, operator, queue, run.id)
        return
    step_run = session.get(StepRun, task.step_run_id)
    assert step_run is not None
    if action == Action.SKIP:
        task.status = TaskStatus.SKIPPED
        reason = comment or f"the step failed: {(step_run.error or {}).get('message', '?')}"
        step_run.output = skipped_output(actor.label, reason)
        move_step(session, step_run, StepStatus.SKIPPED, event="step_skipped", by=actor.label)
        move_run(session, run, RunStatus.QUEUED, actor=actor.label, operation="skip_step")
        queue.schedule(session, run.id)
        return
    task.status = TaskStatus.FAILED
    failure = failures.reason(
        FailureClass.REJECTED,
        "failed_by_person",
        f"{actor.label} failed the run after step {step_run.step_id!r} escalated: {comment}",
        "fix the cause, then Replay the run",
        step_run.step_id,
    )
    move_run(session, run, RunStatus.FAILED, failure=failure, actor=actor.label)
    queue.remove(session, run.id)


def wake(session: Session, queue: Queue, run_id: str) -> None:
    """The run reads the decision within a second: its timer is now, its queue item ready."""
    run = session.get(Run, run_id, with_for_update=True)
    if run is None:
        return
    if run.status == RunStatus.PAUSED and run.waiting_reason is not None:
        # paused while it waited: resuming it puts back this timer, so the run reads the
        # decision at once then (instead of at its next reminder or its deadline)
        run.wake_at = utcnow()
        return
    if run.status != RunStatus.WAITING:
        return
    run.wake_at = utcnow()
    queue.schedule(session, run.id)  # (the queue notifies sleeping workers after commit)


def reassign(
    session: Session,
    actor: Actor,
    task_id: str,
    *,
    users: list[str],
    roles: list[str],
    remove: list[str] | None = None,
    comment: str | None = None,
) -> Task:
    """Route a pending task to other people (e.g. the approver left); audited."""
    actor.require(Permission.TASK_REASSIGN)
    task = get_task(session, task_id, lock=True)
    if task.status != TaskStatus.PENDING:
        raise Conflict(f"task {task.id} is already {task.status}", code="task_closed")
    routed = routing.resolve(session, users, roles, routing.permission_for(task.kind))
    if routed.problems:
        raise ValidationError(
            "users: " + "; ".join(routed.problems),
            details=[{"field": "users", "message": p} for p in routed.problems],
            next_action="name active users who have the permission workflow:task, or a role",
        )
    if not routed.user_ids and not routed.roles:
        raise ValidationError(
            "users: name at least one user or role",
            details=[{"field": "users", "message": "empty"}],
        )
    removed = []
    for key in remove or []:
        user = routing.find_user(session, key)
        for row in routing.assignees(session, task):
            if (user and row.user_id == user.id) or row.role == key:
                row.active = False
                removed.append(key)
    if remove is None:  # replace everyone by default
        for row in routing.assignees(session, task):
            row.active = False
    tasks.close_notifications(session, task)
    for user_id in routed.user_ids:
        session.add(
            TaskAssignee(
                task_id=task.id, stage=task.current_stage, user_id=user_id, origin="reassigned"
            )
        )
    for role in routed.roles:
        session.add(
            TaskAssignee(task_id=task.id, stage=task.current_stage, role=role, origin="reassigned")
        )
    session.flush()
    task.routing_problem = None
    told = tasks.announce(session, task)
    audit.record(
        session,
        actor,
        "task.reassigned",
        "task",
        task.id,
        {
            "to_users": users,
            "to_roles": roles,
            "removed": removed,
            "comment": comment,
            "told": told,
        },
    )
    return task
