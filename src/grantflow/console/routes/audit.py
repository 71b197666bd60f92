"""/audit: the audit log filtered by actor, action, object and time range, a page at a time,
and the result of verifying its hash chain (audit:read)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from grantflow import audit as service
from grantflow import timestamps
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.tables import Column, Table
from grantflow.console.templating import render
from grantflow.console.views import database, next_page, parse_time
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

ENTRIES = Table(
    columns=(
        Column("#", "id"),
        Column("When", "at", "when"),
        Column("Actor", "actor"),
        Column("Action", "action", "code"),
        Column("Object", "target", "link", link="target_url"),
        Column("Summary", "summary_text", "code"),
    ),
    empty="No audit entries match.",
)

# the console page of each kind of object the log names
_PAGES = {
    "workflow": "/workflows/{}",
    "grant": "/grants/{}",
    "identity": "/identities/{}",
    "connection": "/connections/{}",
    "job": "/jobs/{}",
    "access_review": "/reviews/{}",
    "incident": "/incidents/{}",
    "run": "/runs/{}",
    "user": "/users/{}",
}


def _row(entry: Any) -> dict[str, Any]:
    page = _PAGES.get(entry.target_type)
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": f"{entry.target_type} {entry.target_id or ''}".strip(),
        "target_url": page.format(entry.target_id) if page and entry.target_id else None,
        "summary_text": json.dumps(
            entry.summary, ensure_ascii=False, default=timestamps.json_default
        )[:400],
    }


@router.get("/audit")
def audit_page(
    request: Request,
    actor: str = Query("", max_length=320),
    action: str = Query("", max_length=100),
    target_type: str = Query("", max_length=60),
    target_id: str = Query("", max_length=100),
    since: str = Query("", max_length=40),
    until: str = Query("", max_length=40),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.AUDIT_READ)),
) -> Response:
    """Entries newest first, filtered; `action` ending in `.*` matches a prefix."""
    with database(request).transaction() as session:
        page = service.query(
            session,
            actor=actor or None,
            action=action or None,
            target_type=target_type or None,
            target_id=target_id or None,
            since=parse_time(since, "since"),
            until=parse_time(until, "until"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        rows = [_row(e) for e in page.items]
    context = {
        "table": ENTRIES,
        "rows": ENTRIES.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {
            "actor": actor,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "since": since,
            "until": until,
        },
        "object_types": sorted(_PAGES),
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "audit/log.html", context)


@router.get("/audit/verify")
def verify_page(request: Request, _: Actor = Depends(Page(Permission.AUDIT_READ))) -> Response:
    """Walk the hash chain from the start: intact, or the first entry that is not."""
    with database(request).transaction() as session:
        report = service.verify(session)
    return render(request, "audit/verify.html", {"report": report})
