"""/controls: the latest evaluation of the built-in controls — failing ones first, each with its
findings linking to the object to fix — and Evaluate now (job:manage)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.templating import render
from grantflow.console.views import console_path, database, perform
from grantflow.errors import NotFound
from grantflow.governance import controls as service
from grantflow.governance.control_checks import catalogue

router = APIRouter(include_in_schema=False)


def _results(view: dict[str, Any]) -> list[dict[str, Any]]:
    results = [
        {
            **r,
            "findings": [{**f, "url": console_path(f.get("link"))} for f in r["findings"]],
        }
        for r in view["results"]
    ]
    return sorted(results, key=lambda r: (r["passed"], r["title"]))


@router.get("/controls")
def controls_page(request: Request, _: Actor = Depends(Page(Permission.JOB_READ))) -> Response:
    """Each control failing or passing in the latest evaluation, with its findings."""
    with database(request).transaction() as session:
        try:
            view = service.view(service.get_evaluation(session, "latest"))
        except NotFound:
            view = None
    context = {
        "evaluation": view,
        "results": _results(view) if view else [],
        "catalogue": catalogue(),
    }
    return render(request, "reviews/controls.html", context)


@router.post("/controls/evaluate")
def evaluate(request: Request, actor: Actor = Depends(Page(Permission.JOB_MANAGE))) -> Response:
    """Evaluate every control now, with its default parameters."""

    def work(session: Session) -> str:
        evaluation = service.evaluate(session, actor, None)
        summary = evaluation.summary
        return f"Evaluated {summary['controls']} controls: {summary['failed']} failing."

    return perform(request, "/controls", work)
