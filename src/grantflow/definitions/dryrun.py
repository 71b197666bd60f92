"""Dry-run: render every step's exact request for a sample context, and follow the branches,
without sending anything.

Templates are evaluated exactly as a run evaluates them (the same sandbox, strict about missing
values, the same limits): a value the run would not have is the error the run would hit. The
identity, grant and application have the fields a run's snapshot has (the sample fills them in;
a field it leaves out is null, as for a real identity without it). Only the outputs of steps the
sample does not give are unknown: they render as `<steps.id.output...>` and are listed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as InvalidConfig
from sqlalchemy.orm import Session

from grantflow.access.applications import find_application
from grantflow.access.models import Grant, Identity
from grantflow.access.snapshots import grant_snapshot, identity_snapshot
from grantflow.definitions import expressions, loops
from grantflow.definitions.document import APPLICATION_TRIGGERS, WorkflowDocument
from grantflow.definitions.gate import parse_document
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.errors import NotFound, ValidationError
from grantflow.steps.registry import get_step_type

_MAX_PATH = 1000
IDENTITY_TRIGGERS = {
    "access_granted",
    "access_revoked",
    "identity_joined",
    "identity_moved",
    "identity_left",
}


class SampleContext(BaseModel):
    """What a real run would have: the identity, the grant, the input, earlier steps' outputs."""

    model_config = ConfigDict(extra="forbid")

    identity: dict[str, Any] = Field(default_factory=dict)
    grant: dict[str, Any] = Field(default_factory=dict)
    input: dict[str, Any] = Field(default_factory=dict)
    application: dict[str, Any] | None = Field(None, description="default: the real application")
    steps: dict[str, Any] = Field(
        default_factory=dict, description="sample outputs by step id, e.g. {create: {id: 7}}"
    )


def application_context(session: Session, document: WorkflowDocument) -> dict[str, Any]:
    if document.application is None:
        return {}
    try:
        app = find_application(session, document.application)
    except NotFound:
        return {}
    return {"id": app.id, "name": app.name, "kind": app.kind, "labels": app.labels}


def dry_run(
    session: Session, workflow: Workflow, version: WorkflowVersion, sample: SampleContext
) -> dict[str, Any]:
    document, problems = parse_document(version.document)
    if document is None:
        raise ValidationError(
            "the version's document is not valid; fix the draft first",
            details=[p.to_dict() for p in problems],
        )
    steps = expressions.SampleSteps(
        {
            sid: {"output": out, "status": "succeeded", "error": None}
            for sid, out in sample.steps.items()
        }
    )
    identity, grant, warnings = _subject(session, document, sample)
    context = {
        "input": sample.input,
        "identity": identity,
        "grant": grant,
        "application": (
            sample.application
            if sample.application is not None
            else application_context(session, document)
        ),
        "steps": steps,
        "run": {
            "id": "dry-run",
            "workflow_id": workflow.id,
            "version": version.number,
            "trigger": document.trigger.type,
        },
    }
    rendered = {step.id: _render_step(step, context) for step in document.steps}
    path = _follow(document, rendered)
    on_path = set(path)
    return {
        "workflow": workflow.name,
        "version": version.number,
        "state": version.state,
        "sent": False,
        "path": path,
        "steps": [{**rendered[s.id], "on_path": s.id in on_path} for s in document.steps],
        "warnings": warnings,
    }


def _subject(
    session: Session, document: WorkflowDocument, sample: SampleContext
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The identity and grant a run of this trigger sees: every field a snapshot has (null
    unless the sample gives it); a sample field no snapshot has is a warning, as a run would
    not see it."""
    trigger = document.trigger.type
    shapes = {
        "identity": identity_snapshot(session, Identity(attributes={}))
        if trigger in IDENTITY_TRIGGERS
        else {},
        "grant": grant_snapshot(Grant()) if trigger in APPLICATION_TRIGGERS else {},
    }
    given = {"identity": sample.identity, "grant": sample.grant}
    warnings = [
        f"{root}.{key} is not a field a run's {root} has: a run would not see it"
        + (" (custom fields are under identity.attributes)" if root == "identity" else "")
        for root, shape in shapes.items()
        if shape
        for key in given[root]
        if key not in shape
    ]
    return (
        {**shapes["identity"], **sample.identity},
        {**shapes["grant"], **sample.grant},
        warnings,
    )


def _render_step(step: Any, context: dict[str, Any]) -> dict[str, Any]:
    step_type = get_step_type(step.type)
    found, token = expressions.recording_unresolved()
    entry: dict[str, Any] = {"id": step.id, "type": step.type, "name": step.name or step.id}
    try:
        config = expressions.render(step.config, context, where=f"{step.id}.config")
        if step_type is None:
            entry["error"] = f"unknown step type {step.type!r}"
        else:
            entry["preview"] = _preview(step_type, config, step.id)
            try:
                entry["side_effects"] = step_type.side_effects(
                    step_type.config_model.model_validate(step.config)
                )
            except ValueError:
                entry["side_effects"] = None
        evaluated = []
        for index, branch in enumerate(step.branches):
            result = expressions.evaluate(
                branch.when, context, where=f"{step.id}.branches[{index}].when"
            )
            evaluated.append({"when": branch.when, "next": branch.next, "result": result})
        if evaluated or step.branches:
            taken = next((b for b in evaluated if b["result"]), None)
            entry["branch"] = {
                "evaluated": evaluated,
                "taken": taken["next"] if taken else step.next,
                "by": "condition" if taken else "default",
            }
        else:
            entry["next"] = step.next
    except expressions.ExpressionError as exc:
        entry["error"] = exc.message
    finally:
        expressions.stop_recording(token)
    entry["unresolved"] = found
    return entry


def _follow(document: WorkflowDocument, rendered: dict[str, dict[str, Any]]) -> list[str]:
    by_id = {s.id: s for s in document.steps}
    current: str | None = document.entry or (document.steps[0].id if document.steps else None)
    path: list[str] = []
    visits: dict[str, int] = {}
    limits = loops.bounds(  # as the engine bounds a loop
        {s.id: [s.next, *(b.next for b in s.branches)] for s in document.steps},
        {s.id: s.max_iterations for s in document.steps},
    )
    while current is not None and current in by_id and len(path) < _MAX_PATH:
        step = by_id[current]
        visits[current] = visits.get(current, 0) + 1
        if visits[current] > limits[current].limit:
            break
        path.append(current)
        entry = rendered[current]
        if "error" in entry:
            break
        current = entry["branch"]["taken"] if "branch" in entry else step.next
    return path


def _preview(step_type: Any, config: Any, step_id: str) -> dict[str, Any] | None:
    """The step type's preview of its rendered config; a config of the wrong shape (a number
    where a URL goes) is an error naming the field, not a crash of the dry run."""
    try:
        return step_type.preview(config)  # type: ignore[no-any-return]
    except (TypeError, AttributeError, ValueError) as crash:
        try:
            step_type.config_model.model_validate(config)
        except InvalidConfig as invalid:
            first = invalid.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise expressions.ExpressionError(
                f"{step_id}.config.{field}: {first['msg']}" if field else first["msg"]
            ) from crash
        raise expressions.ExpressionError(
            f"{step_id}.config cannot be previewed: its rendered values have the wrong shape"
        ) from crash
