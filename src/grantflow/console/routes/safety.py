"""Safety in the console: resume a workflow paused for safety, and usage against the spend caps
with the form that adjusts a cap — the same service functions as `POST
/api/v1/workflows/{id}/resume-safety`, `GET /api/v1/usage` and `PUT /api/v1/spend-caps`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from grantflow.api.state import state_of
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.templating import render
from grantflow.console.views import back_to, database, perform
from grantflow.errors import ValidationError
from grantflow.safety import breakers, spend

router = APIRouter(include_in_schema=False)


@router.post("/workflows/{workflow_id}/resume-safety")
def resume_safety(
    workflow_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Resume a workflow paused for safety: its held runs go on, oldest first."""

    def work(session: Session) -> str:
        found = breakers.resume(session, actor, state_of(request).queue, workflow_id)
        return f"Workflow {found.name} resumed: its held runs go on, oldest first."

    return perform(request, back_to(next, f"/workflows/{workflow_id}"), work)


@router.get("/usage")
def usage_page(request: Request, _: Actor = Depends(Page(Permission.WORKFLOW_READ))) -> Response:
    """Runs, executed steps and external calls this day and month against the caps."""
    with database(request).transaction() as session:
        shown = spend.usage(session)
    rows = [{"scope": "workspace", **row} for row in shown["workspace"]["usage"]]
    for workflow in shown["workflows"]:
        rows += [{"scope": workflow["name"], **row} for row in workflow["usage"]]
    return render(request, "safety/usage.html", {"usage": shown, "rows": rows})


@router.post("/usage/caps")
def set_cap(
    request: Request,
    kind: str = Form(..., max_length=40),
    period: str = Form(..., max_length=10),
    cap: str = Form("", max_length=12),
    workflow: str = Form("", max_length=200),
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Set a spend cap (empty: remove it); runs it frees go on at once."""

    def work(session: Session) -> str:
        text = cap.strip()
        if text and not text.isdigit():
            raise ValidationError("cap: a whole number, or empty to remove the cap")
        spend.set_cap(
            session,
            actor,
            state_of(request).queue,
            workflow=workflow.strip() or None,
            kind=kind,
            period=period,
            cap=int(text) if text else None,
        )
        return f"The {period} cap on {kind} is {'set to ' + text if text else 'removed'}."

    return perform(request, "/usage", work)
