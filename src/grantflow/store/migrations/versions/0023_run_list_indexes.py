"""The runs list's filters read only the runs they show. The list is newest first (by id), so a
status or a workflow filter walked the primary key from the newest run and skipped every run
that did not match: half a second at a million runs for the console home page's failed runs,
when the failures were weeks old. `(status, id)` and `(workflow_id, id)` hand the list its runs in
order; `(workflow_id, id)` replaces `(workflow_id, created_at)` (ids are time-ordered UUIDv7:
the newest id is the latest start).

Neither index holds a column a step boundary writes: a running run's updates stay heap-only.
On PostgreSQL this builds both indexes while holding the table against writes: about 5 s per
million runs on a 2-core machine (docs/how-to/upgrades.md).

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_status_id", "runs", ["status", "id"])
    op.create_index("ix_runs_workflow_id", "runs", ["workflow_id", "id"])
    op.drop_index("ix_runs_workflow_created", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_workflow_created", "runs", ["workflow_id", "created_at"])
    op.drop_index("ix_runs_workflow_id", table_name="runs")
    op.drop_index("ix_runs_status_id", table_name="runs")
