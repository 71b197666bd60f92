"""The audit log table: append-only, each row holding the hash of the one before."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import COUNTER, Base, JSONType, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    # the log's filters, newest first: each walks its index from its newest entry (0024)
    __table_args__ = (
        Index("ix_audit_by_actor_id", "actor_id", "id"),
        Index("ix_audit_by_actor", "actor", "id"),
        Index("ix_audit_by_action", "action", "id"),
        Index("ix_audit_by_target", "target_id", "id"),
    )

    # An integer sequence: the chain's order is the id's order.
    id: Mapped[int] = mapped_column(COUNTER, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(60))
    target_id: Mapped[str | None] = mapped_column(String(100))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    request_id: Mapped[str | None] = mapped_column(String(100))
    prev_hash: Mapped[str] = mapped_column(String(64))
    # HMAC-SHA256 under the key derived from master key `key_id`; entries from before the keyed
    # chain have no key_id and a plain SHA-256.
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(16))
