"""Tasks: created by approval and task steps (and by escalated failures), found again when
their run wakes, and announced to the people who can act on them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import advice, timestamps
from grantflow.auth.models import User
from grantflow.people import routing
from grantflow.people.models import Task, TaskAssignee, TaskDecision
from grantflow.people.notifications import NotificationKind, notify, resolve

# e-mail delivery registers here (people.email), so a task announces itself by mail too
Announcer = Callable[[Session, Task, User], None]
_announcers: list[Announcer] = []


def on_announce(announcer: Announcer) -> Announcer:
    if announcer not in _announcers:
        _announcers.append(announcer)
    return announcer


class TaskKind:
    APPROVAL = "approval"
    TASK = "task"
    ESCALATION = "escalation"


class TaskStatus:
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUBMITTED = "submitted"
    SKIPPED = "skipped"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class StepAsk:
    """The step run that asks people to act (an `approval` or a `task` step): what its task is
    created from and found again by. The step type fills it in from its call; the people
    service never sees a step's own types (a step type depends on it, never the reverse)."""

    session: Session  # the engine's transaction: the task's rows are read and written in it
    run_id: str
    step_id: str
    step_run_id: str
    workflow_id: str | None
    requester: str | None  # who started the run (separation of duties)
    subject: dict[str, Any]  # the run's subject: identity, grant, application
    now: dt.datetime  # the engine's clock (timers of approvals and tasks)


def for_step_run(session: Session, step_run_id: str) -> Task | None:
    return session.execute(
        select(Task).where(Task.step_run_id == step_run_id).with_for_update()
    ).scalar_one_or_none()


def add_assignees(
    session: Session, task: Task, stage: int, user_ids: list[str], roles: list[str], origin: str
) -> None:
    for user_id in user_ids:
        session.add(TaskAssignee(task_id=task.id, stage=stage, user_id=user_id, origin=origin))
    for role in roles:
        session.add(TaskAssignee(task_id=task.id, stage=stage, role=role, origin=origin))
    session.flush()


def dedup_key(task: Task, user_id: str) -> str:
    return f"task:{task.id}:{task.current_stage}:{user_id}"


def announce(session: Session, task: Task) -> list[str]:
    """Notify (in-app, and by e-mail when configured) everyone who can act now and has not
    decided this stage yet; deduplicated per task, stage and person. Returns whom."""
    kind = (
        NotificationKind.APPROVAL_PENDING
        if task.kind == TaskKind.APPROVAL
        else NotificationKind.TASK_ASSIGNED
    )
    decided = {d.user_id for d in decisions(session, task) if d.stage == task.current_stage}
    told = []
    for user in routing.people_to_notify(session, task):
        if user.id in decided:
            continue
        created = notify(
            session,
            kind,
            dedup_key(task, user.id),
            task.title,
            body=task.instructions,
            target_type="task",
            target_id=task.id,
            recipient_id=user.id,
            run_id=task.run_id,
        )
        if created is not None:
            told.append(user.email)
            for announcer in _announcers:
                announcer(session, task, user)
    return told


def resolve_for(session: Session, task: Task, user: User) -> None:
    """`user` has acted on the current stage: their notification is settled."""
    resolve(session, dedup_key(task, user.id))


def close_notifications(session: Session, task: Task) -> None:
    for row in session.execute(
        select(TaskAssignee.user_id).where(TaskAssignee.task_id == task.id)
    ).scalars():
        if row:
            resolve(session, dedup_key(task, row))
    for user in routing.people_to_notify(session, task):
        resolve(session, dedup_key(task, user.id))


def decisions(session: Session, task: Task) -> list[TaskDecision]:
    query = select(TaskDecision).where(TaskDecision.task_id == task.id).order_by(TaskDecision.id)
    return routing.memoized(
        session, ("decisions", task.id), lambda: list(session.execute(query).scalars())
    )


def next_timer(task: Task) -> dt.datetime | None:
    """When the run should look at the task again without a decision."""
    times = [t for t in (task.due_at, task.remind_at if not task.reminded_at else None) if t]
    return min(times) if times else None


def describe(session: Session, task: Task) -> dict[str, Any]:
    """Who the run waits for, in facts and in one sentence."""
    people = routing.people_to_notify(session, task)
    rows = routing.assignees(session, task)
    named = []
    for row in rows:
        user = session.get(User, row.user_id) if row.user_id else None
        if user is not None:
            named.append(user.email)
    named += [f"role {r.role}" for r in rows if r.role]
    problem = routing.current_problem(session, task)
    stage = ""
    if task.kind == TaskKind.APPROVAL and len(task.stages) > 1:
        stage = f" (stage {task.current_stage + 1} of {len(task.stages)})"
    summary = (
        f"waiting for {task.kind} {task.title!r} by {' or '.join(named) or 'no one'}{stage}"
        + (f", due {task.due_at:%Y-%m-%d %H:%M}Z" if task.due_at else "")
    )
    if problem:
        summary += f" — {problem}"
    return {
        "task_id": task.id,
        "kind": task.kind,
        "title": task.title,
        "assignees": named,
        "can_act": [u.email for u in people],
        "stage": task.current_stage + 1,
        "stages": max(len(task.stages), 1),
        "due_at": timestamps.rfc3339(task.due_at),
        "routing_problem": problem,
        "summary": summary,
        "next_action": problem
        or f"an assignee decides in their inbox (GET /api/v1/inbox, task {task.id})",
        # nobody can act: the table's Reassign (filling an empty role is words only)
        "action": advice.render(advice.TABLE["waiting.no_one_can_act"].operation, task_id=task.id)
        if problem
        else None,
    }
