"""workflows and versions

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import grantflow.store.base
from grantflow.store.base import JSONType

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("application_id", sa.String(length=36), nullable=True),
        sa.Column("trigger_type", sa.String(length=40), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column(
            "enabled_changed_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("enabled_changed_by", sa.String(length=320), nullable=True),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("created_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_workflows_application_id_applications"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("name", name=op.f("uq_workflows_name")),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workflows_application_id"), ["application_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_workflows_trigger_type"), ["trigger_type"], unique=False
        )

    op.create_table(
        "workflow_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("document", JSONType, nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("plan", JSONType, nullable=True),
        sa.Column("warnings", JSONType, nullable=False),
        sa.Column("created_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("updated_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_by", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_versions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
        sa.UniqueConstraint(
            "workflow_id", "number", name=op.f("uq_workflow_versions_workflow_id_number")
        ),
    )


def downgrade() -> None:
    op.drop_table("workflow_versions")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflows_trigger_type"))
        batch_op.drop_index(batch_op.f("ix_workflows_application_id"))

    op.drop_table("workflows")
