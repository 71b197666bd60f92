"""/api/v1/links (acting on a task from an e-mail's link, after logging in) and /api/v1/emails
(what was sent to whom, and what failed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import app_state, database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.errors import NotFound, PermissionDenied, ValidationError
from grantflow.people import email, inbox, links
from grantflow.people.decisions import ALLOWED, Action, decide
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=API_PREFIX, tags=["email"])

Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]
_MAX_TOKEN = 200


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


def _resolve(
    request: Request, session: Session, actor: Actor, token: str, *, lock: bool
) -> tuple[links.Resolved, User]:
    """The link, checked: issued by us (404, nothing more said), addressed to the caller (403),
    unused, unexpired and still current (410)."""
    if len(token) > _MAX_TOKEN:
        raise NotFound(links.NOT_VALID, code="link_not_valid")
    keys = links.keys_for(app_state(request).settings)
    found = links.resolve(session, keys, token, lock=lock)
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None or user.id != found.link.user_id:
        raise PermissionDenied(
            "this link was sent to someone else",
            next_action="sign in as the person the e-mail was addressed to",
            code="link_not_yours",
        )
    links.check_usable(session, found, utcnow())
    return found, user


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
    Opening it changes nothing (mail scanners follow links)."""
    with db.transaction() as session:
        found, user = _resolve(request, session, actor, token, lock=False)
        task_id = found.task.id
        if found.action == links.OPEN:
            choices = ", ".join(sorted(ALLOWED[found.task.kind]))
            next_action = f"POST this URL with {{'action': one of {choices}}}"
        else:
            next_action = f"POST this URL to {found.action} (optionally with a comment)"
        return {
            "link": _link_view(found),
            "task": inbox.task_view(session, found.task, user),
            "next_action": next_action,
            "task_url": f"{API_PREFIX}/tasks/{task_id}",
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
        found, _user = _resolve(request, session, actor, token, lock=True)
        if found.action == links.OPEN:
            if body.action is None:
                choices = ", ".join(sorted(ALLOWED[found.task.kind]))
                raise ValidationError(
                    f"action: this link opens a {found.task.kind}; say what to do ({choices})",
                    details=[{"field": "action", "message": f"required: one of {choices}"}],
                )
            action = body.action
        else:
            action = Action(found.action)
            if body.action is not None and body.action != action:
                raise ValidationError(
                    f"action: this link can only {action}; use the e-mail's other link or "
                    "your inbox",
                    details=[{"field": "action", "message": f"this link is for {action}"}],
                )
        now = utcnow()
        task = decide(
            session,
            actor,
            q,
            found.task.id,
            action,
            comment=body.comment,
            data=body.data,
            via=links.EMAIL_LINK,
        )
        links.use(session, found, now)
        viewer = session.get(User, actor.user_id) if actor.user_id else None
        return {
            "link": {**_link_view(found), "action": str(action)},
            "task": inbox.task_view(session, task, viewer),
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
