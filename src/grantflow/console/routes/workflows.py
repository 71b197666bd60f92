"""/workflows: is each workflow live (dispatching, or exactly why not, and its last run); a
workflow's versions, the diff between two, enable / disable. One version's document, publish,
activate and recompile are in `versions.py`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.tables import Column, RowAction, Table
from grantflow.console.templating import render
from grantflow.console.views import (
    back_to,
    database,
    next_page,
    parse_json_object,
    perform,
    services,
)
from grantflow.console.yaml_view import diff_lines
from grantflow.definitions import workflows as service
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.engine.runs import start_run
from grantflow.safety import breakers
from grantflow.store.pagination import DEFAULT_LIMIT
from grantflow.strict import MAX_INT

router = APIRouter(include_in_schema=False)

WORKFLOWS = Table(
    columns=(
        Column("Workflow", "name", "link", link="url"),
        Column("Trigger", "trigger", "code"),
        Column("Status", "status", "chip"),
        Column("Live?", "live", "chip"),
        Column("Why not", "why_not"),
        Column("Active version", "active_version"),
        Column("Last run", "last_run_at", "when"),
        Column("Failed (24 h)", "failed_runs_24h"),
    ),
    empty="No workflows yet. Create one with `grantflow apply -f workflow.yaml`.",
)

VERSIONS = Table(
    columns=(
        Column("Version", "label", "link", link="url"),
        Column("State", "state", "chip"),
        Column("Active", "active", "bool"),
        Column("Created", "created_at", "when"),
        Column("By", "created_by"),
        Column("Published", "published_at", "when"),
        Column("By", "published_by"),
    ),
    actions=(
        RowAction(
            "Publish",
            "/workflows/{workflow_id}/versions/{number}/publish",
            Permission.WORKFLOW_PUBLISH,
            when="is_draft",
            style="primary",
        ),
        RowAction(
            "Activate",
            "/workflows/{workflow_id}/versions/{number}/activate",
            Permission.WORKFLOW_PUBLISH,
            when="can_activate",
        ),
    ),
)


def workflow_view(session: Session, workflow: Workflow) -> dict[str, Any]:
    """A workflow as its list row and detail header show it (the API's fields)."""
    live = service.liveness(session, workflow)
    activity = service.run_activity(session, workflow)
    draft = service.draft_of(workflow)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "description": workflow.description,
        "url": f"/workflows/{workflow.id}",
        "trigger": workflow.trigger_type,
        "status": str(workflow.status),
        "enabled": workflow.enabled,
        "live": "dispatching" if live.dispatching else "not dispatching",
        "dispatching": live.dispatching,
        "reasons": live.reasons,
        "why_not": "; ".join(live.reasons) or None,
        "active_version": workflow.active_version,
        "draft_version": draft.number if draft else None,
        "last_run_at": activity.last_run_at,
        "failed_runs_24h": activity.failed_runs_24h,
        "application_id": workflow.application_id,
    }


def version_row(workflow: Workflow, version: WorkflowVersion) -> dict[str, Any]:
    active = workflow.active_version == version.number
    return {
        "workflow_id": workflow.id,
        "number": version.number,
        "label": f"v{version.number}",
        "url": f"/workflows/{workflow.id}/versions/{version.number}",
        "state": version.state,
        "active": active,
        "is_draft": version.state == "draft",
        "can_activate": version.state == "published" and not active,
        "created_at": version.created_at,
        "created_by": version.created_by,
        "published_at": version.published_at,
        "published_by": version.published_by,
    }


@router.get("/workflows")
def list_page(
    request: Request,
    name: str = Query("", max_length=100),
    trigger: str = Query("", max_length=40),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.WORKFLOW_READ)),
) -> Response:
    """Every workflow: live or why not, its active version, last run, recent failures."""
    with database(request).transaction() as session:
        page = service.list_workflows(
            session, name=name or None, trigger=trigger or None, cursor=cursor, limit=DEFAULT_LIMIT
        )
        rows = [workflow_view(session, w) for w in page.items]
    context = {
        "table": WORKFLOWS,
        "rows": WORKFLOWS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"name": name, "trigger": trigger},
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "workflows/list.html", context)


@router.get("/workflows/{workflow_id}")
def detail_page(
    workflow_id: str, request: Request, _: Actor = Depends(Page(Permission.WORKFLOW_READ))
) -> Response:
    """A workflow: live or why not, its versions (publish, activate), enable / disable, diff."""
    with database(request).transaction() as session:
        workflow = service.get_workflow(session, workflow_id)
        shown = workflow_view(session, workflow)
        versions = [version_row(workflow, v) for v in reversed(workflow.versions)]
        paused = breakers.pause_view(session, workflow)
    numbers = [v["number"] for v in versions]
    context = {
        "workflow": shown,
        "paused_for_safety": paused,
        "table": VERSIONS,
        "rows": VERSIONS.rows(versions),
        "numbers": numbers,
    }
    return render(request, "workflows/detail.html", context)


@router.get("/workflows/{workflow_id}/diff")
def diff_page(
    workflow_id: str,
    request: Request,
    from_version: int = Query(..., alias="from", ge=1, le=MAX_INT),
    to_version: int = Query(..., alias="to", ge=1, le=MAX_INT),
    _: Actor = Depends(Page(Permission.WORKFLOW_READ)),
) -> Response:
    """The unified diff of two versions' YAML."""
    with database(request).transaction() as session:
        workflow = service.get_workflow(session, workflow_id)
        text = service.diff(session, workflow_id, from_version, to_version)
        context = {
            "workflow": {"id": workflow.id, "name": workflow.name},
            "numbers": [v.number for v in reversed(workflow.versions)],
            "old": from_version,
            "new": to_version,
            "lines": diff_lines(text),
        }
    return render(request, "workflows/diff.html", context)


def _set_enabled(
    request: Request, actor: Actor, workflow_id: str, enabled: bool, back: str
) -> Response:
    def work(session: Session) -> str:
        workflow = service.set_enabled(session, actor, workflow_id, enabled)
        return f"Workflow {workflow.name} is {'enabled' if enabled else 'disabled'}."

    return perform(request, back_to(back, f"/workflows/{workflow_id}"), work)


@router.post("/workflows/{workflow_id}/enable")
def enable(
    workflow_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Enable: its active version dispatches runs again."""
    return _set_enabled(request, actor, workflow_id, True, next)


@router.post("/workflows/{workflow_id}/disable")
def disable(
    workflow_id: str,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Disable: no new runs start (runs in flight go on)."""
    return _set_enabled(request, actor, workflow_id, False, next)


@router.post("/workflows/{workflow_id}/runs")
def start(
    workflow_id: str,
    request: Request,
    input: str = Form("", max_length=100_000),
    actor: Actor = Depends(Page(Permission.RUN_OPERATE)),
) -> Response:
    """Start a run of the active version with this input (JSON), as POST /api/v1/workflows/{id}
    /runs does; on to the run's page."""

    def work(session: Session) -> tuple[str, str]:
        run_input = parse_json_object(input, "input")
        run = start_run(session, actor, services(request).queue, workflow_id, run_input)
        return f"Run {run.id[:8]} started.", f"/runs/{run.id}"

    return perform(request, f"/workflows/{workflow_id}", work)
