"""The runs list filtered by a workflow and one of its versions walks an index on (workflow,
version, id) from the version's newest run. Through the workflow's index alone it read every
newer run of the workflow first: an old version's runs behind 500,000 newer ones took 160 ms
(p50; 8 ms now, `bench/runs_list.py`).

About two seconds per million runs to build (writes to `runs` wait meanwhile).

Revision ID: 0033
Revises: 0032
"""

from __future__ import annotations

from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_workflow_version", "runs", ["workflow_id", "version", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_workflow_version", table_name="runs")
