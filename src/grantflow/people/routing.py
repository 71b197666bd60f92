"""Who may act on a task: resolving named approvers and roles to active users, and telling
exactly why a task cannot be routed (a missing or deactivated person, an empty role)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.auth.models import User, UserRole
from grantflow.auth.permissions import Permission, Role, permissions_for
from grantflow.people.models import Task, TaskAssignee, TaskDecision

T = TypeVar("T")
_MEMO = "people.routing.memo"


@contextlib.contextmanager
def remembered(session: Session, tasks: Sequence[Task] = ()) -> Iterator[None]:
    """Within: a task's assignees and decisions, a role's members and a workflow, are read
    once — a page of tasks asked for them again for every view of every task (13 statements
    a task). For a page's reads only: what is written within is not seen. `tasks`: the
    page's, whose assignees and decisions are read for all of them in two statements."""
    memo: dict[Any, Any] = {}
    outer = session.info.get(_MEMO)
    session.info[_MEMO] = memo
    try:
        by_id = {task.id: task for task in tasks}
        if by_id:
            for task in tasks:
                memo["assignees", task.id, task.current_stage] = []
                memo["decisions", task.id] = []
            found = session.execute(
                select(TaskAssignee)
                .where(TaskAssignee.task_id.in_(by_id), TaskAssignee.active.is_(True))
                .order_by(TaskAssignee.id)
            ).scalars()
            for row in found:
                if row.stage == by_id[row.task_id].current_stage:
                    memo["assignees", row.task_id, row.stage].append(row)
            decided = session.execute(
                select(TaskDecision)
                .where(TaskDecision.task_id.in_(by_id))
                .order_by(TaskDecision.id)
            ).scalars()
            for decision in decided:
                memo["decisions", decision.task_id].append(decision)
        yield
    finally:
        if outer is None:
            session.info.pop(_MEMO, None)
        else:
            session.info[_MEMO] = outer


def memoized(session: Session, key: tuple[Any, ...], read: Callable[[], T]) -> T:
    """`read()`, once per `key` while `remembered` holds (else every time)."""
    memo = session.info.get(_MEMO)
    if memo is None:
        return read()
    if key not in memo:
        memo[key] = read()
    found: T = memo[key]
    return found


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


def permission_for(kind: str) -> Permission:
    """What acting on a task of `kind` needs: approvals and human tasks are decisions
    (workflow:task); an escalated failure is a run operation, retry / skip / fail
    (run:operate), so it goes to operators."""
    return Permission.RUN_OPERATE if kind == "escalation" else Permission.WORKFLOW_TASK


def kinds_for(user: User) -> list[str]:
    """The kinds of task `user` may act on (and so sees in their inbox)."""
    held = permissions_for(user.roles)
    return [k for k in ("approval", "task", "escalation") if permission_for(k) in held]


def resolve(
    session: Session,
    users: list[str],
    roles: list[str],
    permission: Permission = Permission.WORKFLOW_TASK,
) -> Routed:
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
        elif permission not in permissions_for(user.roles):
            routed.problems.append(f"user {user.email} lacks the permission {permission}")
        elif user.id not in routed.user_ids:
            routed.user_ids.append(user.id)
    for role in roles:
        if role not in routed.roles:
            routed.roles.append(role)
            if not role_members(session, role, permission):
                routed.problems.append(f"no active user has the role {role}")
    return routed


def role_members(
    session: Session, role: str, permission: Permission = Permission.WORKFLOW_TASK
) -> list[User]:
    """Active users of a role who hold `permission` (to act on tasks of a kind)."""
    if role not in {r.value for r in Role}:
        return []

    def read() -> list[User]:
        rows = session.execute(
            select(User)
            .join(UserRole, UserRole.user_id == User.id)
            .where(UserRole.role == role, User.active.is_(True))
            .order_by(User.email)
        ).scalars()
        return [u for u in rows if permission in permissions_for(u.roles)]

    return memoized(session, ("role_members", role, permission), read)


def assignees(session: Session, task: Task, stage: int | None = None) -> list[TaskAssignee]:
    stage = task.current_stage if stage is None else stage
    query = (
        select(TaskAssignee)
        .where(
            TaskAssignee.task_id == task.id,
            TaskAssignee.stage == stage,
            TaskAssignee.active.is_(True),
        )
        .order_by(TaskAssignee.id)
    )
    return memoized(
        session, ("assignees", task.id, stage), lambda: list(session.execute(query).scalars())
    )


def is_assignee(session: Session, task: Task, user: User) -> bool:
    for row in assignees(session, task):
        if row.user_id == user.id or (row.role is not None and row.role in user.roles):
            return True
    return False


def separation_problem(task: Task, user: User) -> str | None:
    """Why `user` may not approve `task` whatever its assignment (separation of duties)."""
    if task.kind != "approval":
        return None
    mine = user.email.lower()
    if task.requester and task.requester.lower() == mine:
        return f"{user.email} requested this and cannot approve it"
    if task.subject_email and task.subject_email.lower() == mine:
        return f"the request is about {user.email}'s own access"
    return None


def people_to_notify(session: Session, task: Task) -> list[User]:
    """Every active user who can act now: named users, then members of named roles — not
    the requester nor the person the request is about (they may not approve it)."""
    permission = permission_for(task.kind)
    found: dict[str, User] = {}
    for row in assignees(session, task):
        if row.user_id:
            user = session.get(User, row.user_id)
            if user is not None and user.active and permission in permissions_for(user.roles):
                found.setdefault(user.id, user)
        elif row.role:
            for user in role_members(session, row.role, permission):
                found.setdefault(user.id, user)
    return [u for u in found.values() if separation_problem(task, u) is None]


def current_problem(session: Session, task: Task) -> str | None:
    """Why no one can act on the task right now (checked live: people get deactivated
    after a task was created), with what to do; None when someone can."""
    rows = assignees(session, task)
    if people_to_notify(session, task):
        return None
    permission = permission_for(task.kind)
    named = []
    empty_roles = []
    for row in rows:
        if row.user_id:
            user = session.get(User, row.user_id)
            if user is None:
                named.append(f"user {row.user_id} is gone")
            elif not user.active:
                named.append(f"user {user.email} is deactivated")
            elif permission not in permissions_for(user.roles):
                named.append(f"user {user.email} lacks the permission {permission}")
            elif (sod := separation_problem(task, user)) is not None:
                named.append(f"separation of duties: {sod}")
        elif row.role:
            members = role_members(session, row.role, permission)
            if not members:
                named.append(f"no active user has the role {row.role}")
                empty_roles.append(row.role)
            else:
                named.append(
                    f"the only members of role {row.role} ("
                    + ", ".join(u.email for u in members)
                    + ") may not approve their own request"
                )
    detail = "; ".join(named) or task.routing_problem or "no approver is assigned"
    fix = (
        "Reassign it to an active user or role (anyone with task:reassign: "
        f"POST /api/v1/tasks/{task.id}/reassign, or `grantflow inbox reassign {task.id} --to "
        "EMAIL`)"
    )
    if empty_roles:  # or fill the role: whoever manages users can
        roles = ", ".join(empty_roles)
        fix += (
            f", or an admin (user:admin) gives the role {roles} to an active user "
            f"(PATCH /api/v1/users/{{id}} with its roles, or `grantflow users set --email EMAIL "
            f"--role {empty_roles[0]}`)"
        )
    return f"no one can act on this {task.kind}: {detail}. {fix}."
