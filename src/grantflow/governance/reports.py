"""Reports: tables over Grantflow's own records, generated on demand or by a `report` job,
stored with their size and SHA-256 for download.

Kinds:
- `grants_by_application`: one row per grant, ordered by application, identity, role;
- `grants_by_identity`: one row per grant, ordered by identity, application, role;
- `run_outcomes_by_workflow`: per workflow, the number of runs created in a period per status;
- `audit_export`: the audit log's entries in a time range, oldest first, with their hashes
  (generating and downloading it also needs audit:read).

Formats: `csv` (a header row, then one row per record; a cell that starts with = + - @, a tab
or a carriage return is prefixed with ' so that no spreadsheet runs it as a formula) and
`json` (`{"kind", "generated_at", "params", "columns", "row_count", "rows"}`).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from grantflow import audit, timestamps
from grantflow.access.applications import find_application
from grantflow.access.identity_lookup import find_identity
from grantflow.access.models import Application, Grant, Identity
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.errors import NotFound, ValidationError
from grantflow.governance.control_checks import identity_label
from grantflow.governance.models import Report
from grantflow.queue.interface import Queue
from grantflow.schedules import runners
from grantflow.schedules.models import Job, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of

API = "/api/v1"
MAX_ROWS = 100_000  # a bigger report is refused: narrow the period or the filters
DEFAULT_PERIOD = dt.timedelta(days=30)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


class ReportKind(enum.StrEnum):
    GRANTS_BY_APPLICATION = "grants_by_application"
    GRANTS_BY_IDENTITY = "grants_by_identity"
    RUN_OUTCOMES_BY_WORKFLOW = "run_outcomes_by_workflow"
    AUDIT_EXPORT = "audit_export"


class ReportFormat(enum.StrEnum):
    CSV = "csv"
    JSON = "json"


CONTENT_TYPES = {
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.JSON: "application/json",
}


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ReportKind
    format: ReportFormat = ReportFormat.CSV
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="grants_*: status (active|revoked|all), application, identity; "
        "run_outcomes_by_workflow: since, until; audit_export: since, until, action",
    )


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
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]
    params: dict[str, Any]  # the effective parameters, as stored with the report


def _iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return timestamps.rfc3339(when)


def _path(where: str, *parts: str) -> str:
    return ".".join(p for p in (where, *parts) if p)


def _invalid(where: str, message: str) -> ValidationError:
    return ValidationError(f"{where}: {message}", details=[{"field": where, "message": message}])


def _too_many(count: int, where: str) -> None:
    if count > MAX_ROWS:
        raise ValidationError(
            f"{where or 'params'}: the report would have {count} rows, more than {MAX_ROWS}",
            next_action="narrow the period or the filters and generate it again",
            details=[{"field": where, "message": f"more than {MAX_ROWS} rows"}],
        )


def _check_period(since: dt.datetime, until: dt.datetime, where: str) -> None:
    if since >= until:
        raise _invalid(_path(where, "since"), "must be before until")


# --- the kinds --------------------------------------------------------------------------------

_GRANT_COLUMNS = {
    ReportKind.GRANTS_BY_APPLICATION: [
        "application",
        "role",
        "identity",
        "display_name",
        "lifecycle_state",
        "status",
        "granted_at",
        "granted_by",
        "expires_at",
        "revoked_at",
        "revoke_reason",
        "grant_id",
        "application_id",
        "identity_id",
    ],
    ReportKind.GRANTS_BY_IDENTITY: [
        "identity",
        "display_name",
        "department",
        "lifecycle_state",
        "application",
        "role",
        "status",
        "granted_at",
        "granted_by",
        "expires_at",
        "revoked_at",
        "revoke_reason",
        "grant_id",
        "identity_id",
        "application_id",
    ],
}


def _grants(
    kind: ReportKind, session: Session, now: dt.datetime, params: GrantParams, where: str
) -> Table:
    stmt = (
        select(Grant, Identity, Application)
        .join(Identity, Identity.id == Grant.identity_id)
        .join(Application, Application.id == Grant.application_id)
    )
    effective: dict[str, Any] = {"status": params.status}
    if params.status != "all":
        stmt = stmt.where(Grant.status == params.status)
    if params.application is not None:
        try:
            app = find_application(session, params.application)
        except NotFound:
            raise _invalid(
                _path(where, "application"),
                f"no application with id or name {params.application!r}",
            ) from None
        stmt = stmt.where(Grant.application_id == app.id)
        effective["application"] = {"id": app.id, "name": app.name}
    if params.identity is not None:
        try:
            person = find_identity(session, params.identity)
        except NotFound:
            raise _invalid(
                _path(where, "identity"),
                f"no identity with id, email or userName {params.identity!r}",
            ) from None
        stmt = stmt.where(Grant.identity_id == person.id)
        effective["identity"] = {"id": person.id, "label": identity_label(person)}
    _too_many(
        session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one(), where
    )
    rows = []
    for grant, identity, app in session.execute(stmt).all():
        rows.append(
            {
                "application": app.name,
                "role": grant.role or None,  # (as the grants API shows it)
                "identity": identity_label(identity),
                "display_name": identity.display_name,
                "department": identity.department,
                "lifecycle_state": identity.lifecycle_state,
                "status": grant.status,
                "granted_at": _iso(grant.granted_at),
                "granted_by": grant.granted_by,
                "expires_at": _iso(grant.expires_at),
                "revoked_at": _iso(grant.revoked_at),
                "revoke_reason": grant.revoke_reason,
                "grant_id": grant.id,
                "application_id": app.id,
                "identity_id": identity.id,
            }
        )
    if kind == ReportKind.GRANTS_BY_APPLICATION:
        order = ("application", "identity", "role", "granted_at", "grant_id")
    else:
        order = ("identity", "application", "role", "granted_at", "grant_id")
    rows.sort(key=lambda r: tuple(str(r[k] or "").lower() for k in order))
    columns = _GRANT_COLUMNS[kind]
    return Table(columns, [{c: r[c] for c in columns} for r in rows], effective)


_STATUSES = [s.value for s in RunStatus]
_RUN_COLUMNS = ["workflow", "workflow_id", "application", "trigger", "total", *_STATUSES]


def _run_outcomes(session: Session, now: dt.datetime, params: PeriodParams, where: str) -> Table:
    since, until = params.period(now)
    _check_period(since, until, where)
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
    _too_many(len(workflows), where)
    rows = []
    for workflow, app in sorted(workflows, key=lambda w: (w[0].name.lower(), w[0].id)):
        per_status = counts.get(workflow.id, {})
        rows.append(
            {
                "workflow": workflow.name,
                "workflow_id": workflow.id,
                "application": app.name if app else None,
                "trigger": workflow.trigger_type,
                "total": sum(per_status.values()),
                **{status: per_status.get(status, 0) for status in _STATUSES},
            }
        )
    return Table(_RUN_COLUMNS, rows, {"since": _iso(since), "until": _iso(until)})


_AUDIT_COLUMNS = [
    "id",
    "at",
    "actor",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "summary",
    "request_id",
    "prev_hash",
    "hash",
]


def _audit_export(session: Session, now: dt.datetime, params: AuditParams, where: str) -> Table:
    since, until = params.period(now)
    _check_period(since, until, where)
    stmt = select(AuditEntry).where(AuditEntry.at >= since, AuditEntry.at < until)
    if params.action:
        if params.action.endswith(".*"):
            stmt = stmt.where(AuditEntry.action.startswith(params.action[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == params.action)
    _too_many(
        session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one(), where
    )
    rows = [
        {
            "id": e.id,
            "at": _iso(e.at),
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
        for e in session.execute(stmt.order_by(AuditEntry.id)).scalars()
    ]
    effective: dict[str, Any] = {"since": _iso(since), "until": _iso(until)}
    if params.action:
        effective["action"] = params.action
    return Table(_AUDIT_COLUMNS, rows, effective)


@dataclass(frozen=True)
class KindSpec:
    params: type[BaseModel]
    build: Callable[[Session, dt.datetime, Any, str], Table]
    description: str


KINDS: dict[ReportKind, KindSpec] = {
    ReportKind.GRANTS_BY_APPLICATION: KindSpec(
        GrantParams,
        lambda s, now, p, w: _grants(ReportKind.GRANTS_BY_APPLICATION, s, now, p, w),
        "one row per grant, by application (params: status, application, identity)",
    ),
    ReportKind.GRANTS_BY_IDENTITY: KindSpec(
        GrantParams,
        lambda s, now, p, w: _grants(ReportKind.GRANTS_BY_IDENTITY, s, now, p, w),
        "one row per grant, by identity (params: status, application, identity)",
    ),
    ReportKind.RUN_OUTCOMES_BY_WORKFLOW: KindSpec(
        PeriodParams,
        _run_outcomes,
        "runs created in [since, until) per workflow and status (default: the last 30 days)",
    ),
    ReportKind.AUDIT_EXPORT: KindSpec(
        AuditParams,
        _audit_export,
        "audit entries in [since, until), oldest first (params: since, until, action)",
    ),
}


# --- rendering --------------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """A value as CSV text; text a spreadsheet would read as a formula is prefixed with '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def render(kind: ReportKind, fmt: ReportFormat, table: Table, generated_at: dt.datetime) -> bytes:
    if fmt == ReportFormat.CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow([csv_cell(row.get(c)) for c in table.columns])
        return buffer.getvalue().encode("utf-8")
    document = {
        "kind": kind.value,
        "generated_at": _iso(generated_at),
        "params": table.params,
        "columns": table.columns,
        "row_count": len(table.rows),
        "rows": table.rows,
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --- generating -------------------------------------------------------------------------------


def _enum(kind: type[enum.StrEnum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise _invalid(where, f"{value!r} is not one of {allowed}") from None


def _params(model: type[BaseModel], params: Any, where: str) -> BaseModel:
    if not isinstance(params, dict):
        raise _invalid(where or "params", "must be an object")
    try:
        return model.model_validate(params)
    except pydantic.ValidationError as exc:
        details = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown parameter for this kind of report"
            path = _path(where, *(str(p) for p in err["loc"]))
            details.append({"field": path, "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise ValidationError(summary, details=details) from None


def check_request(config: dict[str, Any], where: str = "body") -> tuple[ReportKind, ReportFormat]:
    """Validate a request or a job's config: kind, format and the kind's params."""
    if not isinstance(config, dict):
        raise _invalid(where or "config", "must be an object with kind, format and params")
    unknown = sorted(set(config) - {"kind", "format", "params"})
    if unknown:
        raise _invalid(
            _path(where, unknown[0]), "unknown field; the fields are kind, format, params"
        )
    if "kind" not in config:
        raise _invalid(_path(where, "kind"), "missing: one of " + ", ".join(ReportKind))
    kind = _enum(ReportKind, config["kind"], _path(where, "kind"))
    fmt = _enum(ReportFormat, config.get("format", "csv"), _path(where, "format"))
    _params(KINDS[kind].params, config.get("params") or {}, _path(where, "params"))
    return kind, fmt


def generate(
    session: Session,
    actor: Actor,
    kind: ReportKind | str,
    format: ReportFormat | str = ReportFormat.CSV,
    params: dict[str, Any] | None = None,
    *,
    job_id: str | None = None,
    where: str = "body",
) -> Report:
    """Build the report, store it with its SHA-256, and audit it (report.generated)."""
    actor.require(Permission.JOB_MANAGE)
    kind = ReportKind(_enum(ReportKind, kind, _path(where, "kind")))
    fmt = ReportFormat(_enum(ReportFormat, format, _path(where, "format")))
    if kind == ReportKind.AUDIT_EXPORT:
        actor.require(Permission.AUDIT_READ)
    spec = KINDS[kind]
    parsed = _params(spec.params, params or {}, _path(where, "params"))
    now = utcnow()
    table = spec.build(session, now, parsed, _path(where, "params"))
    content = render(kind, fmt, table, now)
    digest = hashlib.sha256(content).hexdigest()
    report = Report(
        kind=kind.value,
        format=fmt.value,
        params=table.params,
        rows=len(table.rows),
        size=len(content),
        sha256=digest,
        content=content,
        job_id=job_id,
        created_by=actor.label,
        created_at=now,
    )
    session.add(report)
    session.flush()
    audit.record(
        session,
        actor,
        "report.generated",
        "report",
        report.id,
        {
            "kind": kind.value,
            "format": fmt.value,
            "params": table.params,
            "rows": report.rows,
            "size": report.size,
            "sha256": digest,
            "job_id": job_id,
        },
    )
    return report


def get_report(session: Session, report_id: str) -> Report:
    report = session.get(Report, report_id, options=[defer(Report.content)])
    if report is None:
        report = by_prefix(session, Report, report_id, "report")
    if report is None:
        raise NotFound(
            f"report {report_id} does not exist", target_type="report", target_id=report_id
        )
    return report


@dataclass(frozen=True)
class Download:
    content: bytes
    content_type: str
    filename: str
    sha256: str


def filename(report: Report) -> str:
    return f"{report.kind}-{report.created_at:%Y%m%dT%H%M%SZ}-{report.id[:8]}.{report.format}"


def download(session: Session, actor: Actor, report_id: str) -> Download:
    """The stored bytes; an audit export needs audit:read as well."""
    actor.require(Permission.JOB_READ)
    report = get_report(session, report_id)
    if report.kind == ReportKind.AUDIT_EXPORT:
        actor.require(Permission.AUDIT_READ)
    return Download(
        content=report.content,
        content_type=CONTENT_TYPES[ReportFormat(report.format)],
        filename=filename(report),
        sha256=report.sha256,
    )


def list_reports(
    session: Session, *, kind: str | None = None, cursor: str | None = None, limit: int = 50
) -> Page[Report]:
    """Newest first, without their content."""
    stmt = select(Report).options(defer(Report.content))
    if kind:
        stmt = stmt.where(Report.kind == kind)
    before = decode_cursor(cursor, str)
    if before is not None:
        stmt = stmt.where(Report.id < before)
    rows = session.execute(stmt.order_by(Report.id.desc()).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda r: r.id)


def view(report: Report) -> dict[str, Any]:
    return {
        "id": report.id,
        "kind": report.kind,
        "format": report.format,
        "params": report.params or {},
        "rows": report.rows,
        "size": report.size,
        "sha256": report.sha256,
        "content_type": CONTENT_TYPES[ReportFormat(report.format)],
        "filename": filename(report),
        "job_id": report.job_id,
        "created_by": report.created_by,
        "created_at": report.created_at,
        "link": f"{API}/reports/{report.id}",
        "content_link": f"{API}/reports/{report.id}/content",
    }


# --- the report job ---------------------------------------------------------------------------

_SCHEDULER = Actor.system("scheduler")


def _check(config: dict[str, Any]) -> None:
    check_request(config or {}, "body.config")


def _run(session: Session, queue: Queue, job: Job, occurrence: Occurrence) -> runners.Result:
    config = job.config or {}
    report = generate(
        session,
        _SCHEDULER,
        config.get("kind", ""),
        config.get("format", "csv"),
        config.get("params") or {},
        job_id=job.id,
        where="body.config",
    )
    return runners.Result("report", report.id, "succeeded")


runners.register("report", runners.Runner(_check, _run))
