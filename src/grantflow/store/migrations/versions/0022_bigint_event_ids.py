"""The two tables keyed by a counter, run_events and audit_entries, count in 64 bits on
PostgreSQL. Every step boundary writes a run event: at 32 bits the counter ends at
2,147,483,647 events, and then every step would fail to record. SQLite's INTEGER PRIMARY KEY is
its 64-bit rowid already.

On PostgreSQL this rewrites both tables (and their indexes) while holding them: 4.6 s for a
million audit entries on a 2-core machine (docs/how-to/upgrades.md).

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_TABLES = ("run_events", "audit_entries")


def _retype(kind: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE {kind}")
        # (the counter itself has a type too: a serial's sequence stops at its type's maximum)
        op.execute(
            f"DO $$ DECLARE counter text := pg_get_serial_sequence('{table}', 'id'); BEGIN "
            f"IF counter IS NULL THEN RAISE EXCEPTION '{table}.id has no sequence of its own "
            f"(a schema made by hand?): give it one (ALTER SEQUENCE ... OWNED BY {table}.id), "
            "then migrate again'; END IF; "
            f"EXECUTE format('ALTER SEQUENCE %s AS {kind}', counter); END $$"
        )


def upgrade() -> None:
    _retype("bigint")


def downgrade() -> None:
    # (refused by the server once a counter went past 32 bits: those rows need the wider key)
    _retype("integer")
