"""Workflows and versions: create, edit drafts, publish through the gate, activate (rollback),
disable and enable, diff. The one place these rules live; API and CLI call these."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access.applications import find_application
from grantflow.access.models import Application
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.service import find_connection, needs_credential
from grantflow.definitions import gate
from grantflow.definitions.document import WorkflowDocument
from grantflow.definitions.lookup import find_workflow as find_workflow  # (re-exported)
from grantflow.definitions.lookup import get_workflow as get_workflow  # (re-exported)
from grantflow.definitions.models import VersionState, Workflow, WorkflowVersion
from grantflow.definitions.plan import Plan, load_plan
from grantflow.definitions.source import content_hash, unified_diff
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.store.base import utcnow
from grantflow.store.names import name_key
from grantflow.store.pagination import Page, decode_cursor, page_of


class DatabaseReferences:
    """The gate's view of applications and connections, read from the database."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def application_id(self, id_or_name: str) -> str | None:
        try:
            return find_application(self.session, id_or_name).id
        except NotFound:
            return None

    def connection_problem(self, name: str, application_id: str | None) -> str | None:
        """Why a step cannot name this connection (it does not exist), or None."""
        if application_id is None:
            return (
                f"connection {name!r} needs the workflow's application: set `application` "
                "to the application that owns the connection"
            )
        if find_connection(self.session, application_id, name) is None:
            owner = self.session.get(Application, application_id)
            label = repr(owner.name) if owner is not None else application_id
            return f"connection {name!r} of application {label} does not exist; create it first"
        return None

    def user_problem(self, key: str) -> str | None:
        """Why an approval or a task cannot be routed to this user (named statically)."""
        from grantflow.auth.users import find_user_by_email, get_user

        try:
            user = find_user_by_email(self.session, key) or get_user(self.session, key)
        except NotFound:
            user = None
        if user is None:
            return f"user {key!r} does not exist; name an existing user or a role"
        if not user.active:
            return f"user {key!r} is deactivated; name an active user or a role"
        from grantflow.auth.permissions import Permission, permissions_for

        if Permission.WORKFLOW_TASK not in permissions_for(user.roles):
            return (
                f"user {key!r} lacks the permission workflow:task (roles: "
                f"{', '.join(user.roles) or 'none'}); give them the approver role or name another"
            )
        return None

    def role_warning(self, role: str) -> str | None:
        """Why nobody could act on a task routed to this role today (a warning: an admin can
        give the role to someone before a run needs it), or None."""
        from grantflow.auth.models import User, UserRole
        from grantflow.auth.permissions import Permission, permissions_for

        if Permission.WORKFLOW_TASK not in permissions_for([role]):
            return (
                f"the role {role} lacks the permission workflow:task, so its members can never "
                "act on this step; name a role that has it (approver, operator or admin)"
            )
        members = self.session.execute(
            select(func.count())
            .select_from(UserRole)
            .join(User, User.id == UserRole.user_id)
            .where(UserRole.role == role, User.active.is_(True))
        ).scalar_one()
        if members:
            return None
        return (
            f"no active user has the role {role}: a run reaching this step would wait with "
            f"nobody able to act, until an admin gives the role to an active user "
            f"(PATCH /api/v1/users/{{id}} with its roles, or `grantflow users set --email EMAIL "
            f"--role {role}`)"
        )

    def connection_warning(self, name: str, application_id: str | None) -> str | None:
        """What makes a step using this (existing) connection fail until fixed, or None."""
        found = find_connection(self.session, application_id, name) if application_id else None
        if found is not None and needs_credential(found) and found.credential is None:
            return (
                f"connection {name!r} has no credential yet ({found.auth_kind}): runs fail at "
                "this step until one is set"
            )
        return None


def _document_or_422(raw: Any) -> WorkflowDocument:
    document, problems = gate.parse_document(raw)
    if document is None:
        raise ValidationError(
            "the workflow document is not valid: "
            + "; ".join(f"{p.field}: {p.message}" for p in problems[:5]),
            details=[
                {
                    "field": f"document.{p.field}" if p.field else "document",
                    "step": p.step,
                    "message": p.message,
                    "code": p.code,
                }
                for p in problems
            ],
            next_action="fix the fields named in details and send the document again",
        )
    return document


