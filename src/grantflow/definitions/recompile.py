"""A published version's plan, read safely and recompiled from its document.

The plan is derived data: a published version's document is immutable, so the plan compiled
from it again is the plan it should have. Recompiling is the fix for `plan_integrity_failed`
(a plan damaged or lost in the database); reading a damaged plan is a clear 409 that offers it,
never a 500."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from grantflow import advice, audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions import gate
from grantflow.definitions.models import VersionState, WorkflowVersion
from grantflow.definitions.plan import load_plan
from grantflow.definitions.workflows import DatabaseReferences, get_version, get_workflow
from grantflow.errors import BadRequest, Conflict, InternalError, ValidationError

_WORDS = advice.TABLE["plan_integrity_failed"].next_action


def _published(session: Session, workflow_id: str, number: int) -> WorkflowVersion:
    version = get_version(session, get_workflow(session, workflow_id), number)
    if version.state == VersionState.DRAFT:
        raise BadRequest(
            f"version {number} is a draft and has no plan yet; publish it", code="no_plan"
        )
    return version


def stored_plan(session: Session, workflow_id: str, number: int) -> dict[str, Any]:
    """The stored plan of a published version, integrity-checked as the engine checks it."""
    version = _published(session, workflow_id, number)
    try:
        if not isinstance(version.plan, dict):
            raise InternalError(
                f"the compiled plan of workflow {version.workflow.name!r} version {number} "
                f"is missing or not an object",
                code="plan_integrity_failed",
            )
        load_plan(version.plan, workflow=version.workflow.name, version=number)
    except InternalError as exc:
        raise Conflict(
            exc.message,
            code="plan_integrity_failed",
            next_action=_WORDS,
            action=advice.render("version.recompile", workflow_id=workflow_id, version=number),
        ) from None
    return version.plan


def recompile(session: Session, actor: Actor, workflow_id: str, number: int) -> WorkflowVersion:
    """Compile a published version's plan again from its (immutable) document; audited."""
    actor.require(Permission.WORKFLOW_PUBLISH)
    version = _published(session, workflow_id, number)
    result = gate.check(version.document, DatabaseReferences(session))
    if not result.ok:
        raise ValidationError(
            f"version {number} of {version.workflow.name!r} no longer passes the gate, so its "
            f"plan cannot be compiled: {len(result.errors)} problem(s): "
            + "; ".join(p.message for p in result.errors[:3]),
            code="publish_gate_failed",
            details=[p.to_dict() for p in result.errors],
            next_action="fix each problem listed in details (e.g. create the connection it "
            "names), then Recompile again",
        )
    compiled = gate.compile_plan(result, number).model_dump(mode="json")
    changed = compiled != version.plan
    version.plan = compiled
    audit.record(
        session,
        actor,
        "workflow.version_recompiled",
        "workflow",
        version.workflow_id,
        {"version": number, "changed": changed},
    )
    session.flush()
    return version
