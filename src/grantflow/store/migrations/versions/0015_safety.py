"""safety: webhook secrets and deliveries, shared connection limits, workflows paused for
safety, usage counters and spend caps

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import grantflow.store.base

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_UTC = grantflow.store.base.UTCDateTime(timezone=True)
_JSON = grantflow.store.base.JSONType


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("rotated_at", _UTC, nullable=True),
        sa.Column("rotated_by", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_webhook_secrets_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_secrets")),
        sa.UniqueConstraint("workflow_id", name=op.f("uq_webhook_secrets_workflow_id")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=True),
        sa.Column("dedup_key", sa.String(length=200), nullable=True),
        sa.Column("signature_hash", sa.String(length=64), nullable=True),
        sa.Column("received_at", _UTC, nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_webhook_deliveries_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "workflow_id", "dedup_key", name=op.f("uq_webhook_deliveries_workflow_id_dedup_key")
        ),
        sa.UniqueConstraint(
            "workflow_id",
            "signature_hash",
            name=op.f("uq_webhook_deliveries_workflow_id_signature_hash"),
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_workflow_received",
        "webhook_deliveries",
        ["workflow_id", "received_at"],
    )
    op.create_table(
        "connection_throttles",
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_connection_throttles_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_connection_throttles")),
    )
    op.create_table(
        "connection_slots",
        sa.Column("connection_id", sa.String(length=36), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_connection_slots_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", "slot", name=op.f("pk_connection_slots")),
    )
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("safety_pause", _JSON, nullable=True))
        batch.add_column(sa.Column("safety_resumed_at", _UTC, nullable=True))
        batch.add_column(sa.Column("safety_resumed_by", sa.String(length=320), nullable=True))
    op.create_table(
        "usage_marks",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("counted_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_usage_marks")),
    )
    op.create_index(op.f("ix_usage_marks_counted_at"), "usage_marks", ["counted_at"])
    op.create_table(
        "usage_counters",
        sa.Column("scope_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("period_key", sa.String(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope_id", "kind", "period_key", name=op.f("pk_usage_counters")),
    )
    op.create_table(
        "spend_caps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("scope_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("updated_by", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spend_caps")),
        sa.UniqueConstraint(
            "scope_id", "kind", "period", name=op.f("uq_spend_caps_scope_id_kind_period")
        ),
    )


def downgrade() -> None:
    op.drop_table("spend_caps")
    op.drop_table("usage_counters")
    op.drop_index(op.f("ix_usage_marks_counted_at"), table_name="usage_marks")
    op.drop_table("usage_marks")
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("safety_resumed_by")
        batch.drop_column("safety_resumed_at")
        batch.drop_column("safety_pause")
    op.drop_table("connection_slots")
    op.drop_table("connection_throttles")
    op.drop_index("ix_webhook_deliveries_workflow_received", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_secrets")
