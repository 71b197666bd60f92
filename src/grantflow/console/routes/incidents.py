"""/incidents: security incidents raised when revoking access failed (or no workflow revokes
it); an incident's detail, the evidence on its run — upload (a multipart form) and download —
and Resolve. Evidence routes mirror the API's (`/runs/{id}/evidence`), so a run's page can post
to them too."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grantflow.access import evidence
from grantflow.access import incidents as service
from grantflow.access.incidents import IncidentStatus
from grantflow.access.models import Application, Identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.tables import Column, Table
from grantflow.console.templating import render
from grantflow.console.views import back_to, choice, database, next_page, perform, services
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

INCIDENTS = Table(
    columns=(
        Column("Raised", "created_at", "when"),
        Column("Incident", "summary", "link", link="url"),
        Column("System", "system"),
        Column("Status", "status", "chip"),
        Column("Resolved by", "resolved_by"),
    ),
    empty="No security incidents.",
)


def _incident_row(incident: Any) -> dict[str, Any]:
    return {
        "id": incident.id,
        "url": f"/incidents/{incident.id}",
        "created_at": incident.created_at,
        "summary": incident.summary,
        "system": incident.system,
        "status": incident.status,
        "resolved_by": incident.resolved_by,
    }


@router.get("/incidents")
def list_page(
    request: Request,
    status: str = Query("", max_length=20),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.INCIDENT_READ)),
) -> Response:
    """Incidents, newest first (open ones by default filter)."""
    with database(request).transaction() as session:
        page = service.list_incidents(
            session,
            status=choice(status, IncidentStatus, "status"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        rows = [_incident_row(i) for i in page.items]
    context = {
        "table": INCIDENTS,
        "rows": INCIDENTS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"status": status},
    }
    return render(request, "incidents/list.html", context)


@router.get("/incidents/{incident_id}")
def detail_page(
    incident_id: str, request: Request, actor: Actor = Depends(Page(Permission.INCIDENT_READ))
) -> Response:
    """What failed, what to do by hand, the evidence on the run, Resolve."""
    with database(request).transaction() as session:
        incident = service.get_incident(session, incident_id)
        identity = session.get(Identity, incident.identity_id) if incident.identity_id else None
        app = session.get(Application, incident.application_id) if incident.application_id else None
        files = (
            evidence.list_evidence(session, incident.run_id)
            if incident.run_id and Permission.RUN_READ in actor.permissions
            else []
        )
        context = {
            "incident": {
                **_incident_row(incident),
                "kind": incident.kind,
                "instruction": incident.instruction,
                "failure": incident.failure,
                "step_id": incident.step_id,
                "run_id": incident.run_id,
                "run_url": f"/runs/{incident.run_id}" if incident.run_id else None,
                "grant_url": f"/grants/{incident.grant_id}" if incident.grant_id else None,
                "identity": (identity.display_name or identity.email) if identity else None,
                "identity_url": f"/identities/{identity.id}" if identity else None,
                "application": app.name if app else None,
                "resolved_at": incident.resolved_at,
                "resolution": incident.resolution,
                "resolution_comment": incident.resolution_comment,
                "open": incident.status == IncidentStatus.OPEN,
            },
            "evidence": [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "note": e.note,
                    "filename": e.filename,
                    "content_type": e.content_type,
                    "size": e.size,
                    "sha256": e.sha256,
                    "created_by": e.created_by,
                    "created_at": e.created_at,
                    "url": f"/runs/{e.run_id}/evidence/{e.id}/content"
                    if e.kind == "file"
                    else None,
                }
                for e in files
            ],
        }
    return render(request, "incidents/detail.html", context)


@router.post("/incidents/{incident_id}/resolve")
def resolve(
    incident_id: str,
    request: Request,
    comment: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.INCIDENT_MANAGE)),
) -> Response:
    """Resolve: needs an evidence file on the run, a succeeded run, or (no run) a comment."""

    def work(session: Session) -> str:
        incident = service.resolve_incident(session, actor, incident_id, comment.strip())
        return f"The incident is resolved ({incident.resolution})."

    return perform(request, f"/incidents/{incident_id}", work)


@router.post("/runs/{run_id}/evidence")
async def add_evidence(
    run_id: str,
    request: Request,
    file: UploadFile = File(...),
    note: str = Form("", max_length=10000),
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.EVIDENCE_WRITE)),
) -> Response:
    """Attach an evidence file (PDF, image, text, CSV, JSON, e-mail) to a run, with a note."""
    limit = services(request).settings.evidence_max_bytes
    content = await file.read(limit + 1)
    name, kind = file.filename or "", file.content_type or ""

    def work(session: Session) -> str:
        item = evidence.add_file(
            session,
            actor,
            run_id,
            filename=name,
            content_type=kind,
            content=content,
            note=note,
            max_bytes=limit,
        )
        return f"Evidence {item.filename} is attached (SHA-256 {item.sha256})."

    back = back_to(next, f"/runs/{run_id}")
    return await run_in_threadpool(perform, request, back, work)


@router.get("/runs/{run_id}/evidence/{evidence_id}/content")
def download_evidence(
    run_id: str,
    evidence_id: str,
    request: Request,
    _: Actor = Depends(Page(Permission.RUN_READ)),
) -> Response:
    """The evidence file as stored, byte for byte, as a download."""
    with database(request).transaction() as session:
        item = evidence.get_file(session, run_id, evidence_id)
        content, kind, name, digest = item.content, item.content_type, item.filename, item.sha256
    return Response(
        content=content or b"",
        media_type=kind or "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-SHA256": digest or "",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
