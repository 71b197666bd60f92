"""usage_counters.shard: a counter is kept in up to 16 rows (its count is their sum), so that
concurrent step boundaries of one workflow bump different rows instead of queueing on one
row's lock until each other's commit (safety/gate.py); and an index on period_key, by which
the per-minute rows no breaker reads any more are forgotten

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_KEY = ["scope_id", "kind", "period_key"]


def upgrade() -> None:
    with op.batch_alter_table("usage_counters") as batch:
        batch.add_column(sa.Column("shard", sa.SmallInteger(), nullable=False, server_default="0"))
        batch.drop_constraint("pk_usage_counters", type_="primary")
        batch.create_primary_key("pk_usage_counters", [*_KEY, "shard"])
    op.create_index("ix_usage_counters_period_key", "usage_counters", ["period_key"])


def downgrade() -> None:
    op.drop_index("ix_usage_counters_period_key", table_name="usage_counters")
    # each counter's shards summed into one row (shard -1 while the others are deleted)
    op.execute(
        "INSERT INTO usage_counters (scope_id, kind, period_key, shard, count) "
        "SELECT scope_id, kind, period_key, -1, sum(count) FROM usage_counters "
        "GROUP BY scope_id, kind, period_key"
    )
    op.execute("DELETE FROM usage_counters WHERE shard <> -1")
    with op.batch_alter_table("usage_counters") as batch:
        batch.drop_constraint("pk_usage_counters", type_="primary")
        batch.drop_column("shard")
        batch.create_primary_key("pk_usage_counters", _KEY)
