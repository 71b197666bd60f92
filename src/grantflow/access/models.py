"""Tables for applications, identities, groups, grants, lifecycle events, incidents, evidence
and reconciliation reports."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow
from grantflow.store.names import UniqueNameKeyed


class Application(UniqueNameKeyed, Base):
    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(40))
    homepage_url: Mapped[str | None] = mapped_column(String(2000))
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    labels: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Identity(Base):
    """A person in the directory. `email` is stored lower-cased; SCIM's userName is its own key."""

    __tablename__ = "identities"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    user_name: Mapped[str] = mapped_column(String(320), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(320), index=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    given_name: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    department: Mapped[str | None] = mapped_column(String(200))
    manager_id: Mapped[str | None] = mapped_column(
        ForeignKey("identities.id", ondelete="SET NULL"), index=True
    )
    start_date: Mapped[dt.date | None] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    lifecycle_state: Mapped[str] = mapped_column(String(20), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # the full SCIM representation last pushed (extension attributes round-trip through it)
    scim: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    source: Mapped[str] = mapped_column(String(20), default="api")
    # deleted over SCIM: gone from /scim/v2, kept here (left) for audit and reconciliation
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# A person found by e-mail or userName whatever its case (a SCIM push's lookup, a CSV row's
# manager, the uniqueness checks): each an index, not a read of every identity (0026).
Index("ix_identities_lower_email", func.lower(Identity.email))
Index("ix_identities_lower_user_name", func.lower(Identity.user_name))


class IdentityGroup(Base):
    """A group pushed over SCIM (department teams, HR groups)."""

    __tablename__ = "identity_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    display_name: Mapped[str] = mapped_column(String(200), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(320), index=True)
    scim: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GroupMember(Base):
    __tablename__ = "identity_group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("identity_groups.id", ondelete="CASCADE"), primary_key=True
    )
    identity_id: Mapped[str] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Grant(Base):
    """Identity x application (x role). At most one active grant per triple."""

    __tablename__ = "grants"
    __table_args__ = (
        Index(
            "uq_grants_active",
            "identity_id",
            "application_id",
            "role",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_grants_status_expires", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    identity_id: Mapped[str] = mapped_column(
        ForeignKey("identities.id", ondelete="RESTRICT"), index=True
    )
    application_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="RESTRICT"), index=True
    )
    role: Mapped[str] = mapped_column(String(200), default="")  # "" = the application itself
    justification: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20))  # active | revoked
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    granted_by: Mapped[str] = mapped_column(String(320))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_by: Mapped[str | None] = mapped_column(String(320))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(String(40))  # manual|expired|identity_left
    revoke_comment: Mapped[str | None] = mapped_column(Text)


class LifecycleEvent(Base):
    """Something that may start workflows: a grant, a revoke, a join, a move, a leave.
    `dispatch` says, per workflow considered, whether it started a run and if not why."""

    __tablename__ = "lifecycle_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    identity_id: Mapped[str | None] = mapped_column(
        ForeignKey("identities.id", ondelete="CASCADE"), index=True
    )
    grant_id: Mapped[str | None] = mapped_column(
        ForeignKey("grants.id", ondelete="CASCADE"), index=True
    )
    application_id: Mapped[str | None] = mapped_column(String(36), index=True)
    actor: Mapped[str] = mapped_column(String(320))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    no_run_reason: Mapped[str | None] = mapped_column(Text)
    dispatch: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventRun(Base):
    """A run a lifecycle event started (looked up by grant for its automation chip)."""

    __tablename__ = "lifecycle_event_runs"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("lifecycle_events.id", ondelete="CASCADE"), index=True
    )
    workflow_id: Mapped[str] = mapped_column(String(36))
    grant_id: Mapped[str | None] = mapped_column(String(36), index=True)
    identity_id: Mapped[str | None] = mapped_column(String(36), index=True)
    offboarding: Mapped[bool] = mapped_column(Boolean, default=False)


class Incident(Base):
    """A security incident: access that should be gone may still be there."""

    __tablename__ = "incidents"
    __table_args__ = (UniqueConstraint("run_id", "kind"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40))  # revocation_failed | revocation_not_automated
    status: Mapped[str] = mapped_column(String(20), index=True)  # open | resolved
    identity_id: Mapped[str | None] = mapped_column(String(36), index=True)
    application_id: Mapped[str | None] = mapped_column(String(36), index=True)
    grant_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # None: no run revoked the access (a leaver's grant no workflow covers)
    run_id: Mapped[str | None] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[str | None] = mapped_column(String(63))
    system: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    failure: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    instruction: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(320))
    resolution: Mapped[str | None] = mapped_column(String(40))  # retry_succeeded|evidence|manual
    resolution_comment: Mapped[str | None] = mapped_column(Text)


class Evidence(Base):
    """An audit note or a file attached to a run (e.g. proof of a manual revocation)."""

    __tablename__ = "run_evidence"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # note | file
    note: Mapped[str] = mapped_column(Text, default="")
    filename: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReconciliationReport(Base):
    __tablename__ = "reconciliation_reports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    application_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    connection_id: Mapped[str | None] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20))  # completed | failed
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdentityImport(Base):
    """A CSV file of identities the workers import, a batch of rows per transaction, in the
    order the rows are written (managers first); `done_rows` of them are written. The file is
    kept until the import ends, then dropped: what each row came to stays, in
    `IdentityImportRow`."""

    __tablename__ = "identity_imports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # queued | running | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(20), index=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    rows: Mapped[int] = mapped_column(Integer)  # data rows in the file
    done_rows: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    runs_started: Mapped[int] = mapped_column(Integer, default=0)  # its lifecycle runs' fan-out
    failures: Mapped[int] = mapped_column(Integer, default=0)  # batches failed in a row
    error: Mapped[str | None] = mapped_column(Text)  # why the last batch failed
    retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(320))
    created_by_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_by: Mapped[str | None] = mapped_column(String(320))


class IdentityImportRow(Base):
    """What one row of an import came to: created, updated, unchanged or rejected, and why."""

    __tablename__ = "identity_import_rows"
    __table_args__ = (Index("ix_identity_import_rows_outcome", "import_id", "outcome", "row"),)

    import_id: Mapped[str] = mapped_column(
        ForeignKey("identity_imports.id", ondelete="CASCADE"), primary_key=True
    )
    row: Mapped[int] = mapped_column(Integer, primary_key=True)  # the file's row number
    outcome: Mapped[str] = mapped_column(String(20))
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
