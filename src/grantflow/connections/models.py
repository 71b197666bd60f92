"""Tables for connections and their credentials."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow


class ConnectionStatus(enum.StrEnum):
    CONNECTED = "connected"  # the last check or call worked
    UNHEALTHY = "unhealthy"  # the last health check failed (calls are still attempted)
    REAUTH_REQUIRED = "reauth_required"  # the credential can no longer be refreshed
    DISCONNECTED = "disconnected"  # switched off, or no credential where one is needed


class ConnectionKind(enum.StrEnum):
    HTTP = "http"  # any REST API
    SCIM = "scim"  # a SCIM 2.0 service provider
    ENTRA = "entra"  # Microsoft Graph
    OKTA = "okta"  # Okta management API
    GOOGLE = "google"  # Google Workspace Directory API


class AuthKind(enum.StrEnum):
    NONE = "none"
    BEARER = "bearer"  # Authorization: Bearer <token>
    BASIC = "basic"  # Authorization: Basic user:password
    API_KEY_HEADER = "api_key_header"  # <header>: <key>
    API_KEY_QUERY = "api_key_query"  # ?<param>=<key>
    OAUTH_CLIENT_CREDENTIALS = "oauth_client_credentials"  # token cached until near expiry
    OAUTH_REFRESH_TOKEN = "oauth_refresh_token"  # access token refreshed; refresh may rotate


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("application_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    application_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    base_url: Mapped[str] = mapped_column(String(2000))
    auth_kind: Mapped[str] = mapped_column(String(40))
    # non-secret auth settings: header or query name, token URL, scopes, client id
    auth_settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    timeout_seconds: Mapped[float] = mapped_column(Float, default=30.0)
    rate_limit_per_second: Mapped[float | None] = mapped_column(Float)
    rate_limit_burst: Mapped[int | None] = mapped_column(Integer)
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    allowed_hosts: Mapped[list[str]] = mapped_column(JSONType, default=list)
    health_check: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=ConnectionStatus.DISCONNECTED)
    status_reason: Mapped[str | None] = mapped_column(Text)
    status_changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    credential: Mapped[Credential | None] = relationship(
        back_populates="connection", cascade="all, delete-orphan", uselist=False
    )


class Credential(Base):
    """A connection's secret. Written, replaced, used; never read back out through any API."""

    __tablename__ = "credentials"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), unique=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(16))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # first set
    created_by: Mapped[str] = mapped_column(String(320))
    # the last replacement: its time and actor (None while the first secret is in use)
    replaced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    replaced_by: Mapped[str | None] = mapped_column(String(320))
    # when the current secret was last used (a replacement starts with none)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # OAuth: when the cached access token (inside the ciphertext) expires
    token_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    refreshed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    connection: Mapped[Connection] = relationship(back_populates="credential")


class HealthEvent(Base):
    """One line of a connection's health history: a health check (Test connection or the
    periodic check) and what it found, or a change of the connection's status and why. The
    newest `history.KEEP` lines per connection are kept."""

    __tablename__ = "connection_health_events"
    __table_args__ = (Index("ix_connection_health_events_connection_at", "connection_id", "at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(10))  # "check" | "status"
    status: Mapped[str] = mapped_column(String(20))  # the connection's status afterwards
    previous_status: Mapped[str | None] = mapped_column(String(20))  # kind "status"
    ok: Mapped[bool | None] = mapped_column(Boolean)  # kind "check"
    latency_ms: Mapped[float | None] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(320))
