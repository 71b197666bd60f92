"""Fewer index writes per step boundary: no index on runs.stuck_at, on usage_marks.counted_at
nor on step_runs.run_id. Every step boundary rewrites a running run's stuck_at, and a changed
indexed column makes PostgreSQL write a new entry into each of the run's six indexes (no
heap-only update), so a 40-step run left 240 index entries behind; the stuck filter is served
by ix_runs_status_wake (the non-terminal statuses) instead. Nothing reads usage_marks by
counted_at. A run's step runs are found by the leading column of their unique key (run_id,
step_id, iteration), which every new step run writes anyway.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_runs_stuck_at", table_name="runs")
    op.drop_index("ix_usage_marks_counted_at", table_name="usage_marks")
    op.drop_index("ix_step_runs_run_id", table_name="step_runs")


def downgrade() -> None:
    op.create_index("ix_step_runs_run_id", "step_runs", ["run_id"])
    op.create_index("ix_usage_marks_counted_at", "usage_marks", ["counted_at"])
    op.create_index("ix_runs_stuck_at", "runs", ["stuck_at"])
