"""/grants: who has access to what, each grant's automation chip; a grant's detail — which
workflows run for it (dispatching or why not), its runs, why no run started, its lifecycle
events — and grant, revoke, extend, dispatch."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.access import applications, grant_lists, lifecycle
from grantflow.access import automation as chips
from grantflow.access import grants as service
from grantflow.access.automation import Automation
from grantflow.access.grant_lists import Listed
from grantflow.access.grants import GrantStatus
from grantflow.access.lifecycle import EventKind
from grantflow.access.models import Application, Grant
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.tables import Column, RowAction, Table
from grantflow.console.templating import render
from grantflow.console.views import (
    back_to,
    choice,
    database,
    form_model,
    next_page,
    parse_time,
    perform,
    services,
)
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

GRANTS = Table(
    columns=(
        Column("Identity", "identity", "link", link="identity_url"),
        Column("Application", "application"),
        Column("Role", "role", "code"),
        Column("Status", "status", "chip"),
        Column("Automation", "automation", "chip"),
        Column("Expires", "expires_at", "when"),
        Column("Granted", "granted_at", "when"),
        Column("Detail", "short_id", "link", link="url"),
    ),
    actions=(
        RowAction(
            "Revoke", "/grants/{id}/revoke", Permission.GRANT_WRITE, when="active", style="danger"
        ),
    ),
    empty="No grants match.",
)
# a filtered page reads a bounded number of grants: one with none of the chip may still have
# a next page, where the reading goes on
READ_ON = dataclasses.replace(
    GRANTS, empty="None of the grants read for this page match; the next page reads on."
)


def grant_row(shown: Listed) -> dict[str, Any]:
    grant, holder = shown.grant, shown.holder
    who = holder.display_name or holder.email if holder else grant.identity_id
    return {
        "id": grant.id,
        "short_id": grant.id[:8],
        "url": f"/grants/{grant.id}",
        "identity": who,
        "identity_email": holder.email if holder else None,
        "identity_url": f"/identities/{grant.identity_id}",
        "application": shown.application or grant.application_id,
        "application_id": grant.application_id,
        "role": grant.role or None,
        "status": grant.status,
        "active": grant.status == GrantStatus.ACTIVE,
        "automation": shown.chip.state,
        "expires_at": grant.expires_at,
        "granted_at": grant.granted_at,
    }


def application_choices(session: Session) -> list[dict[str, str]]:
    page = applications.list_applications(session, limit=500)
    return sorted(({"id": a.id, "name": a.name} for a in page.items), key=lambda a: a["name"])


def _workflows_for(session: Session, grant: Grant, app: Application | None) -> list[dict[str, Any]]:
    """For each event of this grant (granted, revoked): which workflows would run, or why not."""
    if app is None:
        return []
    shown = []
    for kind in (EventKind.ACCESS_GRANTED, EventKind.ACCESS_REVOKED):
        for workflow in lifecycle.candidates(session, kind, app):
            if workflow.trigger_type != kind.value:
                continue
            why = lifecycle.why_not(workflow, kind)
            shown.append(
                {
                    "kind": kind.value,
                    "name": workflow.name,
                    "url": f"/workflows/{workflow.id}",
                    "dispatching": why is None,
                    "why_not": why[0] if why else None,
                    "fix": why[1] if why else None,
                }
            )
    return shown


@router.get("/grants")
def list_page(
    request: Request,
    status: str = Query("", max_length=20),
    automation: str = Query("", max_length=20),
    identity_id: str | None = Query(None, max_length=36),
    application_id: str | None = Query(None, max_length=36),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.GRANT_READ)),
) -> Response:
    """Grants with their automation chip, filtered while paging; a form to grant access."""
    wanted = choice(status, GrantStatus, "status")
    chip = choice(automation, Automation, "automation")
    with database(request).transaction() as session:
        page = grant_lists.list_grants(
            session,
            identity_id=identity_id or None,
            application_id=application_id or None,
            status=wanted,
            automation=chip,
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        rows = [grant_row(g) for g in page.items]
        apps = application_choices(session)
    context = {
        "table": READ_ON if page.next_cursor else GRANTS,
        "rows": GRANTS.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "pager_note": (
            f"A filtered page reads at most {grant_lists.MOST_READ:,} grants: more that match "
            "may follow on the next page."
            if chip and page.next_cursor and 0 < len(rows) < DEFAULT_LIMIT
            else None
        ),
        "filters": {"status": status, "automation": automation},
        "applications": apps,
        "prefill": {"identity": ""},
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "access/grants.html", context)


@router.get("/grants/{grant_id}")
def detail_page(
    grant_id: str, request: Request, _: Actor = Depends(Page(Permission.GRANT_READ))
) -> Response:
    """The grant, its chip, the workflows that run for it, its runs and events."""
    with database(request).transaction() as session:
        grant = service.get_grant(session, grant_id)
        app = session.get(Application, grant.application_id)
        shown = grant_lists.listed(session, grant)
        chip = shown.chip
        context = {
            "grant": {
                **grant_row(shown),
                "justification": grant.justification,
                "granted_by": grant.granted_by,
                "revoked_by": grant.revoked_by,
                "revoked_at": grant.revoked_at,
                "revoke_reason": grant.revoke_reason,
                "revoke_comment": grant.revoke_comment,
            },
            "runs": [{**r, "url": f"/runs/{r['id']}"} for r in chip.runs],
            "no_run_reason": chip.no_run_reason,
            "workflows": _workflows_for(session, grant, app),
            "events": event_rows(service.events_of(session, grant.id)),
        }
    return render(request, "access/grant.html", context)


def event_rows(events: Any) -> list[dict[str, Any]]:
    """Lifecycle events with the runs each started (or why none), for `partials/events.html`."""
    return [
        {
            "kind": e.kind,
            "actor": e.actor,
            "created_at": e.created_at,
            "no_run_reason": e.no_run_reason,
            "dispatch": [
                {
                    **d,
                    "url": f"/runs/{d['run_id']}" if d.get("run_id") else None,
                }
                for d in e.dispatch
            ],
        }
        for e in events
    ]


@router.post("/grants")
def create(
    request: Request,
    identity: str = Form("", max_length=320),
    application: str = Form("", max_length=200),
    role: str = Form("", max_length=200),
    justification: str = Form("", max_length=2000),
    expires_at: str = Form("", max_length=40),
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.GRANT_WRITE)),
) -> Response:
    """Grant access; the application's access_granted workflows start."""

    def work(session: Session) -> tuple[str, str]:
        body = form_model(
            service.GrantCreate,
            identity=identity,
            application=application,
            role=role,
            justification=justification,
            expires_at=parse_time(expires_at, "expires_at"),
        )
        grant = service.create_grant(session, actor, services(request).queue, body)
        chip = chips.automation(session, grant)
        started = len(chip.runs)
        message = f"Access granted; {started} run{'s' * (started != 1)} started." + (
            f" No run started: {chip.no_run_reason}" if chip.no_run_reason else ""
        )
        return message, f"/grants/{grant.id}"

    return perform(request, back_to(next, "/grants"), work)


