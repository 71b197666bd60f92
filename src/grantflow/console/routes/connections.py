"""/connections: every connection's status, those needing a person first; a connection's banner
(reauth required, unhealthy: the reason and since when), Test connection with its result and
advice, its health history, and Replace credential — a write-only form: the secret goes to the
service function and is never written back into any page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grantflow.access.models import Application
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections import health, history
from grantflow.connections import service as service
from grantflow.connections.models import AuthKind, Connection, ConnectionStatus
from grantflow.connections.schemas import SECRET_MODELS
from grantflow.console import cookies
from grantflow.console.guard import Page
from grantflow.console.tables import Column, RowAction, Table
from grantflow.console.templating import redirect, render
from grantflow.console.views import choice, database, error_words, refused, services
from grantflow.errors import GrantflowError, PermissionDenied

router = APIRouter(include_in_schema=False)

CONNECTIONS = Table(
    columns=(
        Column("Connection", "name", "link", link="url"),
        Column("Application", "application"),
        Column("Status", "status", "chip"),
        Column("Reason", "status_reason"),
        Column("Since", "status_changed_at", "when"),
        Column("Last checked", "last_checked_at", "when"),
        Column("Auth", "auth_kind", "code"),
    ),
    actions=(RowAction("Test", "/connections/{id}/test", Permission.CONNECTION_WRITE),),
    empty="No connections yet. Add one to an application (API or `grantflow connections add`).",
)

HISTORY = Table(
    columns=(
        Column("When", "at", "when"),
        Column("What", "what"),
        Column("Status after", "status", "chip"),
        Column("Detail", "message"),
        Column("Latency (ms)", "latency_ms"),
        Column("By", "actor"),
    ),
    empty="No checks or status changes recorded yet.",
)

# what each secret field is called on the form; a field not named here uses its own name
_LABELS = {
    "token": "Token",
    "username": "User name",
    "password": "Password",
    "api_key": "API key",
    "client_id": "Client id",
    "client_secret": "Client secret",
    "refresh_token": "Refresh token",
    "access_token": "Access token (optional)",
    "expires_in": "Access token lifetime in seconds (optional)",
}
_PLAIN = {"username", "client_id", "expires_in"}  # shown as text inputs; the rest as password


def banner_of(connection: Connection) -> dict[str, Any] | None:
    """The banner a connection needing a person shows (and the home page can reuse)."""
    if connection.status == ConnectionStatus.REAUTH_REQUIRED:
        return {
            "tone": "bad",
            "title": "Reauthorisation required",
            "text": connection.status_reason or "the credential can no longer be refreshed",
            "since": connection.status_changed_at,
            "next": "replace the credential; runs waiting on this connection resume by themselves",
        }
    if connection.status == ConnectionStatus.UNHEALTHY:
        return {
            "tone": "warn",
            "title": "Unhealthy",
            "text": connection.status_reason or "the last health check failed",
            "since": connection.status_changed_at,
            "next": "fix what the reason says, then Test connection",
        }
    return None


def _row(connection: Connection, application: str) -> dict[str, Any]:
    return {
        "id": connection.id,
        "name": connection.name,
        "url": f"/connections/{connection.id}",
        "application": application,
        "status": connection.status,
        "status_reason": connection.status_reason,
        "status_changed_at": connection.status_changed_at,
        "last_checked_at": connection.last_checked_at,
        "auth_kind": connection.auth_kind,
    }


def secret_fields(auth_kind: str) -> list[dict[str, Any]]:
    """The inputs of the write-only credential form for an auth kind (never with a value)."""
    model = SECRET_MODELS.get(AuthKind(auth_kind))
    if model is None:
        return []
    return [
        {
            "name": name,
            "label": _LABELS.get(name, name),
            "required": info.is_required(),
            "type": "text" if name in _PLAIN else "password",
            "number": name == "expires_in",
        }
        for name, info in model.model_fields.items()
    ]


@router.get("/connections")
def list_page(
    request: Request,
    status: str = Query("", max_length=20),
    _: Actor = Depends(Page(Permission.CONNECTION_READ)),
) -> Response:
    """Every connection; reauth required and unhealthy first."""
    with database(request).transaction() as session:
        wanted = choice(status, ConnectionStatus, "status")
        rows = [_row(c, name) for c, name in service.all_connections(session, status=wanted)]
    context = {
        "table": CONNECTIONS,
        "rows": CONNECTIONS.rows(rows),
        "filters": {"status": status},
        "statuses": [s.value for s in ConnectionStatus],
    }
    if request.headers.get("hx-target") == "table":
        return render(request, "partials/table.html", context)
    return render(request, "connections/list.html", context)


def _detail(session: Session, connection_id: str) -> dict[str, Any]:
    connection = service.get_connection(session, connection_id)
    app = session.get(Application, connection.application_id)
    credential = connection.credential
    lines = history.history(session, connection.id)
    return {
        "connection": {
            **_row(connection, app.name if app else connection.application_id),
            "kind": connection.kind,
            "base_url": connection.base_url,
            "auth_settings": connection.auth_settings,
            "enabled": connection.enabled,
            "last_latency_ms": connection.last_latency_ms,
            "last_error": connection.last_error,
            "health_check": connection.health_check,
            "needs_credential": service.needs_credential(connection),
        },
        "credential": (
            {
                "kind": credential.kind,
                "created_at": credential.created_at,
                "created_by": credential.created_by,
                "replaced_at": credential.replaced_at,
                "replaced_by": credential.replaced_by,
                "last_used_at": credential.last_used_at,
                "token_expires_at": credential.token_expires_at,
                "refreshed_at": credential.refreshed_at,
            }
            if credential
            else None
        ),
        "banner": banner_of(connection),
        "table": HISTORY,
        "rows": HISTORY.rows(
            {
                "at": e.at,
                "what": (
                    ("check passed" if e.ok else "check failed")
                    + (f" ({e.error_class})" if e.error_class else "")
                    + (f", HTTP {e.status_code}" if e.status_code else "")
                    if e.kind == "check"
                    else f"status {e.previous_status or '—'} → {e.status}"
                ),
                "status": e.status,
                "message": e.message,
                "latency_ms": e.latency_ms,
                "actor": e.actor,
            }
            for e in lines
        ),
        "fields": secret_fields(connection.auth_kind),
    }


@router.get("/connections/{connection_id}")
def detail_page(
    connection_id: str, request: Request, _: Actor = Depends(Page(Permission.CONNECTION_READ))
) -> Response:
    """Status (with its banner), credential metadata, Test connection, health history."""
    with database(request).transaction() as session:
        context = _detail(session, connection_id)
    return render(request, "connections/detail.html", context)


@router.post("/connections/{connection_id}/test")
def test(
    connection_id: str,
    request: Request,
    actor: Actor = Depends(Page(Permission.CONNECTION_WRITE)),
) -> Response:
    """Send the health request now; the result and its advice are shown on the page."""
    back = f"/connections/{connection_id}"
    try:
        result = health.test_connection(services(request).connections, actor, connection_id)
    except PermissionDenied as error:
        refused(request, error)
    except GrantflowError as error:
        cookies.flash(request, "error", error_words(error))
        return redirect(request, back)
    if result.ok:
        cookies.flash(request, "success", f"Test connection passed: {result.message}.")
    else:
        text = f"Test connection failed ({result.error_class}): {result.message}."
        if result.next_action:
            text += f" Next: {result.next_action}"
        cookies.flash(request, "error", text)
    return redirect(request, back)


@router.get("/connections/{connection_id}/credential")
def credential_form(
    connection_id: str,
    request: Request,
    _: Actor = Depends(Page(Permission.CREDENTIAL_WRITE)),
) -> Response:
    """The write-only form: one empty input per secret field of the connection's auth kind."""
    with database(request).transaction() as session:
        context = _detail(session, connection_id)
    return render(request, "connections/credential.html", context)


