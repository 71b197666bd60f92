"""A job's page finds its last Run now and its last scheduled occurrence down an index. It read
them by walking the job's every occurrence from the newest and skipping the other kind: 18 ms
for a five-minute job's year (100,000 occurrences) with no Run now, on every view of the job.
`(job_id, manual, scheduled_for)` hands each kind's newest at once.

On PostgreSQL this builds the index while holding the table against writes: well under a
second for 100,000 occurrences.

Revision ID: 0025
Revises: 0024
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_job_occurrences_job_kind_time", "job_occurrences", ["job_id", "manual", "scheduled_for"]
    )


def downgrade() -> None:
    op.drop_index("ix_job_occurrences_job_kind_time", table_name="job_occurrences")
