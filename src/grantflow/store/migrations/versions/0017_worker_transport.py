"""workers.transport: which queue transport a worker takes runs from, so a fleet whose workers
disagree with its API (one on Valkey, one on the database) shows it

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "workers",
        sa.Column("transport", sa.String(20), nullable=False, server_default="database"),
    )


def downgrade() -> None:
    op.drop_column("workers", "transport")