@router.post("/grants/{grant_id}/revoke")
def revoke(
    grant_id: str,
    request: Request,
    comment: str = Form("", max_length=2000),
    next: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.GRANT_WRITE)),
) -> Response:
    """Revoke; the application's access_revoked workflows start."""

    def work(session: Session) -> str:
        grant = service.revoke_grant(
            session, actor, services(request).queue, grant_id, comment=comment.strip()
        )
        chip = chips.automation(session, grant)
        return "Access revoked." + (
            f" No run started: {chip.no_run_reason}" if chip.no_run_reason else ""
        )

    return perform(request, back_to(next, f"/grants/{grant_id}"), work)


@router.post("/grants/{grant_id}/extend")
def extend(
    grant_id: str,
    request: Request,
    expires_at: str = Form("", max_length=40),
    comment: str = Form("", max_length=2000),
    actor: Actor = Depends(Page(Permission.GRANT_WRITE)),
) -> Response:
    """Change the expiry (empty: never expires)."""

    def work(session: Session) -> str:
        when = parse_time(expires_at, "expires_at")
        body = form_model(service.GrantExtend, expires_at=when, comment=comment)
        service.extend_grant(session, actor, grant_id, body)
        return (
            f"The grant now expires {when:%Y-%m-%d %H:%M} UTC."
            if when
            else "The grant no longer expires."
        )

    return perform(request, f"/grants/{grant_id}", work)


@router.post("/grants/{grant_id}/dispatch")
def dispatch(
    grant_id: str, request: Request, actor: Actor = Depends(Page(Permission.GRANT_WRITE))
) -> Response:
    """Start the grant's access_granted workflows again."""

    def work(session: Session) -> str:
        done = service.dispatch_grant(session, actor, services(request).queue, grant_id)
        started = ", ".join(d["workflow_name"] for d in done.started) or "none"
        skipped = "; ".join(f"{d['workflow_name']}: {d['skipped']}" for d in done.skipped)
        return f"Dispatched: started {started}." + (f" Skipped {skipped}." if skipped else "")

    return perform(request, f"/grants/{grant_id}", work)
