"""/identity-imports: CSV files of identities the workers import (the API's
`/api/v1/identity-imports`). The file is sent from the identities page and checked as a whole
there (refused: the error on that page, nothing stored); an import's page shows its progress,
its counts and what each row came to, reloads itself while the workers go on, and offers
Cancel; the list shows every import, newest first."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grantflow.access import identity_imports as service
from grantflow.access.identity_import import Outcome
from grantflow.access.identity_imports import ImportStatus
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.presenters.identity_imports import REFRESH_SECONDS, import_view, result_row
from grantflow.console.routes.identities import identities_page
from grantflow.console.tables import Column, Table
from grantflow.console.templating import redirect, render
from grantflow.console.views import choice, database, next_page, perform, refused, services
from grantflow.errors import GrantflowError, PermissionDenied, ValidationError
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

IMPORTS = Table(
    columns=(
        Column("Sent", "created_at", "when"),
        Column("File", "name", "link", link="url"),
        Column("Status", "status", "chip"),
        Column("Progress", "progress"),
        Column("Created", "created_count", "number"),
        Column("Updated", "updated_count", "number"),
        Column("Unchanged", "unchanged_count", "number"),
        Column("Rejected", "rejected_count", "number"),
        Column("By", "created_by"),
    ),
    empty="No identity imports yet.",
)


@router.get("/identity-imports")
def list_page(
    request: Request,
    status: str = Query("", max_length=20),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.IDENTITY_READ)),
) -> Response:
    """CSV imports of identities, newest first, with their progress and counts."""
    with database(request).transaction() as session:
        page = service.list_imports(
            session,
            status=choice(status, ImportStatus, "status"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        rows = [import_view(service.view(i)) for i in page.items]
    context = {
        "table": IMPORTS,
        "rows": IMPORTS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"status": status},
        "statuses": [s.value for s in ImportStatus],
    }
    return render(request, "access/identity_imports.html", context)


@router.get("/identity-imports/{import_id}")
def detail_page(
    import_id: str,
    request: Request,
    outcome: str = Query("", max_length=20),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.IDENTITY_READ)),
) -> Response:
    """An import: status, progress and counts, a failed batch's error, what each row came to
    (filtered by outcome); it reloads itself while queued or running."""
    with database(request).transaction() as session:
        imported = service.get(session, import_id)
        page = service.rows_page(
            session,
            imported,
            outcome=choice(outcome, Outcome, "outcome"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        context = {
            "imported": import_view(service.view(imported)),
            "results": [result_row(r) for r in page.items],
            "next_url": next_page(request, page.next_cursor),
            "filters": {"outcome": outcome},
            "outcomes": [o.value for o in Outcome],
            "refresh_seconds": REFRESH_SECONDS,
        }
    return render(request, "access/identity_import.html", context)


@router.post("/identity-imports")
async def start(
    request: Request,
    file: UploadFile | None = File(None),
    actor: Actor = Depends(Page(Permission.IDENTITY_WRITE)),
) -> Response:
    """Send a CSV file of identities (as POST /api/v1/identity-imports): checked as a whole
    (refused: the identities page shows why, nothing is stored), then queued for the workers;
    on to the import's page."""
    limit = services(request).settings.evidence_max_bytes
    # (the body of this path is already held to `limit` and a little framing by the middleware:
    # read whole, a file too large is refused by `start` with its true size)
    content = await file.read() if file is not None else None
    filename = (file.filename or None) if file is not None else None
    return await run_in_threadpool(_start, request, actor, content, filename, limit)


def _start(
    request: Request, actor: Actor, content: bytes | None, filename: str | None, limit: int
) -> Response:
    try:
        if content is None:
            raise ValidationError(
                "file: choose a CSV file to import",
                details=[{"field": "file", "message": "missing"}],
            )
        with database(request).transaction() as session:
            imported = service.start(session, actor, content, filename=filename, max_bytes=limit)
            view = import_view(service.view(imported))
    except PermissionDenied as error:
        refused(request, error)
    except GrantflowError as error:
        return identities_page(request, import_error=error)
    rows = view["rows"]
    message = (
        f"{view['name']} is accepted: {rows} row{'s' * (rows != 1)} to import. The workers "
        "write them in batches; this page follows them."
    )
    return redirect(request, view["url"], message=message)


@router.post("/identity-imports/{import_id}/cancel")
def cancel(
    import_id: str, request: Request, actor: Actor = Depends(Page(Permission.IDENTITY_WRITE))
) -> Response:
    """Stop an import between batches (as POST /api/v1/identity-imports/{id}/cancel): the
    rows written stay written; the rest are not written."""

    def work(session: Session) -> str:
        view = import_view(service.view(service.cancel(session, actor, import_id)))
        return (
            f"The import of {view['name']} is cancelled after {view['progress']}: the rows "
            "written stay; the others are not written."
        )

    return perform(request, f"/identity-imports/{import_id}", work)
