"""/workflows/{id}/versions/{n}: one version's document (highlighted YAML with the publish
gate's problems under the lines they name), publish, activate, recompile a damaged plan (where
the advice offers it), and the dry-run preview of every step's exact request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.templating import redirect, render
from grantflow.console.views import back_to, database, parse_json_object, perform, refused
from grantflow.console.yaml_view import highlight
from grantflow.definitions import recompile
from grantflow.definitions import workflows as service
from grantflow.definitions.dryrun import SampleContext, dry_run
from grantflow.errors import Conflict, GrantflowError, PermissionDenied, ValidationError
from grantflow.strict import MAX_INT

VersionNumber = Annotated[int, Path(ge=1, le=MAX_INT, description="the version's number")]
router = APIRouter(include_in_schema=False)

SAMPLE_FIELDS = ("identity", "grant", "input", "steps")
_SAMPLE_DEFAULTS = {
    "identity": '{"email": "ada@example.com", "display_name": "Ada Lovelace"}',
    "grant": '{"role": "member"}',
    "input": "{}",
    "steps": "{}",
}


def _version_page(
    request: Request,
    workflow_id: str,
    number: VersionNumber,
    *,
    gate_errors: list[dict[str, Any]] | None = None,
    refused: GrantflowError | dict[str, Any] | None = None,
    sample: dict[str, str] | None = None,
    preview: dict[str, Any] | None = None,
    sample_error: GrantflowError | None = None,
    status_code: int = 200,
) -> Response:
    with database(request).transaction() as session:
        workflow = service.get_workflow(session, workflow_id)
        version = service.get_version(session, workflow, number)
        is_draft = version.state == "draft"
        warnings: list[dict[str, Any]] = list(version.warnings or [])
        if gate_errors is None and is_draft:  # the gate, read-only: what Publish would say
            checked = service.validate(session, workflow_id, number)
            gate_errors = [p.to_dict() for p in checked.errors]
            warnings = [p.to_dict() for p in checked.warnings]
        plan_problem = None
        if not is_draft:
            plan_problem = _plan_problem(session, workflow_id, number)
        document, unplaced = highlight(version.document, gate_errors or [])
        context = {
            "workflow": {
                "id": workflow.id,
                "name": workflow.name,
                "active_version": workflow.active_version,
            },
            "version": {
                "number": version.number,
                "state": version.state,
                "active": workflow.active_version == version.number,
                "content_hash": version.content_hash,
                "created_at": version.created_at,
                "created_by": version.created_by,
                "published_at": version.published_at,
                "published_by": version.published_by,
            },
            "document": document,
            "gate_errors": gate_errors or [],
            "unplaced": unplaced,
            "warnings": warnings,
            "refused": refused,
            "plan_problem": plan_problem,
            "sample": sample or dict(_SAMPLE_DEFAULTS),
            "preview": preview,
            "sample_error": sample_error,
        }
    return render(request, "workflows/version.html", context, status_code=status_code)


def _plan_problem(session: Session, workflow_id: str, number: int) -> dict[str, Any] | None:
    """A published version whose stored plan fails its integrity check: the message, the
    advice's words and its action (Recompile), as the API's 409 says them."""
    try:
        recompile.stored_plan(session, workflow_id, number)
    except Conflict as exc:
        if exc.code != "plan_integrity_failed":
            raise
        action = exc.extra.get("action") or {}
        return {
            "message": exc.message,
            "next_action": exc.next_action,
            "label": action.get("label", "Recompile"),
        }
    return None


@router.get("/workflows/{workflow_id}/versions/{number}")
def version_page(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    _: Actor = Depends(Page(Permission.WORKFLOW_READ)),
) -> Response:
    """The document; a draft's gate problems; a published version's plan check; dry-run."""
    return _version_page(request, workflow_id, number)


@router.post("/workflows/{workflow_id}/versions/{number}/publish")
def publish(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Publish through the gate and activate; refused: every problem next to its line."""
    try:
        with database(request).transaction() as session:
            version, result = service.publish(session, actor, workflow_id, number, True)
            name = version.workflow.name
            warned = len(result.warnings)
    except ValidationError as exc:
        if exc.code != "publish_gate_failed":
            raise
        problems = list(exc.details)
        headline: dict[str, Any] = {  # the list itself is the gate section's, next to each line
            "message": f"version {number} cannot be published: {len(problems)} "
            f"problem{'s' * (len(problems) != 1)} (listed below, and under the line each names)",
            "next_action": exc.next_action,
            "details": [],
        }
        return _version_page(
            request,
            workflow_id,
            number,
            gate_errors=problems,
            refused=headline,
            status_code=422,
        )
    except PermissionDenied as exc:
        refused(request, exc)
    except GrantflowError as exc:
        return _version_page(request, workflow_id, number, refused=exc, status_code=exc.http_status)
    note = f" with {warned} warning{'s' * (warned != 1)}" if warned else ""
    return redirect(
        request,
        f"/workflows/{workflow_id}/versions/{number}",
        message=f"Version {number} of {name} is published{note} and active.",
    )


@router.post("/workflows/{workflow_id}/versions/{number}/activate")
def activate(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Make a published version the active one (roll back or forward)."""

    def work(session: Session) -> str:
        workflow = service.activate(session, actor, workflow_id, number)
        return f"Version {number} of {workflow.name} is now active."

    return perform(request, back_to(next, f"/workflows/{workflow_id}"), work)


@router.post("/workflows/{workflow_id}/versions/{number}/recompile")
def recompile_plan(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    actor: Actor = Depends(Page(Permission.WORKFLOW_PUBLISH)),
) -> Response:
    """Compile a published version's plan again from its document (a damaged plan's fix)."""

    def work(session: Session) -> str:
        recompile.recompile(session, actor, workflow_id, number)
        return (
            f"The plan of version {number} is compiled again; runs that failed with "
            "plan_integrity_failed can now be retried."
        )

    return perform(request, f"/workflows/{workflow_id}/versions/{number}", work)


@router.post("/workflows/{workflow_id}/versions/{number}/dry-run")
def dry_run_preview(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    identity: str = Form("", max_length=20_000),
    grant: str = Form("", max_length=20_000),
    input: str = Form("", max_length=20_000),
    steps: str = Form("", max_length=50_000),
    _: Actor = Depends(Page(Permission.WORKFLOW_READ)),
) -> Response:
    """Render every step's exact request for the sample; nothing is sent."""
    typed = {"identity": identity, "grant": grant, "input": input, "steps": steps}
    try:
        sample = SampleContext(
            **{name: parse_json_object(typed[name], f"sample.{name}") for name in SAMPLE_FIELDS}
        )
        with database(request).transaction() as session:
            workflow = service.get_workflow(session, workflow_id)
            version = service.get_version(session, workflow, number)
            preview = dry_run(session, workflow, version, sample)
    except ValidationError as exc:
        return _version_page(
            request, workflow_id, number, sample=typed, sample_error=exc, status_code=422
        )
    return _version_page(request, workflow_id, number, sample=typed, preview=preview)
