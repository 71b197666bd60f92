"""Who may act on a task: resolving named approvers and roles to active users, and telling
exactly why a task cannot be routed (a missing or deactivated person, an empty role)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.auth.models import User, UserRole
from grantflow.auth.permissions import Permission, Role, permissions_for
from grantflow.people.models import Task, TaskAssignee


@dataclass
class Routed:
    user_ids: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def find_user(session: Session, key: str) -> User | None:
    key = key.strip()
    return (
        session.get(User, key)
        or session.execute(select(User).where(User.email == key.lower())).scalar_one_or_none()
    )


def resolve(session: Session, users: list[str], roles: list[str]) -> Routed:
    """Named users (emails or ids) and roles, with a problem per one that cannot act."""
    routed = Routed()
    for key in users:
        if not key or not key.strip():
            routed.problems.append(
                "an approver rendered empty (e.g. an identity without a manager)"
            )
            continue
        user = find_user(session, key)
        if user is None:
            routed.problems.append(f"user {key!r} does not exist")
        elif not user.active:
            routed.problems.append(f"user {user.email} is deactivated")
        elif Permission.WORKFLOW_TASK not in permissions_for(user.roles):
            routed.problems.append(f"user {user.email} lacks the permission workflow:task")
        elif user.id not in routed.user_ids:
            routed.user_ids.append(user.id)
    for role in roles:
        if role not in routed.roles:
            routed.roles.append(role)
            if not role_members(session, role):
                routed.problems.append(f"no active user has the role {role}")
    return routed


def role_members(session: Session, role: str) -> list[User]:
    """Active users of a role who may act on tasks."""
    if role not in {r.value for r in Role}:
        return []
    rows = session.execute(
        select(User)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role == role, User.active.is_(True))
        .order_by(User.email)
    ).scalars()
    return [u for u in rows if Permission.WORKFLOW_TASK in permissions_for(u.roles)]


def assignees(session: Session, task: Task, stage: int | None = None) -> list[TaskAssignee]:
    stage = task.current_stage if stage is None else stage
    return list(
        session.execute(
            select(TaskAssignee)
            .where(
                TaskAssignee.task_id == task.id,
                TaskAssignee.stage == stage,
                TaskAssignee.active.is_(True),
            )
            .order_by(TaskAssignee.id)
        ).scalars()
    )


def is_assignee(session: Session, task: Task, user: User) -> bool:
    for row in assignees(session, task):
        if row.user_id == user.id or (row.role is not None and row.role in user.roles):
            return True
    return False


def people_to_notify(session: Session, task: Task) -> list[User]:
    """Every active user who can act now: named users, then members of named roles."""
    found: dict[str, User] = {}
    for row in assignees(session, task):
        if row.user_id:
            user = session.get(User, row.user_id)
            if user is not None and user.active:
                found.setdefault(user.id, user)
        elif row.role:
            for user in role_members(session, row.role):
                found.setdefault(user.id, user)
    return list(found.values())


def current_problem(session: Session, task: Task) -> str | None:
    """Why no one can act on the task right now (checked live: people get deactivated
    after a task was created), with what to do; None when someone can."""
    rows = assignees(session, task)
    if people_to_notify(session, task):
        return None
    named = []
    for row in rows:
        if row.user_id:
            user = session.get(User, row.user_id)
            named.append(
                f"user {user.email} is deactivated" if user else f"user {row.user_id} is gone"
            )
        elif row.role:
            named.append(f"no active user has the role {row.role}")
    detail = "; ".join(named) or task.routing_problem or "no approver is assigned"
    return f"no one can act on this {task.kind}: {detail}. Reassign it to an active user or role."
