"""Reports: tables over Grantflow's own records, generated on demand or by a `report` job,
stored with their size and SHA-256 for download. The kinds and their rows are
`report_rows`; a report's file, written in chunks as its rows are read, is `report_files`.

A report of up to INLINE_ROWS rows is written in the request (or the job) that asks for it; a
larger one, up to MAX_ROWS, is `generating` until the workers' timer (`generate_due`) has
written it, in one transaction of its own. Formats: `csv` and `json` (`report_files`).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, defer

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.governance import report_files
from grantflow.governance.models import Report
from grantflow.governance.report_rows import KINDS, ReportKind, invalid, iso, path
from grantflow.queue.interface import Queue
from grantflow.schedules import runners
from grantflow.schedules.models import Job, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.faults import fault_text
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of

log = structlog.get_logger("grantflow.governance")

API = "/api/v1"
MAX_ROWS = 1_000_000  # a bigger report is refused: narrow the period or the filters
INLINE_ROWS = 20_000  # a report of more rows is written by the workers, not in the request
# SQLite has one writer, which a report holds while it is written (about 2 s a 100,000 rows)
SQLITE_MAX_ROWS = 100_000


class ReportFormat(enum.StrEnum):
    CSV = "csv"
    JSON = "json"


CONTENT_TYPES = {
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.JSON: "application/json",
}


class ReportStatus(enum.StrEnum):
    GENERATING = "generating"
    READY = "ready"
    FAILED = "failed"


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ReportKind
    format: ReportFormat = ReportFormat.CSV
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="grants_*: status (active|revoked|all), application, identity; "
        "run_outcomes_by_workflow: since, until; audit_export: since, until, action",
    )


def _too_many(count: int, where: str, dialect: str) -> None:
    limit = MAX_ROWS if dialect == "postgresql" else SQLITE_MAX_ROWS
    if count > limit:
        on_sqlite = "" if limit == MAX_ROWS else f" (on SQLite; on PostgreSQL {MAX_ROWS})"
        raise ValidationError(
            f"{where or 'params'}: the report would have {count} rows, more than {limit}"
            + on_sqlite,
            next_action="narrow the period or the filters and generate it again",
            details=[{"field": where, "message": f"more than {limit} rows"}],
        )


# --- generating -------------------------------------------------------------------------------


def _enum(kind: type[enum.StrEnum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise invalid(where, f"{value!r} is not one of {allowed}") from None


def _params(model: type[BaseModel], params: Any, where: str) -> BaseModel:
    if not isinstance(params, dict):
        raise invalid(where or "params", "must be an object")
    try:
        return model.model_validate(params)
    except pydantic.ValidationError as exc:
        details = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown parameter for this kind of report"
            field = path(where, *(str(p) for p in err["loc"]))
            details.append({"field": field, "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise ValidationError(summary, details=details) from None


def check_request(config: dict[str, Any], where: str = "body") -> tuple[ReportKind, ReportFormat]:
    """Validate a request or a job's config: kind, format and the kind's params."""
    if not isinstance(config, dict):
        raise invalid(where or "config", "must be an object with kind, format and params")
    unknown = sorted(set(config) - {"kind", "format", "params"})
    if unknown:
        raise invalid(path(where, unknown[0]), "unknown field; the fields are kind, format, params")
    if "kind" not in config:
        raise invalid(path(where, "kind"), "missing: one of " + ", ".join(ReportKind))
    kind = _enum(ReportKind, config["kind"], path(where, "kind"))
    fmt = _enum(ReportFormat, config.get("format", "csv"), path(where, "format"))
    _params(KINDS[kind].params, config.get("params") or {}, path(where, "params"))
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
    inline: bool = False,
) -> Report:
    """Check the request and store the report: written now (and audited: report.generated) if
    it has at most INLINE_ROWS rows (or `inline`), else `generating` for the workers to write.
    On SQLite, whose one writer a report holds while it is written, at most SQLITE_MAX_ROWS."""
    actor.require(Permission.JOB_MANAGE)
    kind = ReportKind(_enum(ReportKind, kind, path(where, "kind")))
    fmt = ReportFormat(_enum(ReportFormat, format, path(where, "format")))
    if kind == ReportKind.AUDIT_EXPORT:
        actor.require(Permission.AUDIT_READ)
    spec = KINDS[kind]
    parsed = _params(spec.params, params or {}, path(where, "params"))
    now = utcnow()
    plan = spec.plan(session, now, parsed, path(where, "params"))
    _too_many(plan.count, path(where, "params"), session.get_bind().dialect.name)
    report = Report(
        kind=kind.value,
        format=fmt.value,
        params=plan.params,
        status=ReportStatus.GENERATING.value,
        rows=plan.count,
        size=0,
        sha256="",
        job_id=job_id,
        created_by=actor.label,
        created_by_id=actor.user_id,
        request_id=actor.request_id,
        created_at=now,
    )
    session.add(report)
    session.flush()
    if plan.count <= INLINE_ROWS or inline:
        _write(session, report, actor, now)
    return report


def _write(session: Session, report: Report, actor: Actor, now: dt.datetime) -> None:
    """Write the report's file from its stored parameters, a chunk at a time, and audit it."""
    kind, fmt = ReportKind(report.kind), ReportFormat(report.format)
    spec = KINDS[kind]
    rows = spec.rows(session, report.params)
    out = report_files.ChunkWriter(session, report.id)
    columns = spec.columns
    if fmt == ReportFormat.CSV:
        count = report_files.write_csv(out, columns, rows)
    else:
        # (params with their keys sorted: as stored, jsonb reorders them)
        params = json.loads(json.dumps(report.params, sort_keys=True))
        head = {"kind": kind.value, "generated_at": iso(now), "params": params}
        count = report_files.write_json(out, head, columns, rows)
    report.sha256 = out.close()
    report.size = out.size
    report.rows = count
    report.status = ReportStatus.READY.value
    audit.record(
        session,
        actor,
        "report.generated",
        "report",
        report.id,
        {
            "kind": kind.value,
            "format": fmt.value,
            "params": report.params,
            "rows": report.rows,
            "size": report.size,
            "sha256": report.sha256,
            "job_id": report.job_id,
        },
    )


