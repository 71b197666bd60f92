"""The safety gate's mark lives on the step run: step_runs.counted_at (when the gate counted
that step's start) replaces the usage_marks table, which held one row per step start for
ever, keyed by a text of the run, step and iteration. A step boundary writes one relation
fewer, and a run's marks take no room beyond a column of its step runs.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import grantflow.store.base

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_KEY = "step_runs.run_id || ':' || step_runs.step_id || ':' || step_runs.iteration"


def upgrade() -> None:
    with op.batch_alter_table("step_runs") as batch:
        batch.add_column(
            sa.Column("counted_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=True)
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE step_runs SET counted_at = m.counted_at FROM usage_marks m "
            f"WHERE m.key = {_KEY}"
        )
    else:
        marked = f"FROM usage_marks m WHERE m.key = {_KEY}"
        op.execute(
            f"UPDATE step_runs SET counted_at = (SELECT m.counted_at {marked}) "
            f"WHERE EXISTS (SELECT 1 {marked})"
        )
    op.drop_table("usage_marks")


def downgrade() -> None:
    op.create_table(
        "usage_marks",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("counted_at", grantflow.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_usage_marks")),
    )
    op.execute(
        f"INSERT INTO usage_marks (key, counted_at) SELECT {_KEY}, counted_at FROM step_runs "
        "WHERE counted_at IS NOT NULL"
    )
    # (SQLite: dropped in place; a batch's copy of the table would drop the old one, and with
    # it, by their cascade, every step attempt)
    with op.batch_alter_table("step_runs", recreate="never") as batch:
        batch.drop_column("counted_at")
