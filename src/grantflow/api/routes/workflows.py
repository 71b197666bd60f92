"""/api/v1/workflows: documents, versions, the publish gate, activation, diff, dry-run."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions import recompile
from grantflow.definitions import workflows as service
from grantflow.definitions.dryrun import SampleContext, dry_run
from grantflow.definitions.gate import GateResult
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.definitions.schemas import step_config_schema, workflow_json_schema
from grantflow.definitions.source import YAML_TYPES, parse_text, to_yaml
from grantflow.errors import BadRequest
from grantflow.safety.breakers import pause_view
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT
from grantflow.strict import MAX_INT

VersionNumber = Annotated[int, Path(ge=1, le=MAX_INT, description="the version's number")]

router = APIRouter(prefix=API_PREFIX, tags=["workflows"])

_DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "a workflow document (schema: GET /api/v1/schemas/workflow)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def document_body(request: Request) -> Any:
    """The request body as a document, from JSON or YAML."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body:
        raise BadRequest("the request has no body; send a workflow document", code="missing_body")
    if content_type in YAML_TYPES:
        # parsed off the event loop: a large YAML document takes a while, /healthz must not
        limit = request.app.state.grantflow.settings.max_body_bytes
        return await run_in_threadpool(lambda: parse_text(body, max_bytes=limit))
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc}",
            code="malformed_json",
            next_action="send JSON, or YAML with Content-Type: application/yaml",
        ) from None


class VersionSummary(BaseModel):
    number: int
    state: str
    active: bool
    content_hash: str
    created_at: dt.datetime
    created_by: str
    published_at: dt.datetime | None
    published_by: str | None


class VersionOut(VersionSummary):
    workflow_id: str
    document: dict[str, Any]
    warnings: list[dict[str, Any]]


class WorkflowOut(BaseModel):
    id: str
    name: str
    description: str
    application_id: str | None
    trigger: str
    status: str
    enabled: bool
    active_version: int | None
    draft_version: int | None
    dispatching: bool
    not_dispatching_because: list[str]
    last_run_at: dt.datetime | None
    failed_runs_24h: int
    # set while a safety breaker holds the workflow: breaker, figures, time, held runs, and
    # the action that resumes it (an operator's pause of one run is on the run instead)
    paused_for_safety: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class CreatedOut(BaseModel):
    workflow: WorkflowOut
    version: VersionOut


class GateOut(BaseModel):
    ok: bool
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]


class PublishedOut(BaseModel):
    workflow: WorkflowOut
    version: VersionOut
    warnings: list[dict[str, Any]]


def _version_summary(workflow: Workflow, version: WorkflowVersion) -> dict[str, Any]:
    return {
        "number": version.number,
        "state": version.state,
        "active": workflow.active_version == version.number,
        "content_hash": version.content_hash,
        "created_at": version.created_at,
        "created_by": version.created_by,
        "published_at": version.published_at,
        "published_by": version.published_by,
    }


def _version_out(workflow: Workflow, version: WorkflowVersion) -> VersionOut:
    return VersionOut(
        **_version_summary(workflow, version),
        workflow_id=workflow.id,
        document=version.document,
        warnings=version.warnings or [],
    )


def workflow_out(session: Any, workflow: Workflow) -> WorkflowOut:
    live = service.liveness(session, workflow)
    draft = service.draft_of(workflow)
    activity = service.run_activity(session, workflow)
    return WorkflowOut(
        id=workflow.id,
        name=workflow.name,
        description=workflow.description,
        application_id=workflow.application_id,
        trigger=workflow.trigger_type,
        status=workflow.status,
        enabled=workflow.enabled,
        active_version=workflow.active_version,
        draft_version=draft.number if draft else None,
        dispatching=live.dispatching,
        not_dispatching_because=live.reasons,
        last_run_at=activity.last_run_at,
        failed_runs_24h=activity.failed_runs_24h,
        paused_for_safety=pause_view(session, workflow),
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
    )


def _gate_out(result: GateResult) -> GateOut:
    return GateOut(
        ok=result.ok,
        errors=[p.to_dict() for p in result.errors],
        warnings=[p.to_dict() for p in result.warnings],
    )


@router.get("/schemas/workflow", tags=["schemas"])
def get_workflow_schema(
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
) -> dict[str, Any]:
    """The JSON Schema of workflow documents, each step type's `config` schema included."""
    return workflow_json_schema()


