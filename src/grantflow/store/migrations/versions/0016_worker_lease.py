"""workers.lease_expires_at: a worker is live while the lease its heartbeat renews holds, so a
worker that died is shown lost within its lease

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from grantflow.store.base import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "workers", sa.Column("lease_expires_at", UTCDateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("workers", "lease_expires_at")
