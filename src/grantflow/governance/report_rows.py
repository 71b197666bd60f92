"""The kinds of report and their rows: each kind checks its parameters against the data and
settles them (`plan`: the effective parameters stored with the report, its columns, how many
rows it will have), then reads its rows from those parameters alone, in order, a page of the
database's at a time (`rows`), so that a report is written where it is generated: in the
request, or by a worker from the stored report.

Kinds:
- `grants_by_application`: one row per grant, ordered by application, identity, role;
- `grants_by_identity`: one row per grant, ordered by identity, application, role;
- `run_outcomes_by_workflow`: per workflow, the number of runs created in a period per status;
- `audit_export`: the audit log's entries in a time range, oldest first, with their hashes.

Names sort by their lower-cased form (PostgreSQL's lower(), Python's on SQLite: both fold
non-ASCII letters), letter by letter in code-point order: `_x` before `ada`, `émile` after `zed`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.access.applications import find_application
from grantflow.access.identity_lookup import find_identity
from grantflow.access.models import Application, Grant, Identity
from grantflow.audit.models import AuditEntry
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.errors import NotFound, ValidationError
from grantflow.governance.control_checks import identity_label

DEFAULT_PERIOD = dt.timedelta(days=30)
PAGE = 2_000  # rows read from the database at a time


class ReportKind(enum.StrEnum):
    GRANTS_BY_APPLICATION = "grants_by_application"
    GRANTS_BY_IDENTITY = "grants_by_identity"
    RUN_OUTCOMES_BY_WORKFLOW = "run_outcomes_by_workflow"
    AUDIT_EXPORT = "audit_export"


# --- parameters per kind ----------------------------------------------------------------------


class GrantParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["active", "revoked", "all"] = "active"
    application: str | None = Field(None, min_length=1, max_length=100)
    identity: str | None = Field(None, min_length=1, max_length=320)


class PeriodParams(BaseModel):
    """[since, until): until defaults to now, since to 30 days before until."""

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None

    def period(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        until = self.until or now
        return self.since or until - DEFAULT_PERIOD, until


class AuditParams(PeriodParams):
    action: str | None = Field(
        None, min_length=1, max_length=100, description="an action, or a prefix like grant.*"
    )


@dataclass(frozen=True)
class Plan:
    params: dict[str, Any]  # the effective parameters, as stored with the report
    count: int  # the rows it will have (the rows written may differ if the data moves)


def iso(when: dt.datetime | None) -> str | None:
    return None if when is None else timestamps.rfc3339(when)


def path(where: str, *parts: str) -> str:
    return ".".join(p for p in (where, *parts) if p)


def invalid(where: str, message: str) -> ValidationError:
    return ValidationError(f"{where}: {message}", details=[{"field": where, "message": message}])


def _period(params: PeriodParams, now: dt.datetime, where: str) -> tuple[dt.datetime, dt.datetime]:
    since, until = params.period(now)
    if since >= until:
        raise invalid(path(where, "since"), "must be before until")
    return since, until


def _count(session: Session, stmt: Any) -> int:
    return int(session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())


def _paged(session: Session, stmt: Any) -> Iterator[Any]:
    """The statement's rows, PAGE at a time (a server-side cursor on PostgreSQL)."""
    with session.execute(stmt.execution_options(yield_per=PAGE)) as rows:
        yield from rows


# --- grants -----------------------------------------------------------------------------------

_GRANT_COLUMNS = {
    ReportKind.GRANTS_BY_APPLICATION: [
        "application", "role", "identity", "display_name", "lifecycle_state", "status",
        "granted_at", "granted_by", "expires_at", "revoked_at", "revoke_reason", "grant_id",
        "application_id", "identity_id",
    ],
    ReportKind.GRANTS_BY_IDENTITY: [
        "identity", "display_name", "department", "lifecycle_state", "application", "role",
        "status", "granted_at", "granted_by", "expires_at", "revoked_at", "revoke_reason",
        "grant_id", "identity_id", "application_id",
    ],
}  # fmt: skip


def _grants_where(effective: dict[str, Any]) -> list[ColumnElement[bool]]:
    where = []
    if effective["status"] != "all":
        where.append(Grant.status == effective["status"])
    if "application" in effective:
        where.append(Grant.application_id == effective["application"]["id"])
    if "identity" in effective:
        where.append(Grant.identity_id == effective["identity"]["id"])
    return where