@router.get("/schemas/steps/{step_type}", tags=["schemas"])
def get_step_schema(
    step_type: str,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
) -> dict[str, Any]:
    """The JSON Schema of one step type's `config`."""
    return step_config_schema(step_type)


@router.post("/workflows", status_code=201, response_model=CreatedOut, openapi_extra=_DOCUMENT_BODY)
def create_workflow(
    raw: Any = Depends(document_body),
    actor: Actor = Depends(Require(Permission.WORKFLOW_EDIT)),
    db: Database = Depends(database),
) -> CreatedOut:
    """Create a workflow from a document; it starts as draft version 1."""
    with db.transaction() as session:
        version = service.create_workflow(session, actor, raw)
        return CreatedOut(
            workflow=workflow_out(session, version.workflow),
            version=_version_out(version.workflow, version),
        )


class AppliedOut(BaseModel):
    workflow_id: str
    name: str
    version: int
    action: str  # created, draft_created, draft_updated, unchanged
    published: bool
    active_version: int | None
    workflow: WorkflowOut


@router.post("/workflows/apply", response_model=AppliedOut, openapi_extra=_DOCUMENT_BODY)
def apply_workflow(
    raw: Any = Depends(document_body),
    publish: bool = Query(False, description="publish (and activate) it too: workflow:publish"),
    actor: Actor = Depends(Require(Permission.WORKFLOW_EDIT)),
    db: Database = Depends(database),
) -> AppliedOut:
    """Definitions as code: create the workflow named in the document, or a new draft when its
    content changed; nothing when it is unchanged (idempotent)."""
    with db.transaction() as session:
        applied = service.apply_document(session, actor, raw, publish)
        return AppliedOut(
            workflow_id=applied.workflow.id,
            name=applied.workflow.name,
            version=applied.version.number,
            action=applied.action,
            published=applied.published,
            active_version=applied.workflow.active_version,
            workflow=workflow_out(session, applied.workflow),
        )


