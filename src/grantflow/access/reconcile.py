"""Reconciliation: list every account in an application's target (SCIM Users, page by page)
and compare them with the application's active grants.

Accounts are listed by `reconcile_target` and compared with the grants by `reconcile_compare`
(which says how an account is matched, and what counts as an orphan, a duplicate, a missing
account or a mismatch). The outcome is always stored: a target that cannot be read gives a
`failed` report whose error says why in plain words.
"""

from __future__ import annotations

import csv
import enum
import io
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from grantflow import audit
from grantflow.access.applications import find_application, get_application
from grantflow.access.models import Application, ReconciliationReport
from grantflow.access.reconcile_compare import active_grants, compare, load_directory
from grantflow.access.reconcile_target import Listing, choose_connection, list_accounts
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections.access import ConnectionAccess
from grantflow.errors import GrantflowError, NotFound, PermanentError
from grantflow.store.database import Database
from grantflow.store.ids import by_prefix
from grantflow.store.pagination import Page, decode_cursor, page_of
from grantflow.strict import Int

log = structlog.get_logger("grantflow.reconcile")

DEFAULT_PAGE_SIZE = 100

CSV_COLUMNS = (
    "kind",
    "account_id",
    "user_name",
    "email",
    "identity_id",
    "identity_email",
    "identity_state",
    "grant_id",
    "detail",
)


class ReportStatus(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="the SCIM connection (name or id); needed only when the application "
        "has several",
    )
    page_size: Int = Field(
        DEFAULT_PAGE_SIZE,
        ge=1,
        le=1000,
        description="accounts asked for per SCIM request (the target may answer fewer)",
    )


# --- running one ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    application_id: str
    application_name: str
    connection_id: str
    connection_name: str
    base_url: str


def prepare(session: Session, actor: Actor, application: str, connection: str | None) -> Target:
    """Check the permission and choose the connection; raises before anything is stored."""
    actor.require(Permission.RECONCILE)
    app = find_application(session, application)
    chosen = choose_connection(session, app, connection)
    return Target(app.id, app.name, chosen.id, chosen.name, chosen.base_url)


def reconcile(
    database: Database,
    access: ConnectionAccess,
    actor: Actor,
    application: str,
    request: ReconcileRequest | None = None,
) -> str:
    """Run one reconciliation of `application` (id or name) and store its report; returns
    the report's id. A target that cannot be read gives a stored `failed` report."""
    request = request or ReconcileRequest()
    with database.transaction() as session:
        target = prepare(session, actor, application, request.connection)
    listing: Listing | None = None
    failure: GrantflowError | None = None
    try:
        listing = list_accounts(
            access, target.application_id, target.connection_name, request.page_size
        )
    except GrantflowError as exc:
        failure = exc
    except Exception as exc:  # a fault outside the classified ones still leaves a record
        log.exception("reconcile.unexpected", application_id=target.application_id)
        failure = PermanentError(
            f"reading the accounts failed unexpectedly: {type(exc).__name__}",
            code="internal_error",
            next_action="report this with the report id; it is a fault in Grantflow",
        )
    with database.transaction() as session:
        return _store(session, actor, target, listing, failure).id


def _store(
    session: Session,
    actor: Actor,
    target: Target,
    listing: Listing | None,
    failure: GrantflowError | None,
) -> ReconciliationReport:
    connection = {
        "id": target.connection_id,
        "name": target.connection_name,
        "base_url": target.base_url,
    }
    report = ReconciliationReport(
        application_id=target.application_id,
        connection_id=target.connection_id,
        created_by=actor.label,
    )
    if listing is None:
        assert failure is not None
        report.status = ReportStatus.FAILED
        report.error = failure.message
        report.items = []
        report.summary = {
            "connection": connection,
            "counts": {},
            "failure": {
                "class": str(failure.failure_class),
                "code": failure.code,
                "next_action": failure.next_action,
            },
        }
    else:
        result = compare(
            listing.accounts,
            load_directory(session),
            active_grants(session, target.application_id),
        )
        report.status = ReportStatus.COMPLETED
        report.items = result.items
        report.summary = {
            "connection": connection,
            "counts": result.summary,
            "pages": listing.pages,
            "failure": None,
        }
    session.add(report)
    session.flush()
    audit.record(
        session,
        actor,
        f"reconciliation.{report.status}",
        "reconciliation",
        report.id,
        {
            "application_id": target.application_id,
            "application": target.application_name,
            "connection": target.connection_name,
            "status": report.status,
            "counts": report.summary["counts"],
            "error": report.error,
        },
    )
    log.info(
        "reconcile.done",
        report_id=report.id,
        application_id=target.application_id,
        status=report.status,
        **report.summary["counts"],
    )
    return report


# --- reading ----------------------------------------------------------------------------------


def get_report(session: Session, report_id: str) -> ReconciliationReport:
    report = session.get(ReconciliationReport, report_id) or by_prefix(
        session, ReconciliationReport, report_id, "reconciliation report"
    )
    if report is None:
        raise NotFound(
            f"reconciliation report {report_id} does not exist",
            target_type="reconciliation",
            target_id=report_id,
        )
    return report


def list_reports(
    session: Session, application_id: str, *, cursor: str | None = None, limit: int = 50
) -> Page[ReconciliationReport]:
    """The application's reports, newest first (ids are time-ordered)."""
    get_application(session, application_id)
    stmt = (
        select(ReconciliationReport)
        .options(defer(ReconciliationReport.items))  # (a list shows the counts only)
        .where(ReconciliationReport.application_id == application_id)
    )
    before = decode_cursor(cursor, str)
    if before is not None:
        stmt = stmt.where(ReconciliationReport.id < before)
    rows = (
        session.execute(stmt.order_by(ReconciliationReport.id.desc()).limit(limit + 1))
        .scalars()
        .all()
    )
    return page_of(rows, limit, key=lambda r: r.id)


def view(session: Session, report: ReconciliationReport, *, items: bool = True) -> dict[str, Any]:
    """The report as plain data (the API's and the CLI's shape)."""
    app = session.get(Application, report.application_id)
    summary = report.summary or {}
    failure = summary.get("failure") or {}
    shown: dict[str, Any] = {
        "id": report.id,
        "application": {"id": report.application_id, "name": app.name if app else None},
        "connection": summary.get("connection") or {"id": report.connection_id},
        "status": report.status,
        "summary": summary.get("counts") or {},
        "pages": summary.get("pages"),
        "error": report.error,
        "failure_class": failure.get("class"),
        "next_action": failure.get("next_action"),
        "created_by": report.created_by,
        "created_at": report.created_at,
        "csv": f"/api/v1/reconciliations/{report.id}/csv",
    }
    if items:
        shown["items"] = list(report.items or [])
    return shown


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # a value from the target must not run as a formula in a spreadsheet
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def report_csv(report: ReconciliationReport) -> str:
    """One row per finding: orphans, duplicates, missing accounts, mismatches."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in report.items or []:
        writer.writerow([_cell(item.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()
