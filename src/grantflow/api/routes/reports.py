"""/api/v1/reports: generate a report (grants, run outcomes, audit export) as CSV or JSON,
list the stored ones, and download one with its SHA-256."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.governance import reports as service
from grantflow.governance.report_rows import ReportKind
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/reports", tags=["reports"])


class ReportOut(BaseModel):
    id: str
    kind: str
    format: str
    params: dict[str, Any]
    status: str = Field(
        description="ready; generating (a report of more than 20,000 rows, which the workers "
        "write within seconds to minutes: download it once ready); failed (see error)"
    )
    error: str | None = Field(description="why generating it failed")
    rows: int = Field(description="its rows (while generating: how many it will have)")
    size: int
    sha256: str
    content_type: str
    filename: str
    job_id: str | None
    created_by: str
    created_at: dt.datetime
    link: str
    content_link: str


@router.post("", status_code=201, response_model=ReportOut)
def generate_report(
    body: service.ReportRequest,
    wait: bool = Query(
        False,
        description="write a large report in this request too, not by the workers (the "
        "request lasts as long: about 2 s per 100,000 rows)",
    ),
    actor: Actor = Depends(Require(Permission.JOB_MANAGE)),
    db: Database = Depends(database),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Generate and store a report; an audit_export also needs audit:read. A report of more
    than 20,000 rows is `generating` until the workers have written it (unless `wait`). With
    an Idempotency-Key, a retry of the same request returns the same report."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: ReportOut.model_validate(
                service.view(
                    service.generate(
                        session, actor, body.kind, body.format, body.params, inline=wait
                    )
                )
            ),
        )


@router.get("", response_model=PageOut[ReportOut])
def list_reports(
    kind: ReportKind | None = Query(None, description="only this kind"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> PageOut[ReportOut]:
    """Stored reports, newest first (their metadata; the content is downloaded apart)."""
    with db.transaction() as session:
        page = service.list_reports(session, kind=kind, cursor=cursor, limit=limit)
        return PageOut(
            items=[ReportOut.model_validate(service.view(r)) for r in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/{report_id}", response_model=ReportOut)
def get_report(
    report_id: str,
    _: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> ReportOut:
    with db.transaction() as session:
        return ReportOut.model_validate(service.view(service.get_report(session, report_id)))


@router.get(
    "/{report_id}/content",
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {}, "application/json": {}},
            "description": "the stored report; X-Content-SHA256 is the SHA-256 of the body",
        }
    },
)
def download_report(
    report_id: str,
    actor: Actor = Depends(Require(Permission.JOB_READ)),
    db: Database = Depends(database),
) -> Response:
    """The report's bytes as stored, sent a chunk at a time; an audit_export also needs
    audit:read; a report not written yet (or whose writing failed) is a 409."""
    with db.transaction() as session:
        got = service.download(session, actor, report_id)

    def body() -> Iterator[bytes]:
        # (each chunk read in a short transaction of its own, so a slow client holds nothing;
        # exactly as many reads as chunks: the last byte sent is the last read done)
        for seq in range(got.chunks):
            with db.transaction() as session:
                data = service.chunk(session, got.report_id, seq)
            yield data or b""

    return StreamingResponse(
        body(),
        media_type=got.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{got.filename}"',
            "Content-Length": str(got.size),
            "X-Content-SHA256": got.sha256,
            "X-Content-Type-Options": "nosniff",
        },
    )