def _plan_grants(session: Session, now: dt.datetime, params: GrantParams, where: str) -> Plan:
    effective: dict[str, Any] = {"status": params.status}
    if params.application is not None:
        try:
            app = find_application(session, params.application)
        except NotFound:
            raise invalid(
                path(where, "application"),
                f"no application with id or name {params.application!r}",
            ) from None
        effective["application"] = {"id": app.id, "name": app.name}
    if params.identity is not None:
        try:
            person = find_identity(session, params.identity)
        except NotFound:
            raise invalid(
                path(where, "identity"),
                f"no identity with id, email or userName {params.identity!r}",
            ) from None
        effective["identity"] = {"id": person.id, "label": identity_label(person)}
    count = _count(session, select(Grant.id).where(*_grants_where(effective)))
    return Plan(effective, count)


def _label() -> ColumnElement[str]:
    """`identity_label` in SQL: a deleted identity by the e-mail or userName it had."""
    attributes = Identity.attributes
    had = func.coalesce(
        func.nullif(attributes["deleted_email"].as_string(), ""),
        func.nullif(attributes["deleted_user_name"].as_string(), ""),
        func.nullif(Identity.email, ""),
        Identity.user_name,
    )
    has = func.coalesce(func.nullif(Identity.email, ""), Identity.user_name)
    return case((Identity.deleted_at.is_not(None), had), else_=has)


def _grant_rows(kind: ReportKind, session: Session, effective: dict[str, Any]) -> Iterator[Any]:
    label = _label().label("label")
    role = func.coalesce(Grant.role, literal(""))
    postgresql = session.get_bind().dialect.name == "postgresql"

    def key(column: Any) -> Any:
        # lower-cased (SQLite's lower() folds ASCII only: Python's, registered on SQLite
        # connections), then in code-point order ("C" on PostgreSQL, SQLite's own)
        if postgresql:
            return func.lower(column).collate("C")
        return func.grantflow_lower(column)

    people = (key(label), key(Application.name))
    order = (
        (key(Application.name), key(label)) if kind == ReportKind.GRANTS_BY_APPLICATION else people
    )
    columns = (
        Grant.id, Grant.role, Grant.status, Grant.granted_at, Grant.granted_by, Grant.expires_at,
        Grant.revoked_at, Grant.revoke_reason, Grant.application_id, Grant.identity_id,
        Application.name.label("application"), Identity.display_name, Identity.department,
        Identity.lifecycle_state, label,
    )  # fmt: skip
    stmt = (
        select(*columns)
        .join(Identity, Identity.id == Grant.identity_id)
        .join(Application, Application.id == Grant.application_id)
        .where(*_grants_where(effective))
        .order_by(*order, key(role), Grant.granted_at, Grant.id)
    )
    for g in _paged(session, stmt):
        yield {
            "application": g.application,
            "role": g.role or None,  # (as the grants API shows it)
            "identity": g.label,
            "display_name": g.display_name,
            "department": g.department,
            "lifecycle_state": g.lifecycle_state,
            "status": g.status,
            "granted_at": iso(g.granted_at),
            "granted_by": g.granted_by,
            "expires_at": iso(g.expires_at),
            "revoked_at": iso(g.revoked_at),
            "revoke_reason": g.revoke_reason,
            "grant_id": g.id,
            "application_id": g.application_id,
            "identity_id": g.identity_id,
        }


# --- run outcomes -----------------------------------------------------------------------------

_STATUSES = [s.value for s in RunStatus]
_RUN_COLUMNS = ["workflow", "workflow_id", "application", "trigger", "total", *_STATUSES]


def _plan_run_outcomes(
    session: Session, now: dt.datetime, params: PeriodParams, where: str
) -> Plan:
    since, until = _period(params, now, where)
    count = _count(session, select(Workflow.id))
    return Plan({"since": iso(since), "until": iso(until)}, count)