@router.get("/workflows", response_model=PageOut[WorkflowOut])
def list_workflows(
    name: str | None = Query(None, max_length=100),
    application_id: str | None = Query(None, max_length=36),
    trigger: str | None = Query(None, max_length=40),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> PageOut[WorkflowOut]:
    with db.transaction() as session:
        page = service.list_workflows(
            session,
            name=name,
            application_id=application_id,
            trigger=trigger,
            cursor=cursor,
            limit=limit,
        )
        return PageOut(
            items=[workflow_out(session, w) for w in page.items], next_cursor=page.next_cursor
        )


@router.get("/workflows/{workflow_id}", response_model=WorkflowOut)
def get_workflow(
    workflow_id: str,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> WorkflowOut:
    """The workflow (by id, name or unique id prefix), whether it is dispatching, and exactly
    why not when it is not."""
    with db.transaction() as session:
        return workflow_out(session, service.find_workflow(session, workflow_id))


@router.post("/workflows/{workflow_id}/disable", response_model=WorkflowOut)
def disable_workflow(
    workflow_id: str,
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
) -> WorkflowOut:
    with db.transaction() as session:
        return workflow_out(session, service.set_enabled(session, actor, workflow_id, False))


@router.post("/workflows/{workflow_id}/enable", response_model=WorkflowOut)
def enable_workflow(
    workflow_id: str,
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
) -> WorkflowOut:
    with db.transaction() as session:
        return workflow_out(session, service.set_enabled(session, actor, workflow_id, True))


@router.get("/workflows/{workflow_id}/versions", response_model=list[VersionSummary])
def list_versions(
    workflow_id: str,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> list[VersionSummary]:
    with db.transaction() as session:
        workflow = service.get_workflow(session, workflow_id)
        return [VersionSummary(**_version_summary(workflow, v)) for v in workflow.versions]


@router.post(
    "/workflows/{workflow_id}/versions",
    status_code=201,
    response_model=VersionOut,
    openapi_extra=_DOCUMENT_BODY,
)
def save_draft(
    workflow_id: str,
    raw: Any = Depends(document_body),
    actor: Actor = Depends(Require(Permission.WORKFLOW_EDIT)),
    db: Database = Depends(database),
) -> VersionOut:
    """Write a document into the draft (a new draft version when there is none)."""
    with db.transaction() as session:
        version = service.save_draft(session, actor, workflow_id, raw)
        return _version_out(version.workflow, version)


@router.get(
    "/workflows/{workflow_id}/versions/{number}",
    response_model=VersionOut,
    responses={200: {"content": {"application/yaml": {}}}},
)
def get_version(
    workflow_id: str,
    number: VersionNumber,
    format: str = Query("json", pattern="^(json|yaml)$", description="yaml: the document only"),
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> Any:
    with db.transaction() as session:
        workflow = service.get_workflow(session, workflow_id)
        version = service.get_version(session, workflow, number)
        if format == "yaml":
            return PlainTextResponse(to_yaml(version.document), media_type="application/yaml")
        return _version_out(workflow, version)


@router.put(
    "/workflows/{workflow_id}/versions/{number}",
    response_model=VersionOut,
    openapi_extra=_DOCUMENT_BODY,
)
def update_draft(
    workflow_id: str,
    number: VersionNumber,
    raw: Any = Depends(document_body),
    actor: Actor = Depends(Require(Permission.WORKFLOW_EDIT)),
    db: Database = Depends(database),
) -> VersionOut:
    """Edit a draft; a published version is refused (409) — create a new draft instead."""
    with db.transaction() as session:
        version = service.update_draft(session, actor, workflow_id, number, raw)
        return _version_out(version.workflow, version)


@router.get("/workflows/{workflow_id}/versions/{number}/plan")
def get_plan(
    workflow_id: str,
    number: VersionNumber,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """The compiled plan of a published version (409 plan_integrity_failed when the stored
    plan is damaged: Recompile it)."""
    with db.transaction() as session:
        return recompile.stored_plan(session, workflow_id, number)


@router.post("/workflows/{workflow_id}/versions/{number}/recompile")
def recompile_version(
    workflow_id: str,
    number: VersionNumber,
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Compile a published version's plan again from its document (the fix for a damaged
    plan); audited. Runs failed with plan_integrity_failed can then be retried."""
    with db.transaction() as session:
        version = recompile.recompile(session, actor, workflow_id, number)
        return {"workflow_id": workflow_id, "version": version.number, "plan": version.plan}


@router.post("/workflows/{workflow_id}/versions/{number}/validate", response_model=GateOut)
def validate_version(
    workflow_id: str,
    number: VersionNumber,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> GateOut:
    """Run the publish gate without publishing."""
    with db.transaction() as session:
        return _gate_out(service.validate(session, workflow_id, number))


@router.post("/workflows/{workflow_id}/versions/{number}/publish", response_model=PublishedOut)
def publish_version(
    workflow_id: str,
    number: VersionNumber,
    activate: bool = Query(True, description="make it the active version"),
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
) -> PublishedOut:
    """Publish the draft through the gate (422 lists every problem), and activate it."""
    with db.transaction() as session:
        version, result = service.publish(session, actor, workflow_id, number, activate)
        return PublishedOut(
            workflow=workflow_out(session, version.workflow),
            version=_version_out(version.workflow, version),
            warnings=[p.to_dict() for p in result.warnings],
        )


@router.post("/workflows/{workflow_id}/versions/{number}/activate", response_model=WorkflowOut)
def activate_version(
    workflow_id: str,
    number: VersionNumber,
    actor: Actor = Depends(Require(Permission.WORKFLOW_PUBLISH)),
    db: Database = Depends(database),
) -> WorkflowOut:
    """Make a published version the active one (rollback)."""
    with db.transaction() as session:
        return workflow_out(session, service.activate(session, actor, workflow_id, number))


@router.get(
    "/workflows/{workflow_id}/diff",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/x-diff": {"schema": {"type": "string"}}}}},
)
def diff_versions(
    workflow_id: str,
    from_version: int = Query(..., alias="from", ge=1, le=MAX_INT),
    to_version: int = Query(..., alias="to", ge=1, le=MAX_INT),
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> PlainTextResponse:
    """A unified diff of two versions' canonical YAML."""
    with db.transaction() as session:
        text = service.diff(session, workflow_id, from_version, to_version)
    return PlainTextResponse(text, media_type="text/x-diff")


@router.post("/workflows/{workflow_id}/versions/{number}/dry-run")
def dry_run_version(
    workflow_id: str,
    number: VersionNumber,
    sample: SampleContext,
    _: Actor = Depends(Require(Permission.WORKFLOW_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """Render every step's exact request for a sample context; nothing is sent."""
    with db.transaction() as session:
        workflow = service.get_workflow(session, workflow_id)
        version = service.get_version(session, workflow, number)
        return dry_run(session, workflow, version, sample)
