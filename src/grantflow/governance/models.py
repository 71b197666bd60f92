"""Tables of governance: access review campaigns and their items, control evaluations, and
generated reports. (They moved here from `schedules/models.py`; the tables keep the names the
migrations gave them.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow
from grantflow.store.names import NameKeyed


class AccessReview(NameKeyed, Base):
    """A certification campaign: reviewers decide keep or revoke for each grant in scope."""

    __tablename__ = "access_reviews"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    # {"applications": [...], "roles": [...], "identity": {"department": ..., ...}}
    scope: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # {"reviewer": "manager|application_owner|users|roles", "users": [], "roles": [],
    #  "fallback": {"users": [], "roles": []}}
    reviewers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(20), index=True)  # open | closing | closed
    default_decision: Mapped[str] = mapped_column(String(10), default="keep")  # or revoke
    require_justification_for_keep: Mapped[bool] = mapped_column(Boolean, default=False)
    remind_before_seconds: Mapped[float | None] = mapped_column(Float)
    reminded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(320))
    # closing: the last item whose default revocation is done (batches go on after it)
    revoked_through: Mapped[str | None] = mapped_column(String(36))
    # closing: why the last batch failed, and when the workers try again
    revoke_error: Mapped[str | None] = mapped_column(Text)
    revoke_retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewItem(Base):
    """One grant under review, its reviewers, and the decision."""

    __tablename__ = "access_review_items"
    __table_args__ = (
        UniqueConstraint("review_id", "grant_id"),
        # a campaign's items in id order: pages, and the batches of its default revocations
        Index("ix_access_review_items_review_id_id", "review_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    review_id: Mapped[str] = mapped_column(ForeignKey("access_reviews.id", ondelete="CASCADE"))
    grant_id: Mapped[str] = mapped_column(String(36), index=True)
    identity_id: Mapped[str] = mapped_column(String(36), index=True)
    application_id: Mapped[str] = mapped_column(String(36))
    role: Mapped[str] = mapped_column(String(200), default="")
    reviewer_user_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    reviewer_roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    reviewer_source: Mapped[str] = mapped_column(String(30))  # manager|owner|named|fallback
    routing_problem: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[str | None] = mapped_column(String(10))  # keep | revoke
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(Text)
    defaulted: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class ReviewAssignee(Base):
    """A user, or a role any of whose members may decide, assigned to an undecided item: rows
    (as the item's lists, which stay), so a reviewer's inbox is an index walk, not a read of
    every pending item. A decision, or the campaign's close, removes the item's rows."""

    __tablename__ = "access_review_assignees"
    __table_args__ = (
        Index("ix_access_review_assignees_user_id", "user_id", "item_id"),
        Index("ix_access_review_assignees_role", "role", "item_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    item_id: Mapped[str] = mapped_column(
        ForeignKey("access_review_items.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(String(36))
    role: Mapped[str | None] = mapped_column(String(40))


class ControlEvaluation(Base):
    """One evaluation of the built-in controls over Grantflow's own inventory."""

    __tablename__ = "control_evaluations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # [{"control", "title", "passed", "findings": [{"object_type", "object_id", "link",
    #   "detail"}]}]
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Report(Base):
    """A generated report, stored with its SHA-256 for download: in `ReportChunk`s of a
    megabyte (before 0032: whole, in `content`). A large one is `generating` while the workers
    write it."""

    __tablename__ = "reports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    format: Mapped[str] = mapped_column(String(10))  # csv | json
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="ready", server_default="ready")
    error: Mapped[str | None] = mapped_column(Text)  # why generating it failed
    rows: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_by: Mapped[str] = mapped_column(String(320))
    # who asked, as its audit entry names them when a worker writes it later
    created_by_id: Mapped[str | None] = mapped_column(String(36))
    request_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReportChunk(Base):
    """A part of a report's file, in order: a report is read and sent a chunk at a time."""

    __tablename__ = "report_chunks"

    report_id: Mapped[str] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
