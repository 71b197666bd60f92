"""runs, steps, timeline, queue, workers

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import grantflow.store.base
from grantflow.store.base import JSONType

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("hostname", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("waiting_reason", sa.String(length=20), nullable=True),
        sa.Column("trigger", sa.String(length=40), nullable=False),
        sa.Column("input", JSONType, nullable=False),
        sa.Column("subject", JSONType, nullable=False),
        sa.Column("current_step", sa.String(length=63), nullable=True),
        sa.Column("failure", JSONType, nullable=True),
        sa.Column("wake_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deadline_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stuck_after_seconds", sa.Float(), nullable=False),
        sa.Column("pause_requested", sa.Boolean(), nullable=False),
        sa.Column("replay_of", sa.String(length=36), nullable=True),
        sa.Column("replay_mode", sa.String(length=20), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("acted_steps", JSONType, nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_progress_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("stuck_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_runs_workflow_id_workflows"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_replay_of"), ["replay_of"], unique=False)
        batch_op.create_index("ix_runs_status_wake", ["status", "wake_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_stuck_at"), ["stuck_at"], unique=False)
        batch_op.create_index(
            "ix_runs_workflow_created", ["workflow_id", "created_at"], unique=False
        )

    op.create_table(
        "queue_items",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("available_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column(
            "lease_expires_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_queue_items_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_queue_items")),
    )
    with op.batch_alter_table("queue_items", schema=None) as batch_op:
        batch_op.create_index("ix_queue_items_available", ["available_at"], unique=False)

    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("step_id", sa.String(length=63), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=320), nullable=True),
        sa.Column("data", JSONType, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_events")),
    )
    with op.batch_alter_table("run_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_events_run_id"), ["run_id"], unique=False)

    op.create_table(
        "step_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_id", sa.String(length=63), nullable=False),
        sa.Column("step_type", sa.String(length=100), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("attempt_group", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("side_effects", sa.Boolean(), nullable=False),
        sa.Column("output", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("next_step", sa.String(length=63), nullable=True),
        sa.Column(
            "next_attempt_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("started_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_step_runs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_runs")),
        sa.UniqueConstraint(
            "run_id", "step_id", "iteration", name=op.f("uq_step_runs_run_id_step_id_iteration")
        ),
    )
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_runs_run_id"), ["run_id"], unique=False)

    op.create_table(
        "step_attempts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("step_run_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("request", JSONType, nullable=True),
        sa.Column("response", JSONType, nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("started_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["step_run_id"],
            ["step_runs.id"],
            name=op.f("fk_step_attempts_step_run_id_step_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_attempts")),
        sa.UniqueConstraint(
            "step_run_id", "number", name=op.f("uq_step_attempts_step_run_id_number")
        ),
    )


def downgrade() -> None:
    op.drop_table("step_attempts")
    with op.batch_alter_table("step_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_runs_run_id"))

    op.drop_table("step_runs")
    with op.batch_alter_table("run_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_events_run_id"))

    op.drop_table("run_events")
    with op.batch_alter_table("queue_items", schema=None) as batch_op:
        batch_op.drop_index("ix_queue_items_available")

    op.drop_table("queue_items")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_workflow_created")
        batch_op.drop_index(batch_op.f("ix_runs_stuck_at"))
        batch_op.drop_index("ix_runs_status_wake")
        batch_op.drop_index(batch_op.f("ix_runs_replay_of"))

    op.drop_table("runs")
    op.drop_table("workers")
