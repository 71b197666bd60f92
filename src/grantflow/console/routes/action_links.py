"""/links/<token>: where an e-mail's approve, reject or task link lands in a browser.

Signed out, the page guard sends the person to /login?next=/links/<token> and back here after
signing in. The link is checked as the API checks it (`people.link_actions`: issued by us,
addressed to the signed-in person, unused, unexpired, still current); opening it changes
nothing (mail scanners follow links). An approve or reject link shows the task with one button
that takes the link's decision (via `email_link`, using the link up); a task or escalation
link opens the task's inbox page, where its form is. workflow:task, as /api/v1/links/<token>.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grantflow.api.state import state_of
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.actions import refusals_audited
from grantflow.console.guard import Page
from grantflow.console.presenters import tasks
from grantflow.console.routes.inbox import DONE
from grantflow.console.state import console_state
from grantflow.console.templating import redirect, render
from grantflow.errors import ValidationError
from grantflow.people import link_actions
from grantflow.people.decisions import Action

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    actor: Actor,
    token: str,
    error: ValidationError | None = None,
    comment: str = "",
) -> Response:
    state = console_state(request)
    with (
        refusals_audited(state.database, actor, request.url.path, request.method),
        state.database.transaction() as session,
    ):
        opened = link_actions.open_link(session, state.settings, actor, token)
        if opened.opens:
            return redirect(request, f"/inbox/{opened.found.task.id}")
        card = tasks.card(session, opened.found.task, opened.user, lambda p: p in actor.permissions)
        action = Action(opened.found.action)
    context = {
        "card": card,
        "token": token,
        "action": str(action),
        "label": tasks.LABELS[str(action)],
        "error": error,
        "comment": comment,
        "stage": opened.found.stage + 1,
        "expires_at": opened.found.link.expires_at,
    }
    status = error.http_status if error is not None else 200
    return render(request, "inbox/link.html", context, status_code=status)


@router.get("/links/{token}")
def open_link(
    token: str, request: Request, actor: Actor = Depends(Page(Permission.WORKFLOW_TASK))
) -> Response:
    """The task the link is about and the one decision it takes; changes nothing."""
    return _page(request, actor, token)


@router.post("/links/{token}")
async def use_link(
    token: str,
    request: Request,
    comment: str = Form("", max_length=5000),
    actor: Actor = Depends(Page(Permission.WORKFLOW_TASK)),
) -> Response:
    """Take the link's decision (approve or reject) with an optional comment; the link is used
    up in the same transaction."""
    state = console_state(request)
    queue = state_of(request).queue

    def apply() -> tuple[str, str, str] | ValidationError:
        with refusals_audited(state.database, actor, request.url.path, "POST"):
            try:
                with state.database.transaction() as session:
                    _opened, task, action = link_actions.use_link(
                        session, state.settings, actor, queue, token, comment=comment
                    )
                    return task.id, task.title, str(action)
            except ValidationError as error:  # e.g. a justification is required
                return error

    outcome = await run_in_threadpool(apply)
    if isinstance(outcome, ValidationError):
        return await run_in_threadpool(_page, request, actor, token, outcome, comment)
    task_id, title, action = outcome
    return redirect(request, f"/inbox/{task_id}", message=f"{DONE[Action(action)]}: {title}.")
