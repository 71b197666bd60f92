"""/api/v1/inbox and /api/v1/tasks: approvals and human tasks waiting on people."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.errors import PermissionDenied
from grantflow.people import decisions, inbox
from grantflow.people.decisions import Action
from grantflow.queue.interface import Queue
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=API_PREFIX, tags=["inbox"])

Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Comment | None = Field(None, description="justification or reason")
    data: dict[str, Any] | None = Field(None, description="Submit: the form's data")


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list, max_length=50, description="emails or ids")
    roles: list[str] = Field(default_factory=list, max_length=10)
    remove: list[str] | None = Field(
        None, description="only these assignees are replaced (default: all of them)"
    )
    comment: Comment | None = None


class InboxOut(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = None


def _viewer(session: Session, actor: Actor) -> User:
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None:
        raise PermissionDenied("the inbox belongs to a user; use a user's API token")
    return user


@router.get("/inbox", response_model=InboxOut)
def my_inbox(
    kind: str | None = Query(None, pattern="^(approval|task|escalation)$"),
    workflow_id: str | None = Query(None, max_length=36),
    overdue: bool | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
) -> InboxOut:
    """Pending approvals, tasks (workflow:task) and escalated failures (run:operate) for me
    and for my roles, that I may act on (none at all without either permission)."""
    with db.transaction() as session:
        user = _viewer(session, actor)
        page = inbox.inbox(
            session,
            user,
            kind=kind,
            workflow_id=workflow_id,
            overdue=overdue,
            cursor=cursor,
            limit=limit,
        )
        return InboxOut(
            items=inbox.task_views(session, page.items, user),
            next_cursor=page.next_cursor,
        )


@router.get("/tasks/{task_id}")
def get_task(
    task_id: str,
    actor: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    with db.transaction() as session:
        viewer = session.get(User, actor.user_id) if actor.user_id else None
        return inbox.task_view(session, decisions.get_task(session, task_id), viewer)


@router.post("/tasks/{task_id}/reassign")
def reassign(
    task_id: str,
    body: ReassignIn,
    actor: Actor = Depends(Require(Permission.TASK_REASSIGN)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Route a pending task to other users or roles (e.g. its approver left); audited."""
    with db.transaction() as session:
        task = decisions.reassign(
            session,
            actor,
            task_id,
            users=body.users,
            roles=body.roles,
            remove=body.remove,
            comment=body.comment,
        )
        return inbox.task_view(session, task)


@router.post("/tasks/{task_id}/{action}")
def act(
    request: Request,
    task_id: str,
    action: Action,
    body: DecisionIn | None = None,
    actor: Actor = Depends(Require(Permission.SELF)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """approve | reject (approvals), submit | skip | fail (tasks): workflow:task;
    retry | skip | fail (escalated failures): run:operate. Only an assignee may act; never
    on their own request."""
    body = body or DecisionIn()
    # the channel the decision came through, as the task's record shows it (not a right)
    via = "cli" if request.headers.get("user-agent", "").startswith("grantflow-cli/") else "api"
    with db.transaction() as session:
        task = decisions.decide(
            session, actor, q, task_id, action, comment=body.comment, data=body.data, via=via
        )
        viewer = session.get(User, actor.user_id) if actor.user_id else None
        return inbox.task_view(session, task, viewer)
