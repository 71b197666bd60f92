"""runs.lease_token (the worker turn that may write a run's outcomes)

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("lease_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "lease_token")
