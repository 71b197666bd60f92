"""Tables of the safety package: webhook secrets and deliveries."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import Base, UTCDateTime, new_id, utcnow


class WebhookSecret(Base):
    """A webhook workflow's signing secret: write-only, encrypted under the master key (bound
    to this row's id), shown once when created or rotated and never again."""

    __tablename__ = "webhook_secrets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), unique=True
    )
    key_id: Mapped[str] = mapped_column(String(16))  # the master key it is encrypted under
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(320))
    # the last rotation (None while the first secret is in use)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    rotated_by: Mapped[str | None] = mapped_column(String(320))


class DeliveryOutcome:
    ACCEPTED = "accepted"  # signature, time and body valid: a run was started (or held)
    DUPLICATE = "duplicate"  # a delivery already accepted, sent again: no second run
    REFUSED = "refused"  # refused (the reason says why); no run


class WebhookDelivery(Base):
    """One delivery to `POST /hooks/{workflow_key}`. Accepted ones carry the keys that make a
    resent delivery a duplicate (its delivery id, and its signature: a replayed request under
    another delivery id is a duplicate too); refused ones only say when and why (never the
    body, never the signature). The last 100 refusals per workflow are kept."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("workflow_id", "dedup_key"),
        UniqueConstraint("workflow_id", "signature_hash"),
        Index("ix_webhook_deliveries_workflow_received", "workflow_id", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    delivery_id: Mapped[str | None] = mapped_column(String(200))  # as the sender named it
    # set on accepted deliveries only (NULLs never collide): the sender's delivery id, and a
    # hash of the signature header's timestamp and digest
    dedup_key: Mapped[str | None] = mapped_column(String(200))
    signature_hash: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(36))


class ConnectionThrottle(Base):
    """A connection's shared rate-limit state (PostgreSQL deployments; safety/ratelimit.py):
    the GCRA theoretical arrival time and the "not before" a 429 asked for, both in epoch
    seconds of the database's clock."""

    __tablename__ = "connection_throttles"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    tat: Mapped[float] = mapped_column(Float)
    not_before: Mapped[float] = mapped_column(Float, default=0.0)


class ConnectionSlot(Base):
    """One of a connection's `max_concurrency` call slots, leased to a call in flight."""

    __tablename__ = "connection_slots"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[float | None] = mapped_column(Float)  # epoch seconds (database clock)


class UsageCounter(Base):
    """How many runs, executed steps and external calls a workflow (scope_id) or the whole
    workspace (scope_id "*") used in one period: a minute ("M:2031-01-02T10:04", UTC, for the
    breakers), a day ("d:2031-01-02") or a month ("m:2031-01") in the spend-cap timezone.

    A count is the sum of its shards' rows: a statement bumps the shard its connection's
    backend picks (`gate.SHARD`, one of 16), so concurrent steps of one workflow rarely wait
    for each other's commit on one row's lock."""

    __tablename__ = "usage_counters"
    # (the per-minute rows are forgotten by key range: safety/breakers.forget_old_minutes)
    __table_args__ = (Index("ix_usage_counters_period_key", "period_key"),)

    scope_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(20), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default="0")
    count: Mapped[int] = mapped_column(Integer, default=0)


class SpendCap(Base):
    """A hard cap: at most `cap` runs, executed steps or external calls per day or month, for
    the workspace (scope_id "*") or one workflow."""

    __tablename__ = "spend_caps"
    __table_args__ = (UniqueConstraint("scope_id", "kind", "period"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    scope_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(20))  # runs | steps | external_calls
    period: Mapped[str] = mapped_column(String(10))  # day | month
    cap: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(320))
