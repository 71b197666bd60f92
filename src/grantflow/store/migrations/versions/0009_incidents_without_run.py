"""incidents without a run: a leaver's access that no workflow revokes

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.alter_column("run_id", existing_type=sa.String(length=36), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM incidents WHERE run_id IS NULL")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.alter_column("run_id", existing_type=sa.String(length=36), nullable=False)
