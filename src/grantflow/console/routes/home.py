"""/: the home page — what needs my attention, each item a link to the object to fix; only
the sections my permissions let me see (`presenters.attention`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.presenters import attention
from grantflow.console.state import console_state
from grantflow.console.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/")
def home(request: Request, actor: Actor = Depends(Page(Permission.SELF))) -> Response:
    """Waiting on me, failed and stuck runs, connections, overdue jobs, incidents, controls."""
    with console_state(request).database.transaction() as session:
        user = session.get(User, actor.user_id) if actor.user_id else None
        sections = attention.sections(session, user, lambda p: p in actor.permissions)
    return render(request, "home.html", {"sections": sections, "shown": attention.SHOWN})
