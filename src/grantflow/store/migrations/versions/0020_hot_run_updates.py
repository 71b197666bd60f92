"""No index on runs.stuck_at nor on usage_marks.counted_at: every step boundary rewrites a
running run's stuck_at, and an indexed column changed makes PostgreSQL write a new entry into
each of the run's six indexes (no heap-only update), so a 40-step run left 240 index entries
behind; the stuck filter is served by ix_runs_status_wake (the non-terminal statuses) instead.
Nothing reads usage_marks by counted_at.

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


def downgrade() -> None:
    op.create_index("ix_usage_marks_counted_at", "usage_marks", ["counted_at"])
    op.create_index("ix_runs_stuck_at", "runs", ["stuck_at"])