@router.post("/connections/{connection_id}/credential")
async def replace_credential(
    connection_id: str,
    request: Request,
    actor: Actor = Depends(Page(Permission.CREDENTIAL_WRITE)),
) -> Response:
    """Set or replace the credential; on a refusal the form comes back empty (the values
    typed are never echoed) with the fields named."""
    form = await request.form()
    typed = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    return await run_in_threadpool(_store_credential, request, actor, connection_id, typed)


def _store_credential(
    request: Request, actor: Actor, connection_id: str, typed: dict[str, str]
) -> Response:
    state = services(request)
    with state.database.transaction() as session:
        kind = service.get_connection(session, connection_id).auth_kind
    body: dict[str, Any] = {}
    for field in secret_fields(kind):
        value = typed.get(field["name"], "")
        if value.strip():
            body[field["name"]] = int(value) if field["number"] and value.isdigit() else value
    try:
        with state.database.transaction() as session:
            service.set_credential(session, actor, state.keyring, connection_id, body)
    except PermissionDenied as error:
        refused(request, error)
    except GrantflowError as error:
        with state.database.transaction() as session:
            context = _detail(session, connection_id)
        context["error"] = error
        return render(request, "connections/credential.html", context, status_code=422)
    return redirect(
        request,
        f"/connections/{connection_id}",
        message="The credential is replaced. It is stored encrypted and never shown again.",
    )
