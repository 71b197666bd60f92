"""workflow_start_count(lock_key, workflow_id, run_id) on PostgreSQL: the workflow's start lock,
then its other running runs counted in a snapshot taken after the lock, inside the one
statement that takes a run (engine/take.py), where the lock was a statement of its own

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# VOLATILE: each query in the function takes a fresh snapshot (in READ COMMITTED), so the
# count sees every start that held the lock before this one, even when it was committed after
# the calling statement began.
_FUNCTION = """
CREATE OR REPLACE FUNCTION workflow_start_count(lock_key text, workflow text, run text)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  running bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(lock_key));
  SELECT count(*) INTO running FROM runs
    WHERE workflow_id = workflow AND id <> run AND status = 'running';
  RETURN running;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS workflow_start_count(text, text, text)")
