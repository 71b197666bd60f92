"""Connections and credentials: create, change, set or replace the credential (write-only),
status changes. The one place these rules live; API, CLI and steps call these."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access import references
from grantflow.access.applications import get_application
from grantflow.access.models import Application
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections import history
from grantflow.connections.crypto import Keyring
from grantflow.connections.models import (
    AuthKind,
    Connection,
    ConnectionStatus,
    Credential,
)
from grantflow.connections.schemas import (
    SECRET_MODELS,
    AuthSettings,
    ConnectionCreate,
    ConnectionUpdate,
    check_auth_settings,
    plain_secret,
)
from grantflow.engine.states import WaitingReason
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.people.notifications import NotificationKind, notify, resolve
from grantflow.store.base import utcnow
from grantflow.store.ids import by_prefix


def needs_credential(connection: Connection) -> bool:
    return connection.auth_kind != AuthKind.NONE


def get_connection(session: Session, connection_id: str) -> Connection:
    connection = session.get(Connection, connection_id) or by_prefix(
        session, Connection, connection_id, "connection"
    )
    if connection is None:
        raise NotFound(f"connection {connection_id} does not exist", target_type="connection")
    return connection


def find_connection(session: Session, application_id: str, name: str) -> Connection | None:
    return session.execute(
        select(Connection).where(
            Connection.application_id == application_id, Connection.name == name
        )
    ).scalar_one_or_none()


def list_connections(session: Session, application_id: str) -> list[Connection]:
    get_application(session, application_id)
    return list(
        session.execute(
            select(Connection)
            .where(Connection.application_id == application_id)
            .order_by(Connection.name)
        ).scalars()
    )


def all_connections(
    session: Session, *, status: ConnectionStatus | None = None, limit: int = 500
) -> list[tuple[Connection, str]]:
    """Every connection (with its application's name), those needing a person first: reauth
    required, then unhealthy, then the rest; by application and name within each."""
    stmt = select(Connection, Application.name).join(
        Application, Application.id == Connection.application_id
    )
    if status is not None:
        stmt = stmt.where(Connection.status == status)
    rows = session.execute(stmt.order_by(Application.name, Connection.name).limit(limit)).all()
    first: list[str] = [ConnectionStatus.REAUTH_REQUIRED, ConnectionStatus.UNHEALTHY]
    ranked = sorted(rows, key=lambda r: first.index(r[0].status) if r[0].status in first else 2)
    return [(connection, name) for connection, name in ranked]


def set_status(
    session: Session,
    connection: Connection,
    status: ConnectionStatus,
    reason: str | None,
    *,
    by: str = "grantflow",
) -> None:
    """Move a connection's status (a line in its health history, naming `by`);
    reauth_required raises one notification per episode."""
    if connection.status == status and connection.status_reason == reason:
        return
    previous = connection.status
    connection.status = status
    connection.status_reason = reason
    connection.status_changed_at = utcnow()
    if connection.id is not None:  # (a connection being created has no history yet)
        history.record_status(
            session, connection.id, previous=previous, status=status, reason=reason, by=by
        )
    key = f"reauth_required:{connection.id}"
    if status == ConnectionStatus.REAUTH_REQUIRED and previous != status:
        notify(
            session,
            NotificationKind.REAUTH_REQUIRED,
            key,
            f"Connection {connection.name!r} needs to be reauthorised",
            body=f"{reason or 'its credential can no longer be refreshed'}. Replace the "
            "credential; runs waiting on it resume by themselves.",
            target_type="connection",
            target_id=connection.id,
            application_id=connection.application_id,
        )
    elif status != ConnectionStatus.REAUTH_REQUIRED:
        resolve(session, key)


def _initial_status(connection: Connection) -> tuple[ConnectionStatus, str | None]:
    if connection.enabled is False:  # (None before the insert applies the default)
        return ConnectionStatus.DISCONNECTED, "disabled"

    if needs_credential(connection) and connection.credential is None:
        return ConnectionStatus.DISCONNECTED, "no credential is set; set one to connect"
    return ConnectionStatus.CONNECTED, None


def create_connection(
    session: Session, actor: Actor, application_id: str, data: ConnectionCreate
) -> Connection:
    actor.require(Permission.CONNECTION_WRITE)
    get_application(session, application_id)
    if find_connection(session, application_id, data.name) is not None:
        raise Conflict(
            f"the application already has a connection named {data.name!r}",
            next_action="choose another name, or change the existing connection",
        )
    values = data.model_dump(mode="json")
    connection = Connection(application_id=application_id, **values)
    session.add(connection)
    status, reason = _initial_status(connection)
    connection.status, connection.status_reason = status, reason
    session.flush()
    audit.record(
        session,
        actor,
        "connection.created",
        "connection",
        connection.id,
        {"application_id": application_id, **values},
    )
    return connection


def update_connection(
    session: Session, actor: Actor, connection_id: str, data: ConnectionUpdate
) -> Connection:
    actor.require(Permission.CONNECTION_WRITE)
    connection = get_connection(session, connection_id)
    sent = data.model_dump(mode="json", exclude_unset=True)
    if sent.get("auth_settings") is not None:
        try:
            check_auth_settings(
                AuthKind(connection.auth_kind), AuthSettings.model_validate(sent["auth_settings"])
            )
        except ValueError as exc:
            raise ValidationError(
                str(exc), details=[{"field": "body.auth_settings", "message": str(exc)}]
            ) from None
    changes: dict[str, Any] = {}
    for field, value in sent.items():
        if value is None and field in (
            "base_url",
            "auth_settings",
            "timeout_seconds",
            "health_check",
            "enabled",
            "allowed_hosts",
        ):
            raise ValidationError(
                f"{field}: cannot be null",
                details=[{"field": f"body.{field}", "message": "cannot be null"}],
            )
        if getattr(connection, field) != value:
            changes[field] = [getattr(connection, field), value]
            setattr(connection, field, value)
    if "enabled" in changes:
        if connection.enabled:
            set_status(session, connection, *_initial_status(connection), by=actor.label)
        else:
            set_status(
                session,
                connection,
                ConnectionStatus.DISCONNECTED,
                f"disabled by {actor.label}",
                by=actor.label,
            )
    if changes:
        session.flush()
        audit.record(
            session, actor, "connection.updated", "connection", connection.id, {"changes": changes}
        )
    return connection


def delete_connection(session: Session, actor: Actor, connection_id: str) -> None:
    actor.require(Permission.CONNECTION_WRITE)
    connection = get_connection(session, connection_id)
    used_by = references.referrers(session, "connection", connection.id)
    if used_by:
        raise Conflict(
            f"connection {connection.name!r} is still used by: {'; '.join(used_by)}",
            referenced_by=used_by,
        )
    session.delete(connection)
    audit.record(
        session, actor, "connection.deleted", "connection", connection.id, {"name": connection.name}
    )


def parse_secret(auth_kind: AuthKind, raw: Any) -> BaseModel:
    """Validate a credential body for the auth kind; errors never echo the values."""
    model = SECRET_MODELS.get(auth_kind)
    if model is None:
        raise ValidationError(
            f"auth kind {auth_kind} takes no credential",
            next_action="change the connection's auth kind first",
        )
    try:
        return model.model_validate(raw)
    except PydanticError as exc:
        details = [
            {
                "field": "body." + ".".join(str(p) for p in err["loc"]),
                "message": err["msg"]
                if err["type"] != "extra_forbidden"
                else f"unknown field for a {auth_kind} credential",
            }
            for err in exc.errors(include_input=False)
        ]
        raise ValidationError(
            f"the credential is not valid for {auth_kind}: "
            + "; ".join(f"{d['field']}: {d['message']}" for d in details),
            details=details,
        ) from None


def set_credential(
    session: Session, actor: Actor, keyring: Keyring, connection_id: str, raw: Any
) -> Credential:
    """Set or replace the credential. Stored encrypted; never returned. Runs waiting on the
    connection's reauthorisation resume by themselves."""
    actor.require(Permission.CREDENTIAL_WRITE)
    connection = get_connection(session, connection_id)
    secret = parse_secret(AuthKind(connection.auth_kind), raw)
    payload = plain_secret(secret)
    expires_in = payload.pop("expires_in", None)

    credential = connection.credential
    replaced = credential is not None
    if credential is None:
        credential = Credential(
            connection=connection,
            kind=connection.auth_kind,
            created_by=actor.label,
            key_id="",
            ciphertext="",
        )
        session.add(credential)
        session.flush()
    else:  # a new secret: who and when, and no use or refresh of the old one carried over
        credential.replaced_at = utcnow()
        credential.replaced_by = actor.label
        credential.last_used_at = None
        credential.refreshed_at = None
        credential.kind = connection.auth_kind
    credential.token_expires_at = None
    if expires_in is not None and payload.get("access_token"):
        credential.token_expires_at = utcnow() + dt.timedelta(seconds=expires_in)
    credential.key_id, credential.ciphertext = keyring.encrypt(payload, credential.id)
    set_status(session, connection, *_initial_status(connection), by=actor.label)
    session.flush()
    audit.record(
        session,
        actor,
        "credential.replaced" if replaced else "credential.set",
        "connection",
        connection.id,
        {"kind": connection.auth_kind},
    )
    from grantflow.engine.waits import resume_runs_waiting_on  # the engine sits above us

    resume_runs_waiting_on(session, WaitingReason.REAUTH, connection.id, actor)
    return credential


def _connections_of_application(session: Session, application_id: str) -> list[str]:
    rows = session.execute(
        select(Connection.name, Connection.id).where(Connection.application_id == application_id)
    ).all()
    return [f"connection {name!r} ({cid})" for name, cid in rows]


references.register("application", _connections_of_application)
