"""audit log: keyed chain (key_id per entry) and TRUNCATE refused on PostgreSQL

Entries written before this revision keep `key_id` NULL and verify by the old, unkeyed rule; the
first keyed entry after them (`grantflow migrate` writes one, `audit.chain_keyed`) pins them.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy): on SQLite a copied table would lose its triggers.
    op.add_column("audit_entries", sa.Column("key_id", sa.String(length=16), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # Row triggers do not fire on TRUNCATE: a statement-level one refuses it.
        op.execute(
            "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION grantflow_audit_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_no_truncate ON audit_entries")
    op.drop_column("audit_entries", "key_id")
