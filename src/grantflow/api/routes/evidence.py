"""/api/v1/runs/{id}/notes and /evidence: audit notes and evidence files on a run."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from grantflow.access import evidence as service
from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require
from grantflow.api.state import AppState, app_state, database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.store.database import Database

router = APIRouter(prefix=f"{API_PREFIX}/runs", tags=["evidence"])


class EvidenceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    kind: str
    note: str
    filename: str | None
    content_type: str | None
    size: int | None
    sha256: str | None
    created_by: str
    created_at: dt.datetime


@router.post("/{run_id}/notes", status_code=201, response_model=EvidenceOut)
def add_note(
    run_id: str,
    body: service.NoteCreate,
    actor: Actor = Depends(Require(Permission.EVIDENCE_WRITE)),
    db: Database = Depends(database),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """An audit note on the run. With an Idempotency-Key, a retry of the same request returns
    the same note."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: EvidenceOut.model_validate(service.add_note(session, actor, run_id, body.note)),
        )


@router.post("/{run_id}/evidence", status_code=201, response_model=EvidenceOut)
async def add_file(
    run_id: str,
    file: UploadFile = File(..., description="the evidence file"),
    note: str = Form("", max_length=10000),
    actor: Actor = Depends(Require(Permission.EVIDENCE_WRITE)),
    db: Database = Depends(database),
    state: AppState = Depends(app_state),
) -> EvidenceOut:
    """Allowed types: PDF, PNG, JPEG, GIF, plain text, CSV, JSON, e-mail (.eml)."""
    limit = state.settings.evidence_max_bytes
    content = await file.read(limit + 1)
    with db.transaction() as session:
        item = service.add_file(
            session,
            actor,
            run_id,
            filename=file.filename or "",
            content_type=file.content_type or "",
            content=content,
            note=note,
            max_bytes=limit,
        )
        return EvidenceOut.model_validate(item)


@router.get("/{run_id}/evidence", response_model=list[EvidenceOut])
def list_evidence(
    run_id: str,
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
) -> list[EvidenceOut]:
    """Notes and files of the run, with each file's SHA-256."""
    with db.transaction() as session:
        return [EvidenceOut.model_validate(e) for e in service.list_evidence(session, run_id)]


@router.get("/{run_id}/evidence/{evidence_id}/content")
def download_evidence(
    run_id: str,
    evidence_id: str,
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
) -> Response:
    with db.transaction() as session:
        item = service.get_file(session, run_id, evidence_id)
        content, kind, name, digest = item.content, item.content_type, item.filename, item.sha256
    return Response(
        content=content or b"",
        media_type=kind or "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-SHA256": digest or "",
            "X-Content-Type-Options": "nosniff",
        },
    )
