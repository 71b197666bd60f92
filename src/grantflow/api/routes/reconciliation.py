"""/api/v1/applications/{id}/reconcile and /api/v1/reconciliations: compare the accounts in an
application's SCIM target with its active grants, and read the stored reports.

Running one answers 201 with the stored report whatever its outcome: a target that cannot be
read gives a report with status `failed` and the error in plain words (the report is the
record). Refusals before anything is tried are errors: 404 unknown application or connection,
409 no SCIM connection (or several and none named), 403 without access:reconcile.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from grantflow.access import reconcile as service
from grantflow.access.applications import get_application
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import AppState, app_state, database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=API_PREFIX, tags=["reconciliation"])


class ReportSummaryOut(BaseModel):
    id: str
    application: dict[str, Any]
    connection: dict[str, Any]
    status: service.ReportStatus
    summary: dict[str, int]
    pages: int | None = None
    error: str | None
    failure_class: str | None
    next_action: str | None
    created_by: str
    created_at: dt.datetime
    csv: str


class ReportOut(ReportSummaryOut):
    items: list[dict[str, Any]]


@router.post("/applications/{app_id}/reconcile", status_code=201, response_model=ReportOut)
def reconcile(
    app_id: str,
    body: service.ReconcileRequest | None = Body(None),
    actor: Actor = Depends(Require(Permission.RECONCILE)),
    state: AppState = Depends(app_state),
) -> ReportOut:
    """List every account in the application's SCIM target and compare them with its active
    grants. 201 with the stored report, `completed` or `failed` (then `error` says why)."""
    with state.database.transaction() as session:
        app_id = get_application(session, app_id).id
    report_id = service.reconcile(state.database, state.connections, actor, app_id, body)
    with state.database.transaction() as session:
        return ReportOut.model_validate(
            service.view(session, service.get_report(session, report_id))
        )


@router.get("/applications/{app_id}/reconciliations", response_model=PageOut[ReportSummaryOut])
def list_reconciliations(
    app_id: str,
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.GRANT_READ)),
    db: Database = Depends(database),
) -> PageOut[ReportSummaryOut]:
    """The application's reports, newest first, without their items."""
    with db.transaction() as session:
        page = service.list_reports(session, app_id, cursor=cursor, limit=limit)
        return PageOut(
            items=[
                ReportSummaryOut.model_validate(service.view(session, r, items=False))
                for r in page.items
            ],
            next_cursor=page.next_cursor,
        )


@router.get("/reconciliations/{report_id}", response_model=ReportOut)
def get_reconciliation(
    report_id: str,
    _: Actor = Depends(Require(Permission.GRANT_READ)),
    db: Database = Depends(database),
) -> ReportOut:
    with db.transaction() as session:
        return ReportOut.model_validate(
            service.view(session, service.get_report(session, report_id))
        )


@router.get(
    "/reconciliations/{report_id}/csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per finding"}},
)
def reconciliation_csv(
    report_id: str,
    _: Actor = Depends(Require(Permission.GRANT_READ)),
    db: Database = Depends(database),
) -> Response:
    """The report's findings as CSV: kind, account_id, user_name, email, identity_id,
    identity_email, identity_state, grant_id, detail."""
    with db.transaction() as session:
        report = service.get_report(session, report_id)
        text = service.report_csv(report)
        name = f"reconciliation-{report.created_at:%Y%m%dT%H%M%SZ}-{report_id[:8]}.csv"
    return Response(
        content=text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