def _run_outcome_rows(session: Session, effective: dict[str, Any]) -> Iterator[dict[str, Any]]:
    since = dt.datetime.fromisoformat(effective["since"])
    until = dt.datetime.fromisoformat(effective["until"])
    counts: dict[str, dict[str, int]] = {}
    for workflow_id, status, count in session.execute(
        select(Run.workflow_id, Run.status, func.count())
        .where(Run.created_at >= since, Run.created_at < until)
        .group_by(Run.workflow_id, Run.status)
    ).all():
        counts.setdefault(workflow_id, {})[status] = count
    workflows = session.execute(
        select(Workflow, Application).join(
            Application, Application.id == Workflow.application_id, isouter=True
        )
    ).all()
    for workflow, app in sorted(workflows, key=lambda w: (w[0].name.lower(), w[0].id)):
        per_status = counts.get(workflow.id, {})
        yield {
            "workflow": workflow.name,
            "workflow_id": workflow.id,
            "application": app.name if app else None,
            "trigger": workflow.trigger_type,
            "total": sum(per_status.values()),
            **{status: per_status.get(status, 0) for status in _STATUSES},
        }


# --- the audit log ----------------------------------------------------------------------------

_AUDIT_COLUMNS = [
    "id", "at", "actor", "actor_id", "action", "target_type", "target_id", "summary",
    "request_id", "prev_hash", "hash",
]  # fmt: skip


def _audit_where(effective: dict[str, Any]) -> list[ColumnElement[bool]]:
    since = dt.datetime.fromisoformat(effective["since"])
    until = dt.datetime.fromisoformat(effective["until"])
    where = [AuditEntry.at >= since, AuditEntry.at < until]
    action = effective.get("action")
    if action and action.endswith(".*"):
        where.append(AuditEntry.action.startswith(action[:-1], autoescape=True))
    elif action:
        where.append(AuditEntry.action == action)
    return where


def _plan_audit_export(session: Session, now: dt.datetime, params: AuditParams, where: str) -> Plan:
    since, until = _period(params, now, where)
    effective: dict[str, Any] = {"since": iso(since), "until": iso(until)}
    if params.action:
        effective["action"] = params.action
    count = _count(session, select(AuditEntry.id).where(*_audit_where(effective)))
    return Plan(effective, count)


def _audit_rows(session: Session, effective: dict[str, Any]) -> Iterator[dict[str, Any]]:
    table = AuditEntry.__table__
    stmt = select(*table.columns).where(*_audit_where(effective)).order_by(table.c.id)
    for e in _paged(session, stmt):
        yield {
            "id": e.id,
            "at": iso(e.at),
            "actor": e.actor,
            "actor_id": e.actor_id,
            "action": e.action,
            "target_type": e.target_type,
            "target_id": e.target_id,
            "summary": e.summary,
            "request_id": e.request_id,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        }


# --- the table of kinds -----------------------------------------------------------------------


@dataclass(frozen=True)
class KindSpec:
    params: type[BaseModel]
    plan: Callable[[Session, dt.datetime, Any, str], Plan]
    rows: Callable[[Session, dict[str, Any]], Iterator[dict[str, Any]]]
    columns: list[str]
    description: str


KINDS: dict[ReportKind, KindSpec] = {
    ReportKind.GRANTS_BY_APPLICATION: KindSpec(
        GrantParams,
        _plan_grants,
        lambda s, e: _grant_rows(ReportKind.GRANTS_BY_APPLICATION, s, e),
        _GRANT_COLUMNS[ReportKind.GRANTS_BY_APPLICATION],
        "one row per grant, by application (params: status, application, identity)",
    ),
    ReportKind.GRANTS_BY_IDENTITY: KindSpec(
        GrantParams,
        _plan_grants,
        lambda s, e: _grant_rows(ReportKind.GRANTS_BY_IDENTITY, s, e),
        _GRANT_COLUMNS[ReportKind.GRANTS_BY_IDENTITY],
        "one row per grant, by identity (params: status, application, identity)",
    ),
    ReportKind.RUN_OUTCOMES_BY_WORKFLOW: KindSpec(
        PeriodParams,
        _plan_run_outcomes,
        _run_outcome_rows,
        _RUN_COLUMNS,
        "runs created in [since, until) per workflow and status (default: the last 30 days)",
    ),
    ReportKind.AUDIT_EXPORT: KindSpec(
        AuditParams,
        _plan_audit_export,
        _audit_rows,
        _AUDIT_COLUMNS,
        "audit entries in [since, until), oldest first (params: since, until, action)",
    ),
}
