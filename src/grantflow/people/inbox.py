"""The inbox: pending approvals and tasks a user can act on — assigned to them or to one of
their roles — with filters, and a task's full detail."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from grantflow.auth.models import User
from grantflow.definitions.models import Workflow
from grantflow.people import routing, tasks
from grantflow.people.models import EmailMessage, Task, TaskAssignee, TaskDecision
from grantflow.people.tasks import TaskStatus
from grantflow.store.base import utcnow
from grantflow.store.pagination import Page, decode_cursor, page_of


def inbox(
    session: Session,
    user: User,
    *,
    kind: str | None = None,
    workflow_id: str | None = None,
    overdue: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Task]:
    mine = (
        select(TaskAssignee.task_id)
        .join(Task, Task.id == TaskAssignee.task_id)
        .where(
            TaskAssignee.active.is_(True),
            TaskAssignee.stage == Task.current_stage,
            or_(TaskAssignee.user_id == user.id, TaskAssignee.role.in_(user.roles or ["-"])),
        )
    )
    # only the kinds the user may act on (approvals and tasks: workflow:task; escalated
    # failures: run:operate), and never a request they may not approve themselves
    stmt = select(Task).where(
        Task.status == TaskStatus.PENDING,
        Task.id.in_(mine),
        Task.kind.in_(routing.kinds_for(user) or ["-"]),
        or_(
            Task.kind != "approval",
            and_(
                func.coalesce(func.lower(Task.requester), "") != user.email.lower(),
                func.coalesce(func.lower(Task.subject_email), "") != user.email.lower(),
            ),
        ),
    )
    # nor what they already decided (an approver done with their part of an `all` stage)
    decided = select(TaskDecision.id).where(
        TaskDecision.task_id == Task.id,
        TaskDecision.stage == Task.current_stage,
        TaskDecision.user_id == user.id,
    )
    stmt = stmt.where(~decided.exists())
    if kind:
        stmt = stmt.where(Task.kind == kind)
    if workflow_id:
        stmt = stmt.where(Task.workflow_id == workflow_id)
    now = utcnow()
    if overdue is True:
        stmt = stmt.where(Task.due_at.is_not(None), Task.due_at < now)
    elif overdue is False:
        stmt = stmt.where(or_(Task.due_at.is_(None), Task.due_at >= now))
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Task.id > after)
    rows = session.execute(stmt.order_by(Task.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda t: t.id)


def task_views(session: Session, page: Sequence[Task], viewer: User) -> list[dict[str, Any]]:
    """`task_view` of each task of a page, who may act on them read once for the page."""
    with routing.remembered(session, page):
        remember_emails(session, page)
        return [task_view(session, task, viewer) for task in page]


def remember_emails(session: Session, page: Sequence[Task]) -> None:
    """The page's e-mails in one statement (read a task at a time, they were a statement per
    task of the page). Within `routing.remembered` only."""
    by_task: dict[str, list[EmailMessage]] = {task.id: [] for task in page}
    if not by_task:
        return
    for message in session.execute(
        select(EmailMessage)
        .where(EmailMessage.task_id.in_(by_task))
        .order_by(EmailMessage.created_at, EmailMessage.id)
    ).scalars():
        by_task[str(message.task_id)].append(message)
    for task_id, messages in by_task.items():
        routing.memoized(session, ("emails", task_id), functools.partial(list, messages))


def _emails(session: Session, task: Task) -> list[EmailMessage]:
    return routing.memoized(
        session,
        ("emails", task.id),
        lambda: list(
            session.execute(
                select(EmailMessage)
                .where(EmailMessage.task_id == task.id)
                .order_by(EmailMessage.created_at, EmailMessage.id)
            ).scalars()
        ),
    )


def task_view(session: Session, task: Task, viewer: User | None = None) -> dict[str, Any]:
    workflow = (
        routing.memoized(
            session,  # (held here: the session's identity map would let it go between views)
            ("workflow", task.workflow_id),
            lambda: session.get(Workflow, task.workflow_id),
        )
        if task.workflow_id
        else None
    )
    described = tasks.describe(session, task) if task.status == TaskStatus.PENDING else {}
    now = utcnow()
    return {
        "id": task.id,
        "kind": task.kind,
        "status": task.status,
        "title": task.title,
        "instructions": task.instructions,
        "run_id": task.run_id,
        "step_id": task.step_id,
        "workflow": {"id": task.workflow_id, "name": workflow.name if workflow else None},
        "requester": task.requester,
        "subject_email": task.subject_email,
        "stage": task.current_stage + 1,
        "stages": task.stages,
        "assignees": described.get("assignees") or _assignee_names(session, task),
        "can_act": described.get("can_act", []),
        "you_can_act": bool(
            viewer is not None
            and task.status == TaskStatus.PENDING
            and task.kind in routing.kinds_for(viewer)
            and routing.is_assignee(session, task, viewer)
            and routing.separation_problem(task, viewer) is None
            and not any(
                d.user_id == viewer.id and d.stage == task.current_stage
                for d in tasks.decisions(session, task)
            )
        ),
        "routing_problem": described.get("routing_problem"),
        "require_justification": task.require_justification,
        "form": task.form,
        "failure": task.failure,
        "output": task.output,
        "due_at": task.due_at,
        "overdue": bool(task.due_at and task.status == TaskStatus.PENDING and task.due_at < now),
        "escalated_at": task.escalated_at,
        "decided_by": task.decided_by,
        "decided_at": task.decided_at,
        "comment": task.comment,
        "decisions": [
            {
                "by": d.actor,
                "decision": d.decision,
                "comment": d.comment,
                "stage": d.stage + 1,
                "via": d.via,
                "at": d.created_at,
            }
            for d in tasks.decisions(session, task)
        ],
        "emails": [
            {
                "to": m.to_address,
                "subject": m.subject,
                "status": m.status,
                "attempts": m.attempts,
                "last_error": m.last_error,
                "sent_at": m.sent_at,
            }
            for m in _emails(session, task)
        ],
        "created_at": task.created_at,
    }


def _assignee_names(session: Session, task: Task) -> list[str]:
    """Whom a (closed) task was assigned to: emails, and roles as `role <name>`."""
    names = []
    for row in routing.assignees(session, task):
        if row.user_id:
            user = session.get(User, row.user_id)
            names.append(user.email if user is not None else row.user_id)
        elif row.role:
            names.append(f"role {row.role}")
    return names