def get_version(session: Session, workflow: Workflow, number: int) -> WorkflowVersion:
    version = session.execute(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.number == number
        )
    ).scalar_one_or_none()
    if version is None:
        raise NotFound(
            f"workflow {workflow.name!r} has no version {number}", target_type="workflow_version"
        )
    return version


def draft_of(workflow: Workflow) -> WorkflowVersion | None:
    return next((v for v in workflow.versions if v.state == VersionState.DRAFT), None)


def latest_version(workflow: Workflow) -> WorkflowVersion | None:
    return workflow.versions[-1] if workflow.versions else None


def _application_id(session: Session, document: WorkflowDocument) -> str | None:
    if document.application is None:
        return None
    return DatabaseReferences(session).application_id(document.application)


def create_workflow(session: Session, actor: Actor, raw: Any) -> WorkflowVersion:
    """A new workflow with its first draft (version 1)."""
    actor.require(Permission.WORKFLOW_EDIT)
    document = _document_or_422(raw)
    clash = session.execute(
        select(Workflow).where(Workflow.name_key == name_key(document.name))
    ).scalar_one_or_none()
    if clash is not None:
        raise Conflict(
            f"a workflow named {clash.name!r} already exists",
            next_action="create a new draft of it instead (or `grantflow apply -f`)",
            existing_id=clash.id,
        )
    workflow = Workflow(
        name=document.name,
        description=document.description,
        application_id=_application_id(session, document),
        trigger_type=document.trigger.type,
    )
    session.add(workflow)
    session.flush()
    version = _new_version(session, actor, workflow, document)
    audit.record(
        session,
        actor,
        "workflow.created",
        "workflow",
        workflow.id,
        {"name": workflow.name, "version": version.number},
    )
    return version


def _new_version(
    session: Session, actor: Actor, workflow: Workflow, document: WorkflowDocument
) -> WorkflowVersion:
    canonical = document.canonical()
    number = (latest_version(workflow).number + 1) if workflow.versions else 1  # type: ignore[union-attr]
    version = WorkflowVersion(
        workflow=workflow,
        number=number,
        state=VersionState.DRAFT,
        document=canonical,
        content_hash=content_hash(canonical),
        created_by=actor.label,
    )
    session.add(version)
    session.flush()
    return version


def _check_name(workflow: Workflow, document: WorkflowDocument) -> None:
    if document.name != workflow.name:
        raise ValidationError(
            f"name: a workflow's name cannot change (it is {workflow.name!r})",
            details=[{"field": "document.name", "message": f"must be {workflow.name!r}"}],
            next_action="keep the name, or create a new workflow under the new name",
        )


def save_draft(session: Session, actor: Actor, workflow_id: str, raw: Any) -> WorkflowVersion:
    """Put a document into the workflow's draft, creating the draft when there is none."""
    actor.require(Permission.WORKFLOW_EDIT)
    workflow = get_workflow(session, workflow_id)
    document = _document_or_422(raw)
    _check_name(workflow, document)
    draft = draft_of(workflow)
    if draft is None:
        draft = _new_version(session, actor, workflow, document)
        audit.record(
            session,
            actor,
            "workflow.draft_created",
            "workflow",
            workflow.id,
            {"version": draft.number},
        )
        return draft
    return _write_draft(session, actor, workflow, draft, document)


def update_draft(
    session: Session, actor: Actor, workflow_id: str, number: int, raw: Any
) -> WorkflowVersion:
    """Edit version `number`, which must be the draft."""
    actor.require(Permission.WORKFLOW_EDIT)
    workflow = get_workflow(session, workflow_id)
    version = get_version(session, workflow, number)
    if version.state != VersionState.DRAFT:
        raise Conflict(
            f"version {number} of {workflow.name!r} is published and can never be edited",
            next_action=f"create a new draft with your changes: POST /api/v1/workflows/"
            f"{workflow.id}/versions (or `grantflow apply -f`)",
        )
    document = _document_or_422(raw)
    _check_name(workflow, document)
    return _write_draft(session, actor, workflow, version, document)


def _write_draft(
    session: Session,
    actor: Actor,
    workflow: Workflow,
    draft: WorkflowVersion,
    document: WorkflowDocument,
) -> WorkflowVersion:
    canonical = document.canonical()
    digest = content_hash(canonical)
    if digest != draft.content_hash:
        draft.document = canonical
        draft.content_hash = digest
        session.flush()
        audit.record(
            session,
            actor,
            "workflow.draft_updated",
            "workflow",
            workflow.id,
            {"version": draft.number},
        )
    return draft


