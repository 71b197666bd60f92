"""/api/v1/identity-imports: CSV files of identities the workers import, a batch of rows per
transaction. Sending one answers at once (202) with the import; its progress, counts and what
each row came to are read here while it runs and after."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from grantflow.access import identity_imports as service
from grantflow.access.identity_import import ImportCounts, Outcome, RowResult
from grantflow.access.identity_imports import ImportStatus
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.identity_import import CSV_BODY, upload
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import AppState, app_state, database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.store.database import Database
from grantflow.store.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix=f"{API_PREFIX}/identity-imports", tags=["identities"])


class ImportOut(BaseModel):
    id: str
    status: ImportStatus = Field(
        description="queued (accepted; a worker takes it within seconds), running, succeeded "
        "(every row written or rejected), failed (a batch failed three times in a row: the rows "
        "before it are written) or cancelled"
    )
    filename: str | None
    sha256: str
    size: int = Field(description="the file's bytes")
    rows: int = Field(description="data rows in the file")
    done_rows: int = Field(description="rows written (or rejected) so far")
    percent: float
    counts: ImportCounts
    error: str | None = Field(
        description="why the last batch failed (undone: no row of it was written); the workers "
        "try it again at retry_at"
    )
    retry_at: dt.datetime | None
    failures: int = Field(description="batches failed in a row (the third fails the import)")
    created_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    cancelled_by: str | None
    rows_url: str = Field(description="what each row came to, in file order")


@router.post(
    "",
    status_code=202,
    response_model=ImportOut,
    openapi_extra=CSV_BODY,
    responses={413: {"description": "the file is too large or has too many rows"}},
)
async def start_import(
    request: Request,
    response: Response,
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    state: AppState = Depends(app_state),
) -> ImportOut:
    """Accept a CSV file of identities (the columns of `POST /identities/import`) and answer at
    once: the workers write its rows, a batch per transaction. A problem with the file as a
    whole refuses it here (413, 415, 422) and nothing is stored; a bad row is rejected when its
    turn comes, and the others are imported. A dry run is `POST /identities/import?dry_run=true`."""
    content, filename = await upload(request, state.settings.evidence_max_bytes)

    def accept() -> ImportOut:
        with state.database.transaction() as session:
            imported = service.start(
                session,
                actor,
                content,
                filename=filename,
                max_bytes=state.settings.evidence_max_bytes,
            )
            return ImportOut.model_validate(service.view(imported))

    accepted = await run_in_threadpool(accept)
    response.headers["Location"] = f"{API_PREFIX}/identity-imports/{accepted.id}"
    return accepted


@router.get("", response_model=PageOut[ImportOut])
def list_imports(
    status: ImportStatus | None = Query(None),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.IDENTITY_READ)),
    db: Database = Depends(database),
) -> PageOut[ImportOut]:
    """Imports, newest first."""
    with db.transaction() as session:
        page = service.list_imports(session, status=status, cursor=cursor, limit=limit)
        return PageOut(
            items=[ImportOut.model_validate(service.view(i)) for i in page.items],
            next_cursor=page.next_cursor,
        )


@router.get("/{import_id}", response_model=ImportOut)
def get_import(
    import_id: str,
    _: Actor = Depends(Require(Permission.IDENTITY_READ)),
    db: Database = Depends(database),
) -> ImportOut:
    with db.transaction() as session:
        return ImportOut.model_validate(service.view(service.get(session, import_id)))


@router.get("/{import_id}/rows", response_model=PageOut[RowResult])
def import_rows(
    import_id: str,
    outcome: Outcome | None = Query(None, description="only rows that came to this"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.IDENTITY_READ)),
    db: Database = Depends(database),
) -> PageOut[Any]:
    """What each row written so far came to, in file order (the header is row 1)."""
    with db.transaction() as session:
        imported = service.get(session, import_id)
        page = service.rows_page(session, imported, outcome=outcome, cursor=cursor, limit=limit)
        return PageOut(items=list(page.items), next_cursor=page.next_cursor)


@router.post("/{import_id}/cancel", response_model=ImportOut)
def cancel_import(
    import_id: str,
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    db: Database = Depends(database),
) -> ImportOut:
    """Stop an import between batches: the rows written stay; the rest are not written."""
    with db.transaction() as session:
        return ImportOut.model_validate(service.view(service.cancel(session, actor, import_id)))
