"""A person is found by e-mail or userName whatever its case: `lower(email)` and
`lower(user_name)` are indexed. Each such lookup read every identity: a SCIM push's
`userName eq` (what an identity provider sends before each write) took 142 ms at 100,000
identities against 7 ms at 10,000, and a CSV import paid three such reads a row (the manager,
then the two uniqueness checks).

On PostgreSQL this builds both indexes while holding the table against writes: well under a
second for 100,000 identities. A later migration that rebuilds `identities` on SQLite (batch
mode) must create them again: SQLAlchemy cannot reflect an index on an expression there
(tests/integration/test_schema.py checks them by name).

Revision ID: 0026
Revises: 0025
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_identities_lower_email", "identities", [sa.text("lower(email)")])
    op.create_index("ix_identities_lower_user_name", "identities", [sa.text("lower(user_name)")])


def downgrade() -> None:
    op.drop_index("ix_identities_lower_user_name", table_name="identities")
    op.drop_index("ix_identities_lower_email", table_name="identities")
