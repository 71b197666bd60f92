"""/identities: the people, their lifecycle state and lifecycle failure marks (a joiner, mover
or leaver run that did not succeed); one identity's grants, failures and lifecycle events; add
an identity (a joiner), change one (a mover), offboard one (a leaver). The CSV import form is
on this page too; its imports are `identity_imports.py`'s."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from grantflow.access import grant_lists, identities
from grantflow.access.lifecycle import LifecycleState, failures_of
from grantflow.access.models import Identity, LifecycleEvent
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console.guard import Page
from grantflow.console.routes.grants import GRANTS, application_choices, event_rows, grant_row
from grantflow.console.tables import Column, Table
from grantflow.console.templating import render
from grantflow.console.views import choice, database, form_model, perform, query, services
from grantflow.errors import GrantflowError
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
    return identities_page(request, q=q, lifecycle_state=lifecycle_state, cursor=cursor)


def identities_page(
    request: Request,
    *,
    q: str = "",
    lifecycle_state: str = "",
    cursor: str | None = None,
    import_error: GrantflowError | None = None,
) -> Response:
    """The identities page (or its table, for htmx); `import_error`: a CSV file refused as a
    whole, shown on the import form with its status (the page answers a POST then)."""
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
        # (built on /identities: this page also answers a refused import's POST)
        "next_url": (
            f"/identities{query(request, cursor=page.next_cursor)}" if page.next_cursor else None
        ),
        "filters": {"q": q, "lifecycle_state": lifecycle_state},
        "states": [s.value for s in LifecycleState],
        "error": import_error,
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    status = import_error.http_status if import_error is not None else 200
    return render(request, "access/identities.html", context, status_code=status)


@router.get("/identities/{identity_id}")
def detail_page(
    identity_id: str, request: Request, _: Actor = Depends(Page(Permission.IDENTITY_READ))
) -> Response:
    """An identity: its fields, failed lifecycle runs, grants, lifecycle events."""
    with database(request).transaction() as session:
        identity = identities.get_identity(session, identity_id)
        failed = failures_of(session, [identity.id]).get(identity.id, [])
        held = grant_lists.list_grants(session, identity_id=identity.id, limit=200)
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
                "manager": _manager_of(session, identity.manager_id),
                "start_date": identity.start_date,
                "end_date": identity.end_date,
                "lifecycle_state": identity.lifecycle_state,
                "active": identity.active,
                "source": identity.source,
                "deleted_at": identity.deleted_at,
            },
            "failures": [{**f, "url": f"/runs/{f['run_id']}"} for f in failed],
            "table": GRANTS,
            "rows": GRANTS.rows(grant_row(g) for g in held.items),
            "events": event_rows(events),
            "applications": application_choices(session),
            "prefill": {"identity": identity.email or identity.user_name},
        }
    return render(request, "access/identity.html", context)


def _manager_of(session: Session, manager_id: str | None) -> str | None:
    """The manager as the form takes it back: e-mail, else id."""
    if manager_id is None:
        return None
    manager = session.get(Identity, manager_id)
    return (manager.email or manager.id) if manager is not None else manager_id


def _newest_event(session: Session, identity_id: str) -> LifecycleEvent | None:
    found: LifecycleEvent | None = session.execute(
        select(LifecycleEvent)
        .where(LifecycleEvent.identity_id == identity_id, LifecycleEvent.grant_id.is_(None))
        .order_by(LifecycleEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return found


def _started(session: Session, identity_id: str, before: LifecycleEvent | None = None) -> str:
    """What the change started, in words: the runs of the lifecycle event it recorded (none
    when its newest event is still `before`)."""
    event = _newest_event(session, identity_id)
    if event is None or (before is not None and event.id == before.id):
        return ""
    runs = sum(1 for d in event.dispatch if d.get("run_id"))
    why = f" ({event.no_run_reason})" if not runs and event.no_run_reason else ""
    return f" {event.kind}: {runs} run{'s' * (runs != 1)} started{why}."


def _update(
    session: Session,
    request: Request,
    actor: Actor,
    identity_id: str,
    body: identities.IdentityFields,
) -> tuple[dict[str, Any], str]:
    """Apply the change as PATCH /api/v1/identities/{id} does: what changed, and the runs its
    lifecycle event started, in words."""
    before = _newest_event(session, identities.get_identity(session, identity_id).id)
    identity, changes = identities.update_identity(
        session, actor, services(request).queue, identity_id, body
    )
    return changes, _started(session, identity.id, before) if changes else ""


def _fields(**values: str) -> dict[str, Any]:
    """The form's fields as the API's body: empty text fields are left out."""
    return {name: value.strip() for name, value in values.items() if value.strip()}


@router.post("/identities")
def create(
    request: Request,
    email: str = Form("", max_length=320),
    display_name: str = Form("", max_length=200),
    user_name: str = Form("", max_length=320),
    title: str = Form("", max_length=200),
    department: str = Form("", max_length=200),
    manager: str = Form("", max_length=320),
    start_date: str = Form("", max_length=20),
    actor: Actor = Depends(Page(Permission.IDENTITY_WRITE)),
) -> Response:
    """Add an identity (as POST /api/v1/identities): an active one is a joiner."""

    def work(session: Session) -> tuple[str, str]:
        body = form_model(
            identities.IdentityCreate,
            **_fields(
                email=email,
                display_name=display_name,
                user_name=user_name,
                title=title,
                department=department,
                manager=manager,
                start_date=start_date,
            ),
        )
        made = identities.create_identity(session, actor, services(request).queue, body)
        name = made.display_name or made.email
        return f"{name} added.{_started(session, made.id)}", f"/identities/{made.id}"

    return perform(request, "/identities", work)


@router.post("/identities/{identity_id}")
def change(
    identity_id: str,
    request: Request,
    display_name: str = Form("", max_length=200),
    title: str = Form("", max_length=200),
    department: str = Form("", max_length=200),
    manager: str = Form("", max_length=320),
    end_date: str = Form("", max_length=20),
    actor: Actor = Depends(Page(Permission.IDENTITY_WRITE)),
) -> Response:
    """Change an identity (as PATCH /api/v1/identities/{id}): a changed department, title or
    manager is a mover. An empty field clears it (the name is kept)."""

    def work(session: Session) -> str:
        sent: dict[str, Any] = {
            "title": title.strip() or None,
            "department": department.strip() or None,
            "manager": manager.strip() or None,
            "end_date": end_date.strip() or None,
        }
        if display_name.strip():
            sent["display_name"] = display_name.strip()
        body = form_model(identities.IdentityUpdate, **sent)
        changes, started = _update(session, request, actor, identity_id, body)
        if not changes:
            return "Nothing changed."
        return f"Changed {', '.join(sorted(changes))}.{started}"

    return perform(request, f"/identities/{identity_id}", work)


@router.post("/identities/{identity_id}/leave")
def leave(
    identity_id: str, request: Request, actor: Actor = Depends(Page(Permission.IDENTITY_WRITE))
) -> Response:
    """Offboard now (as POST /api/v1/identities/{id}/leave): every active grant is revoked and
    the identity_left workflows start."""

    def work(session: Session) -> str:
        body = identities.IdentityFields(active=False)
        changes, started = _update(session, request, actor, identity_id, body)
        if not changes:
            return "Already offboarded: nothing changed."
        return f"Offboarded.{started}"

    return perform(request, f"/identities/{identity_id}", work)
