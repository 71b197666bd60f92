"""/inbox: approvals, tasks and escalated failures waiting on me; /inbox/<task>: one task, with
its decisions (Approve / Reject with a justification, a task's form with Submit / Skip / Fail,
an escalation's Retry / Skip / Fail) and Reassign for those allowed.

Each action is a form POST calling what the API's `/api/v1/tasks/...` routes call
(`people.decisions.decide`, `people.decisions.reassign`) with the signed-in user, under the
same permissions: deciding is `self` at the door and the service checks the kind's permission
(workflow:task, or run:operate for an escalation), that the user is an assignee and not the
requester; reassigning is task:reassign. A refused decision shows the task again with the
error in words and each field's problem next to its input.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from grantflow.api.state import state_of
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission, Role
from grantflow.console import schema_form
from grantflow.console.actions import refusals_audited
from grantflow.console.guard import Page
from grantflow.console.presenters import tasks
from grantflow.console.presenters.tasks import Refusal
from grantflow.console.state import console_state
from grantflow.console.templating import redirect, render, safe_next
from grantflow.errors import Conflict, ValidationError
from grantflow.people import decisions, inbox, routing
from grantflow.people.decisions import Action
from grantflow.people.tasks import TaskKind, TaskStatus

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
KINDS = ("approval", "task", "escalation")
DONE = {
    Action.APPROVE: "Approved",
    Action.REJECT: "Rejected",
    Action.SUBMIT: "Submitted",
    Action.SKIP: "Skipped",
    Action.FAIL: "Failed",
    Action.RETRY: "Retried",
}
# refusals shown on the task itself (the rest is an error page)
SHOWN_ON_TASK = (ValidationError, Conflict)


def _can(actor: Actor) -> Any:
    return lambda permission: permission in actor.permissions


def _me(session: Any, actor: Actor) -> User | None:
    return session.get(User, actor.user_id) if actor.user_id else None


@router.get("/inbox")
def my_inbox(
    request: Request,
    kind: str = Query("", max_length=20),
    overdue: str = Query("", max_length=5),
    cursor: str = Query("", max_length=500),
    actor: Actor = Depends(Page(Permission.SELF)),
) -> Response:
    """What waits on me or my roles that I may act on, each with its actions."""
    chosen = kind if kind in KINDS else None
    late = {"true": True, "false": False}.get(overdue)
    with console_state(request).database.transaction() as session:
        user = _me(session, actor)
        cards: list[tasks.TaskCard] = []
        next_cursor = None
        kinds: list[str] = []
        if user is not None:
            page = inbox.inbox(
                session, user, kind=chosen, overdue=late, cursor=cursor or None, limit=PAGE_SIZE
            )
            with routing.remembered(session, page.items):  # (one page's reads)
                inbox.remember_emails(session, page.items)
                cards = [tasks.card(session, t, user, _can(actor)) for t in page.items]
            next_cursor = page.next_cursor
            kinds = routing.kinds_for(user)
    context = {
        "cards": cards,
        "kind": chosen or "",
        "overdue": overdue if late is not None else "",
        "next_cursor": next_cursor,
        "kinds": kinds,
        "first_page": not cursor,
        "roles": [r.value for r in Role],
    }
    return render(request, "inbox/list.html", context)


def _task_page(
    request: Request, actor: Actor, task_id: str, refusal: Refusal | None = None
) -> Response:
    with console_state(request).database.transaction() as session:
        task = decisions.get_task(session, task_id)
        card = tasks.card(session, task, _me(session, actor), _can(actor), refusal)
    status = refusal.error.http_status if refusal is not None else 200
    context = {"card": card, "roles": [r.value for r in Role]}
    return render(request, "inbox/task.html", context, status_code=status)


@router.get("/inbox/{task_id}")
def task_page(
    task_id: str, request: Request, actor: Actor = Depends(Page(Permission.RUN_READ))
) -> Response:
    """One task: what is asked, of whom, its form and decisions (run:read, as the API's
    GET /api/v1/tasks/{id})."""
    return _task_page(request, actor, task_id)


def _words(form: FormData, name: str) -> list[str]:
    """Emails or role names typed with commas, spaces or new lines between them."""
    text = " ".join(v for v in form.getlist(name) if isinstance(v, str))
    return [w for w in text.replace(",", " ").split() if w][:50]


@router.post("/inbox/{task_id}/reassign")
async def reassign(
    task_id: str, request: Request, actor: Actor = Depends(Page(Permission.TASK_REASSIGN))
) -> Response:
    """Route a pending task to other users or roles (replacing its assignees); audited."""
    form = await request.form()
    users, roles = _words(form, "users"), _words(form, "roles")
    comment = str(form.get("comment") or "").strip()[:5000] or None
    database = console_state(request).database

    def apply() -> str:
        with (
            refusals_audited(database, actor, request.url.path, "POST"),
            database.transaction() as session,
        ):
            task = decisions.reassign(
                session, actor, task_id, users=users, roles=roles, comment=comment
            )
            return task.title

    try:
        title = await run_in_threadpool(apply)
    except SHOWN_ON_TASK as error:
        refusal = Refusal(error, form="reassign", comment=comment or "")
        return await run_in_threadpool(_task_page, request, actor, task_id, refusal)
    to = ", ".join([*users, *(f"role {r}" for r in roles)])
    return redirect(request, f"/inbox/{task_id}", message=f"Reassigned to {to}: {title}.")


@router.post("/inbox/{task_id}/{action}")
async def act(
    task_id: str,
    action: Action,
    request: Request,
    actor: Actor = Depends(Page(Permission.SELF)),
) -> Response:
    """approve | reject (approvals), submit | skip | fail (tasks), retry | skip | fail
    (escalated failures), as the API's POST /api/v1/tasks/{id}/{action}; via `console`."""
    form = await request.form()
    comment = str(form.get("comment") or "").strip()[:5000] or None
    back = safe_next(str(form.get("back") or ""), "/inbox")
    state = console_state(request)
    queue = state_of(request).queue

    def apply() -> tuple[str, str, dict[str, Any]] | Refusal:
        typed: dict[str, Any] = {}
        with refusals_audited(state.database, actor, request.url.path, "POST"):
            try:
                with state.database.transaction() as session:
                    data = None
                    if action == Action.SUBMIT:
                        schema = decisions.get_task(session, task_id).form
                        data, typed = schema_form.read(schema, form)
                    task = decisions.decide(
                        session,
                        actor,
                        queue,
                        task_id,
                        action,
                        comment=comment,
                        data=data,
                        via="console",
                    )
                    return task.title, task.status, {"kind": task.kind}
            except SHOWN_ON_TASK as error:
                return Refusal(error, typed=typed, comment=comment or "")

    outcome = await run_in_threadpool(apply)
    if isinstance(outcome, Refusal):
        return await run_in_threadpool(_task_page, request, actor, task_id, outcome)
    title, status, facts = outcome
    message = f"{DONE[action]}: {title}."
    if status == TaskStatus.PENDING and facts["kind"] == TaskKind.APPROVAL:
        message += " The approval now waits for its other approvers."
    return redirect(request, back, message=message)