def validate(session: Session, workflow_id: str, number: int) -> gate.GateResult:
    workflow = get_workflow(session, workflow_id)
    version = get_version(session, workflow, number)
    return gate.check(version.document, DatabaseReferences(session))


def publish(
    session: Session, actor: Actor, workflow_id: str, number: int, activate: bool = True
) -> tuple[WorkflowVersion, gate.GateResult]:
    """Run the gate over the draft; on success freeze it, compile its plan, and activate it."""
    actor.require(Permission.WORKFLOW_PUBLISH)
    workflow = get_workflow(session, workflow_id)
    version = get_version(session, workflow, number)
    if version.state != VersionState.DRAFT:
        raise Conflict(
            f"version {number} of {workflow.name!r} is already published",
            next_action=f"activate it instead: POST .../versions/{number}/activate",
        )
    result = gate.check(version.document, DatabaseReferences(session))
    if not result.ok:
        raise ValidationError(
            f"version {number} of {workflow.name!r} cannot be published: "
            f"{len(result.errors)} problem(s): "
            + "; ".join(_sentence(p) for p in result.errors[:3]),
            code="publish_gate_failed",
            details=[p.to_dict() for p in result.errors],
            warnings=[p.to_dict() for p in result.warnings],
            next_action="fix each problem listed in details, then publish again",
        )
    plan = gate.compile_plan(result, number)
    version.plan = plan.model_dump(mode="json")
    version.warnings = [p.to_dict() for p in result.warnings]
    version.state = VersionState.PUBLISHED
    version.published_at = utcnow()
    version.published_by = actor.label
    assert result.document is not None
    workflow.description = result.document.description
    audit.record(
        session,
        actor,
        "workflow.version_published",
        "workflow",
        workflow.id,
        {"version": number, "warnings": len(result.warnings)},
    )
    if activate:
        _activate(session, actor, workflow, version)
    session.flush()
    return version, result


def _sentence(problem: gate.Problem) -> str:
    where = " ".join(
        x for x in (f"step {problem.step!r}" if problem.step else "", problem.field or "") if x
    )
    return f"{where}: {problem.message}" if where else problem.message


def activate(session: Session, actor: Actor, workflow_id: str, number: int) -> Workflow:
    """Make a published version the active one (e.g. roll back to an older version)."""
    actor.require(Permission.WORKFLOW_PUBLISH)
    workflow = get_workflow(session, workflow_id)
    version = get_version(session, workflow, number)
    if version.state != VersionState.PUBLISHED:
        raise Conflict(
            f"version {number} of {workflow.name!r} is a draft; only a published "
            "version can be active",
            next_action=f"publish version {number} first",
        )
    _activate(session, actor, workflow, version)
    return workflow


def _activate(session: Session, actor: Actor, workflow: Workflow, version: WorkflowVersion) -> None:
    if workflow.active_version == version.number:
        return
    previous = workflow.active_version
    plan = load_plan(version.plan, workflow=workflow.name, version=version.number)
    workflow.active_version = version.number
    workflow.application_id = plan.application_id
    workflow.trigger_type = str(plan.trigger["type"])
    session.flush()
    audit.record(
        session,
        actor,
        "workflow.version_activated",
        "workflow",
        workflow.id,
        {"version": version.number, "previous": previous},
    )


def set_enabled(session: Session, actor: Actor, workflow_id: str, enabled: bool) -> Workflow:
    actor.require(Permission.WORKFLOW_PUBLISH)
    workflow = get_workflow(session, workflow_id)
    if workflow.enabled != enabled:
        workflow.enabled = enabled
        workflow.enabled_changed_at = utcnow()
        workflow.enabled_changed_by = actor.label
        session.flush()
        audit.record(
            session,
            actor,
            "workflow.enabled" if enabled else "workflow.disabled",
            "workflow",
            workflow.id,
            {"name": workflow.name},
        )
    return workflow


def active_plan(session: Session, workflow: Workflow) -> Plan | None:
    if workflow.active_version is None:
        return None
    version = get_version(session, workflow, workflow.active_version)
    return load_plan(version.plan, workflow=workflow.name, version=version.number)


