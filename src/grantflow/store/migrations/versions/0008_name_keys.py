"""name keys: Unicode caseless names on both databases

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from grantflow.store.names import name_key

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UNIQUE = ("applications", "workflows", "jobs")
TABLES = (*UNIQUE, "access_reviews")


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("name_key", sa.String(length=400), nullable=True))
        rows = sa.table(
            table, sa.column("id", sa.String), sa.column("name", sa.String), sa.column("name_key")
        )
        seen: set[str] = set()
        for row_id, name in bind.execute(sa.select(rows.c.id, rows.c.name).order_by(rows.c.id)):
            key = name_key(name)
            if table in UNIQUE and key in seen:
                # SQLite's ASCII-only lower() let two names that differ only in non-ASCII case
                # in; the later one is renamed so it stays reachable and unambiguous.
                name = f"{name[:60]} (renamed {row_id[:8]})"
                key = name_key(name)
                bind.execute(
                    sa.update(rows).where(rows.c.id == row_id).values(name=name, name_key=key)
                )
            else:
                bind.execute(sa.update(rows).where(rows.c.id == row_id).values(name_key=key))
            seen.add(key)
        with op.batch_alter_table(table) as batch:
            batch.alter_column("name_key", existing_type=sa.String(length=400), nullable=False)
            if table in UNIQUE:
                batch.create_unique_constraint(f"uq_{table}_name_key", ["name_key"])
            else:
                batch.create_index(f"ix_{table}_name_key", ["name_key"])


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            if table in UNIQUE:
                batch.drop_constraint(f"uq_{table}_name_key", type_="unique")
            else:
                batch.drop_index(f"ix_{table}_name_key")
            batch.drop_column("name_key")
