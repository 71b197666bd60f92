"""Acting through an e-mail's link, for the API (`/api/v1/links/<token>`) and the console
(`/links/<token>`) alike: the checks — a link Grantflow issued (else 404, nothing more said),
addressed to the caller (403), unused, unexpired and still current (410) — and the decision it
takes, recorded `via: email_link` in the same transaction that uses the link up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.config import Settings
from grantflow.errors import NotFound, PermissionDenied, ValidationError
from grantflow.people import links
from grantflow.people.decisions import ALLOWED, Action, decide
from grantflow.people.models import Task
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow

MAX_TOKEN = 200


@dataclass
class Opened:
    """A usable link and the signed-in person it was sent to."""

    found: links.Resolved
    user: User

    @property
    def opens(self) -> bool:
        """True for a task or escalation link (it opens the task; the action is chosen
        then); False for an approve or reject link (it carries its action)."""
        return self.found.action == links.OPEN

    def choices(self) -> list[str]:
        return sorted(ALLOWED[self.found.task.kind])


def open_link(
    session: Session, settings: Settings, actor: Actor, token: str, *, lock: bool = False
) -> Opened:
    """The link `token` names, checked for `actor`; opening it changes nothing (mail scanners
    follow links)."""
    if len(token) > MAX_TOKEN:
        raise NotFound(links.NOT_VALID, code="link_not_valid")
    found = links.resolve(session, links.keys_for(settings), token, lock=lock)
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None or user.id != found.link.user_id:
        raise PermissionDenied(
            "this link was sent to someone else",
            next_action="sign in as the person the e-mail was addressed to",
            code="link_not_yours",
        )
    links.check_usable(session, found, utcnow())
    return Opened(found, user)


def _action(opened: Opened, requested: Action | None) -> Action:
    found = opened.found
    if opened.opens:
        if requested is None:
            choices = ", ".join(opened.choices())
            raise ValidationError(
                f"action: this link opens a {found.task.kind}; say what to do ({choices})",
                details=[{"field": "action", "message": f"required: one of {choices}"}],
            )
        return requested
    action = Action(found.action)
    if requested is not None and requested != action:
        raise ValidationError(
            f"action: this link can only {action}; use the e-mail's other link or your inbox",
            details=[{"field": "action", "message": f"this link is for {action}"}],
        )
    return action


def use_link(
    session: Session,
    settings: Settings,
    actor: Actor,
    queue: Queue,
    token: str,
    *,
    action: Action | None = None,
    comment: str | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[Opened, Task, Action]:
    """Take the link's action (approve or reject; for a task link, `action`) as the signed-in
    addressee, through the same checks as the inbox; the link (and the other links of the same
    e-mail) are used up with the decision."""
    opened = open_link(session, settings, actor, token, lock=True)
    chosen = _action(opened, action)
    now = utcnow()
    task = decide(
        session,
        actor,
        queue,
        opened.found.task.id,
        chosen,
        comment=comment,
        data=data,
        via=links.EMAIL_LINK,
    )
    links.use(session, opened.found, now)
    return opened, task, chosen