def diff(session: Session, workflow_id: str, old: int, new: int) -> str:
    workflow = get_workflow(session, workflow_id)
    a, b = get_version(session, workflow, old), get_version(session, workflow, new)
    return unified_diff(
        a.document, b.document, f"{workflow.name} v{old}", f"{workflow.name} v{new}"
    )


@dataclass(frozen=True)
class Liveness:
    """Is the workflow dispatching, and if not, exactly why."""

    dispatching: bool
    reasons: list[str]


def liveness(session: Session, workflow: Workflow) -> Liveness:
    reasons: list[str] = []
    if not workflow.enabled:
        by = f" by {workflow.enabled_changed_by}" if workflow.enabled_changed_by else ""
        at = (
            f" at {workflow.enabled_changed_at:%Y-%m-%d %H:%M} UTC"
            if workflow.enabled_changed_at
            else ""
        )
        reasons.append(f"the workflow is disabled{by}{at}; enable it to dispatch runs")
    if workflow.active_version is None:
        draft = draft_of(workflow)
        hint = f"; version {draft.number} is a draft: publish it" if draft else ""
        reasons.append(f"no published version is active{hint}")
    elif (
        workflow.trigger_type in ("access_granted", "access_revoked")
        and workflow.application_id is None
    ):
        reasons.append(
            f"trigger {workflow.trigger_type} needs an application, and the "
            "active version names none"
        )
    if (
        workflow.application_id is not None
        and session.get(Application, workflow.application_id) is None
    ):
        reasons.append("its application no longer exists")
    if workflow.safety_pause is not None:
        pause = workflow.safety_pause
        reasons.append(
            f"the workflow is paused for safety since {pause.get('tripped_at')} "
            f"({pause.get('message')}): new runs are accepted and held; Resume workflow "
            "releases them"
        )
    return Liveness(dispatching=not reasons, reasons=reasons)


def list_workflows(
    session: Session,
    *,
    name: str | None = None,
    application_id: str | None = None,
    trigger: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Workflow]:
    stmt = select(Workflow)
    if name:
        stmt = stmt.where(Workflow.name_key.contains(name_key(name), autoescape=True))
    if application_id:
        stmt = stmt.where(Workflow.application_id == application_id)
    if trigger:
        stmt = stmt.where(Workflow.trigger_type == trigger)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Workflow.id > after)
    rows = session.execute(stmt.order_by(Workflow.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda w: w.id)


@dataclass(frozen=True)
class Applied:
    workflow: Workflow
    version: WorkflowVersion
    action: str  # "created" | "draft_created" | "draft_updated" | "unchanged"
    published: bool


def apply_document(session: Session, actor: Actor, raw: Any, publish_it: bool) -> Applied:
    """Definitions as code: create the workflow, or a new draft when the content changed;
    nothing when it is unchanged. With `publish_it`, publish the resulting draft."""
    document = _document_or_422(raw)
    existing = session.execute(
        select(Workflow).where(Workflow.name_key == name_key(document.name))
    ).scalar_one_or_none()
    digest = content_hash(document.canonical())
    if existing is None:
        version = create_workflow(session, actor, raw)
        workflow, action = version.workflow, "created"
    else:
        workflow = existing
        latest = latest_version(workflow)
        if latest is not None and latest.content_hash == digest:
            version, action = latest, "unchanged"
        else:
            had_draft = draft_of(workflow) is not None
            version = save_draft(session, actor, workflow.id, raw)
            action = "draft_updated" if had_draft else "draft_created"
    published = False
    if publish_it and version.state == VersionState.DRAFT:
        publish(session, actor, workflow.id, version.number)
        published = True
    elif publish_it and workflow.active_version != version.number:
        activate(session, actor, workflow.id, version.number)
        published = True
    return Applied(workflow, version, action, published)


@dataclass(frozen=True)
class RunActivity:
    last_run_at: dt.datetime | None
    failed_runs_24h: int


def run_activity(session: Session, workflow: Workflow) -> RunActivity:
    """When the workflow last started a run, and how many of its runs failed in 24 hours."""
    from grantflow.engine.queries import run_activity as engine_activity

    return RunActivity(*engine_activity(session, workflow.id))
