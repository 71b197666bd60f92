"""/api/v1/links (acting on a task from an e-mail's link, after logging in) and /api/v1/emails
(what was sent to whom, and what failed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import database, queue, state_of
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.people import email, inbox, link_actions, links
from grantflow.people.decisions import Action
from grantflow.queue.interface import Queue
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=API_PREFIX, tags=["email"])

Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]


class LinkActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Comment | None = Field(None, description="justification or reason")
    action: Action | None = Field(
        None,
        description="only for a link that opens a task or an escalation: submit, skip, fail "
        "or retry (an approve or reject link carries its action)",
    )
    data: dict[str, Any] | None = Field(None, description="Submit: the task form's data")


class EmailsOut(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = None


def _link_view(found: links.Resolved) -> dict[str, Any]:
    return {
        "action": found.action,
        "task_id": found.task.id,
        "stage": found.stage + 1,
        "expires_at": found.link.expires_at,
        "used_at": found.link.used_at,
    }


@router.get("/links/{token}")
def open_link(
    token: str,
    request: Request,
    actor: Actor = Depends(Require(Permission.WORKFLOW_TASK)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """What an e-mail's link offers: the task, and the action a POST to the same URL takes.
    Opening it changes nothing (mail scanners follow links). In a browser, the same token
    opens the console page `/links/<token>`."""
    with db.transaction() as session:
        opened = link_actions.open_link(session, state_of(request).settings, actor, token)
        found = opened.found
        if opened.opens:
            choices = ", ".join(opened.choices())
            next_action = f"POST this URL with {{'action': one of {choices}}}"
        else:
            next_action = f"POST this URL to {found.action} (optionally with a comment)"
        return {
            "link": _link_view(found),
            "task": inbox.task_view(session, found.task, opened.user),
            "next_action": next_action,
            "task_url": f"{API_PREFIX}/tasks/{found.task.id}",
        }


@router.post("/links/{token}")
def use_link(
    token: str,
    request: Request,
    body: LinkActionIn | None = None,
    actor: Actor = Depends(Require(Permission.WORKFLOW_TASK)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """Take the link's action (approve or reject; for a task link, the action given) as the
    logged-in addressee; the link is used up in the same transaction as the decision."""
    body = body or LinkActionIn()
    with db.transaction() as session:
        opened, task, action = link_actions.use_link(
            session,
            state_of(request).settings,
            actor,
            q,
            token,
            action=body.action,
            comment=body.comment,
            data=body.data,
        )
        return {
            "link": {**_link_view(opened.found), "action": str(action)},
            "task": inbox.task_view(session, task, opened.user),
        }


@router.get("/emails", response_model=EmailsOut)
def list_emails(
    status: str | None = Query(None, pattern="^(queued|sending|sent|failed|skipped)$"),
    to: str | None = Query(None, max_length=320, description="recipient address"),
    task_id: str | None = Query(None, max_length=36),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> EmailsOut:
    """E-mail Grantflow queued, sent, failed or skipped, with each one's last error."""
    with db.transaction() as session:
        page = email.list_emails(
            session, status=status, to=to, task_id=task_id, cursor=cursor, limit=limit
        )
        return EmailsOut(
            items=[email.email_view(m) for m in page.items], next_cursor=page.next_cursor
        )


@router.post("/emails/{email_id}/resend")
def resend_email(
    email_id: str,
    actor: Actor = Depends(Require(Permission.USER_ADMIN)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Queue a failed or skipped e-mail again, once SMTP is fixed or configured."""
    with db.transaction() as session:
        return email.email_view(email.resend(session, actor, email_id))
