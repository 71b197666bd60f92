"""/api/v1/applications/{id}/connections, /api/v1/connections/{id}: connections, their
write-only credentials, and Test connection."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import Deleted
from grantflow.api.security import Require
from grantflow.api.state import AppState, app_state, database
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections import health, history, service
from grantflow.connections.models import Connection, Credential
from grantflow.connections.schemas import ConnectionCreate, ConnectionUpdate
from grantflow.store.database import Database

router = APIRouter(prefix=API_PREFIX, tags=["connections"])


class CredentialOut(BaseModel):
    """Metadata only: a credential's value is never returned."""

    kind: str
    created_at: dt.datetime
    created_by: str
    replaced_at: dt.datetime | None
    replaced_by: str | None
    last_used_at: dt.datetime | None
    token_expires_at: dt.datetime | None
    refreshed_at: dt.datetime | None


class ConnectionOut(BaseModel):
    id: str
    application_id: str
    name: str
    kind: str
    base_url: str
    auth_kind: str
    auth_settings: dict[str, Any]
    timeout_seconds: float
    rate_limit_per_second: float | None
    rate_limit_burst: int | None
    max_concurrency: int | None
    allowed_hosts: list[str]
    health_check: dict[str, Any]
    enabled: bool
    status: str
    status_reason: str | None
    status_changed_at: dt.datetime
    last_checked_at: dt.datetime | None
    last_latency_ms: float | None
    last_error: dict[str, Any] | None
    credential: CredentialOut | None
    created_at: dt.datetime


def connection_out(connection: Connection) -> ConnectionOut:
    credential: Credential | None = connection.credential
    return ConnectionOut(
        **{f: getattr(connection, f) for f in ConnectionOut.model_fields if f != "credential"},
        credential=CredentialOut(
            kind=credential.kind,
            created_at=credential.created_at,
            created_by=credential.created_by,
            replaced_at=credential.replaced_at,
            replaced_by=credential.replaced_by,
            last_used_at=credential.last_used_at,
            token_expires_at=credential.token_expires_at,
            refreshed_at=credential.refreshed_at,
        )
        if credential
        else None,
    )


@router.post(
    "/applications/{application_id}/connections", status_code=201, response_model=ConnectionOut
)
def create_connection(
    application_id: str,
    body: ConnectionCreate,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    db: Database = Depends(database),
) -> ConnectionOut:
    with db.transaction() as session:
        return connection_out(service.create_connection(session, actor, application_id, body))


@router.get("/applications/{application_id}/connections", response_model=list[ConnectionOut])
def list_connections(
    application_id: str,
    _: Actor = Depends(Require(Permission.CONNECTION_READ)),
    db: Database = Depends(database),
) -> list[ConnectionOut]:
    with db.transaction() as session:
        return [connection_out(c) for c in service.list_connections(session, application_id)]


@router.get("/connections/{connection_id}", response_model=ConnectionOut)
def get_connection(
    connection_id: str,
    _: Actor = Depends(Require(Permission.CONNECTION_READ)),
    db: Database = Depends(database),
) -> ConnectionOut:
    with db.transaction() as session:
        return connection_out(service.get_connection(session, connection_id))


@router.patch("/connections/{connection_id}", response_model=ConnectionOut)
def update_connection(
    connection_id: str,
    body: ConnectionUpdate,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    db: Database = Depends(database),
) -> ConnectionOut:
    with db.transaction() as session:
        return connection_out(service.update_connection(session, actor, connection_id, body))


@router.delete("/connections/{connection_id}", response_model=Deleted)
def delete_connection(
    connection_id: str,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    db: Database = Depends(database),
) -> Deleted:
    with db.transaction() as session:
        service.delete_connection(session, actor, connection_id)
    return Deleted(id=connection_id)


class HealthEventOut(BaseModel):
    """One line of a connection's health history: a check, or a change of status."""

    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    kind: str = Field(description="check | status")
    status: str = Field(description="the connection's status afterwards")
    previous_status: str | None
    ok: bool | None
    latency_ms: float | None
    status_code: int | None
    error_class: str | None
    message: str | None
    actor: str


@router.get("/connections/{connection_id}/health", response_model=list[HealthEventOut])
def health_history(
    connection_id: str,
    limit: int = Query(50, ge=1, le=history.KEEP),
    _: Actor = Depends(Require(Permission.CONNECTION_READ)),
    db: Database = Depends(database),
) -> list[HealthEventOut]:
    """The newest checks and status changes of the connection, newest first."""
    with db.transaction() as session:
        service.get_connection(session, connection_id)
        return [
            HealthEventOut.model_validate(e) for e in history.history(session, connection_id, limit)
        ]


@router.put("/connections/{connection_id}/credential", response_model=ConnectionOut)
def set_credential(
    connection_id: str,
    body: dict[str, Any] = Body(..., description="the secret fields of the auth kind"),
    actor: Actor = Depends(Require(Permission.CREDENTIAL_WRITE)),
    state: AppState = Depends(app_state),
) -> ConnectionOut:
    """Set or replace the credential. Write-only: the response carries metadata only."""
    with state.database.transaction() as session:
        service.set_credential(session, actor, state.keyring, connection_id, body)
        return connection_out(service.get_connection(session, connection_id))


@router.post("/connections/{connection_id}/test")
def run_connection_test(
    connection_id: str,
    actor: Actor = Depends(Require(Permission.CONNECTION_WRITE)),
    state: AppState = Depends(app_state),
) -> dict[str, Any]:
    """Send the health request now: latency, an error class, and the resulting status."""
    return health.test_connection(state.connections, actor, connection_id).to_dict()