def generate_due(session: Session, now: dt.datetime | None = None) -> bool:
    """The workers' timer: write the oldest report still `generating`, in this transaction.
    True when it took one (the worker calls again at once). A failure is kept on the report
    (`failed`, in words safe to show); nothing of it is stored."""
    report = session.execute(
        select(Report)
        .where(Report.status == ReportStatus.GENERATING.value)
        .order_by(Report.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if report is None:
        return False
    requester = Actor(  # (its audit entry names who asked, as if written in their request)
        label=report.created_by,
        user_id=report.created_by_id,
        request_id=report.request_id,
        permissions=frozenset({Permission.JOB_MANAGE}),
    )
    try:
        with session.begin_nested():
            _write(session, report, requester, now or utcnow())
    except Exception as exc:  # (whatever it is, the report says so and the others go on)
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # the database is gone: the report is written once it is back
        report.status = ReportStatus.FAILED.value
        report.error = fault_text(exc)
        log.error(
            "report.generation_failed",
            report_id=report.id,
            error=report.error,
            exc_info=None if isinstance(exc, StatementError) else exc,
        )
    if report.job_id is not None:
        _settle_occurrence(session, report)
    return True


def _settle_occurrence(session: Session, report: Report) -> None:
    """The report job's occurrence that asked for `report` ends as the report did: until the
    workers wrote it, the occurrence had no outcome (a run's occurrence waits for its run)."""
    failed = report.status == ReportStatus.FAILED.value
    session.execute(
        update(Occurrence)
        .where(
            Occurrence.job_id == report.job_id,
            Occurrence.result_type == "report",
            Occurrence.result_id == report.id,
        )
        .values(
            outcome="failed" if failed else "succeeded",
            reason=f"report failed: {report.error}" if failed else Occurrence.reason,
        )
    )


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
    report_id: str
    content_type: str
    filename: str
    size: int
    sha256: str
    chunks: int  # read one by one with `chunk` (a report from before 0032: one)


def filename(report: Report) -> str:
    return f"{report.kind}-{report.created_at:%Y%m%dT%H%M%SZ}-{report.id[:8]}.{report.format}"


def download(session: Session, actor: Actor, report_id: str) -> Download:
    """What the stored file is (read it with `chunks`); an audit export needs audit:read as
    well. A report not written yet, or whose writing failed, is a 409 saying so."""
    actor.require(Permission.JOB_READ)
    report = get_report(session, report_id)
    if report.kind == ReportKind.AUDIT_EXPORT:
        actor.require(Permission.AUDIT_READ)
    if report.status == ReportStatus.GENERATING:
        raise Conflict(
            f"report {report.id} is being generated ({report.rows} rows): not ready yet",
            next_action=f"download it once GET {API}/reports/{report.id} says ready",
            code="report_generating",
        )
    if report.status == ReportStatus.FAILED:
        raise Conflict(
            f"report {report.id} could not be generated: {report.error}",
            next_action="generate it again (POST /api/v1/reports)",
            code="report_failed",
        )
    return Download(
        report_id=report.id,
        content_type=CONTENT_TYPES[ReportFormat(report.format)],
        filename=filename(report),
        size=report.size,
        sha256=report.sha256,
        chunks=report_files.count(session, report.id),
    )


def chunk(session: Session, report_id: str, seq: int) -> bytes | None:
    """The report's chunk `seq` (None past the last): a ready report is read a chunk at a
    time, each in a read of its own."""
    return report_files.chunk(session, report_id, seq)


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
        "status": report.status,
        "error": report.error,
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
    # a report the workers write: no outcome until they did (`_settle_occurrence`)
    written = report.status == ReportStatus.READY.value
    return runners.Result("report", report.id, "succeeded" if written else None)


runners.register("report", runners.Runner(_check, _run))
