"""POST /api/v1/identities/import: a CSV of identities, as a multipart upload or a text/csv body,
imported while the request waits (or a dry run); `identity_imports` has the imports the
workers carry out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from grantflow.access import identity_import as service
from grantflow.access import identity_imports
from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import AppState, app_state
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import PayloadTooLarge, UnsupportedMediaType, ValidationError

router = APIRouter(prefix=f"{API_PREFIX}/identities", tags=["identities"])

CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


async def upload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The file's bytes and its name, from either kind of body; 413 when it is larger than
    `limit` bytes."""
    content, filename = await _read(request, limit)
    if len(content) > limit:
        raise PayloadTooLarge(
            f"file: the file is larger than the {limit} bytes allowed for an import",
            next_action="split the file, or raise GRANTFLOW_EVIDENCE_MAX_BYTES",
            details=[{"field": "file", "message": f"larger than {limit} bytes"}],
        )
    return content, filename


async def _read(request: Request, limit: int) -> tuple[bytes, str | None]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "text/csv":
        return await request.body(), None
    if kind != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type {kind or '(none)'!r} is not accepted here; send the CSV file as a "
            "multipart/form-data field named 'file', or as the body with Content-Type: text/csv",
            next_action="curl -F file=@people.csv ... (or --data-binary @people.csv "
            "-H 'Content-Type: text/csv')",
        )
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationError(
                "file: the multipart body has no file field named 'file'",
                details=[{"field": "file", "message": "missing"}],
            )
        return await upload.read(limit + 1), upload.filename


@router.post(
    "/import",
    response_model=service.ImportReport,
    openapi_extra=CSV_BODY,
    responses={413: {"description": "the file is too large or has too many rows"}},
)
async def import_identities(
    request: Request,
    dry_run: bool = Query(False, description="report what the import would do; write nothing"),
    actor: Actor = Depends(Require(Permission.IDENTITY_WRITE)),
    state: AppState = Depends(app_state),
) -> service.ImportReport:
    """Create and update identities from a CSV file (UTF-8, header row first), answering when
    every row is written. A large file is better sent to `POST /identity-imports`, which answers
    at once while the workers import it (this request may outlast a proxy's timeout).

    Columns: email (required), display_name, user_name, given_name, family_name, title,
    department, manager (email or id; may be a later row), start_date, end_date (YYYY-MM-DD),
    active (true/false/yes/no/1/0) and attr.<name> for custom attributes. A header problem
    refuses the file (422); a bad row is reported as rejected and the others are imported.
    """
    limit = state.settings.evidence_max_bytes
    content, filename = await upload(request, limit)
    return await run_in_threadpool(
        lambda: identity_imports.import_csv(
            state.database,
            actor,
            state.queue,
            content,
            filename=filename,
            dry_run_only=dry_run,
            max_bytes=limit,
        )
    )
