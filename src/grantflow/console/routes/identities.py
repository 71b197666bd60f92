"""/identities: the people, their lifecycle state and lifecycle failure marks (a joiner, mover
or leaver run that did not succeed); one identity's grants, failures and lifecycle events."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from starlette.responses import Response

from grantflow.access import grants, identities
from grantflow.access.lifecycle import LifecycleState, failures_of
from grantflow.access.models import LifecycleEvent
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.routes.grants import GRANTS, application_choices, event_rows, grant_row
from grantflow.console.tables import Column, Table
from grantflow.console.templating import render
from grantflow.console.views import choice, database, next_page
from grantflow.store.pagination import DEFAULT_LIMIT

router = APIRouter(include_in_schema=False)

IDENTITIES = Table(
    columns=(
        Column("Name", "name", "link", link="url"),
        Column("E-mail", "email"),
        Column("Department", "department"),
        Column("Lifecycle", "lifecycle_state", "chip"),
        Column("Active", "active", "bool"),
        Column("Lifecycle failures", "failure_mark", "chip"),
    ),
    empty="No identities match.",
)


@router.get("/identities")
def list_page(
    request: Request,
    q: str = Query("", max_length=320),
    lifecycle_state: str = Query("", max_length=20),
    cursor: str | None = Query(None, max_length=500),
    _: Actor = Depends(Page(Permission.IDENTITY_READ)),
) -> Response:
    """People with their lifecycle state and a mark for each failed lifecycle run."""
    with database(request).transaction() as session:
        page = identities.list_identities(
            session,
            query=q or None,
            lifecycle_state=choice(lifecycle_state, LifecycleState, "lifecycle_state"),
            cursor=cursor,
            limit=DEFAULT_LIMIT,
        )
        failures = failures_of(session, [i.id for i in page.items])
        rows = [
            {
                "name": i.display_name or i.user_name,
                "url": f"/identities/{i.id}",
                "email": i.email,
                "department": i.department,
                "lifecycle_state": i.lifecycle_state,
                "active": i.active,
                "failure_mark": (f"{len(failures[i.id])} failed" if failures.get(i.id) else None),
            }
            for i in page.items
        ]
    context = {
        "table": IDENTITIES,
        "rows": IDENTITIES.rows(rows),
        "next_url": next_page(request, page.next_cursor),
        "filters": {"q": q, "lifecycle_state": lifecycle_state},
        "states": [s.value for s in LifecycleState],
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "access/identities.html", context)


@router.get("/identities/{identity_id}")
def detail_page(
    identity_id: str, request: Request, _: Actor = Depends(Page(Permission.IDENTITY_READ))
) -> Response:
    """An identity: its fields, failed lifecycle runs, grants, lifecycle events."""
    with database(request).transaction() as session:
        identity = identities.get_identity(session, identity_id)
        failed = failures_of(session, [identity.id]).get(identity.id, [])
        held = grants.list_grants(session, identity_id=identity.id, limit=200)
        events = session.execute(
            select(LifecycleEvent)
            .where(LifecycleEvent.identity_id == identity.id, LifecycleEvent.grant_id.is_(None))
            .order_by(LifecycleEvent.id)
        ).scalars()
        context = {
            "identity": {
                "id": identity.id,
                "name": identity.display_name or identity.user_name,
                "email": identity.email,
                "user_name": identity.user_name,
                "title": identity.title,
                "department": identity.department,
                "manager_id": identity.manager_id,
                "start_date": identity.start_date,
                "end_date": identity.end_date,
                "lifecycle_state": identity.lifecycle_state,
                "active": identity.active,
                "source": identity.source,
                "deleted_at": identity.deleted_at,
            },
            "failures": [{**f, "url": f"/runs/{f['run_id']}"} for f in failed],
            "table": GRANTS,
            "rows": GRANTS.rows(grant_row(session, g) for g in held.items),
            "events": event_rows(events),
            "applications": application_choices(session),
            "prefill": {"identity": identity.email or identity.user_name},
        }
    return render(request, "access/identity.html", context)
