"""/: the home page — what needs my attention."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.state import console_state
from grantflow.console.templating import render
from grantflow.engine.models import Run
from grantflow.people import inbox

router = APIRouter(include_in_schema=False)

_COUNT_CAP = 100  # "100+" beyond this: a count is a prompt, not a report


@router.get("/")
def home(request: Request, actor: Actor = Depends(Page(Permission.SELF))) -> Response:
    """Counts of what waits on me and of failed runs, each a link to the list."""
    counts: dict[str, int | None] = {"waiting": None, "failed_runs": None}
    with console_state(request).database.transaction() as session:
        user = session.get(User, actor.user_id)
        if user is not None:
            page = inbox.inbox(session, user, limit=_COUNT_CAP)
            counts["waiting"] = len(page.items)
        if Permission.RUN_READ in actor.permissions:
            counts["failed_runs"] = session.execute(
                select(func.count()).select_from(
                    select(Run.id).where(Run.status == "failed").limit(_COUNT_CAP).subquery()
                )
            ).scalar_one()
    return render(request, "home.html", {"counts": counts, "cap": _COUNT_CAP})
