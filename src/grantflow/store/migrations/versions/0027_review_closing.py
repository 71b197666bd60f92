"""Closing a campaign whose default is revoke no longer revokes every undecided grant in one
transaction. That held the audit chain, so every audited change waited: 16 s for 1,000 items,
about 3 minutes for 10,000. The campaign is now `closing` while the workers revoke in batches;
`access_reviews.revoked_through` is the last item done, and `revoke_error`/`revoke_retry_at`
say why a batch failed and when the workers try again. `(review_id, id)` hands each batch, and
each page of a campaign's items, its items in order; it replaces the index on `review_id` alone.

On PostgreSQL this builds the index while holding `access_review_items` against writes: about
a second per million items.

Revision ID: 0027
Revises: 0026
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from grantflow.store.base import UTCDateTime

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_reviews") as batch:
        batch.add_column(sa.Column("revoked_through", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("revoke_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("revoke_retry_at", UTCDateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_access_review_items_review_id_id", "access_review_items", ["review_id", "id"]
    )
    op.drop_index("ix_access_review_items_review_id", table_name="access_review_items")


def downgrade() -> None:
    op.create_index("ix_access_review_items_review_id", "access_review_items", ["review_id"])
    op.drop_index("ix_access_review_items_review_id_id", table_name="access_review_items")
    # (not a batch: SQLite would rebuild access_reviews, and dropping the old table cascades
    # to every review item; SQLite drops a column itself since 3.35)
    for column in ("revoked_through", "revoke_error", "revoke_retry_at"):
        op.execute(f"ALTER TABLE access_reviews DROP COLUMN {column}")
