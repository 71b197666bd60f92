"""An identity provider that looks a user up by e-mail (SCIM `filter=emails.value eq "…"`) finds
them through an index on PostgreSQL: the e-mails of the SCIM representation pushed, lower-cased,
as a JSON array (GIN). The lookup read every identity's representation as text: about 85 ms at
100,000. SQLite has no such index.

About a second per 100,000 identities to build.

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

NAME = "ix_identities_scim_emails"
# (the expression `access/scim/users.py` `_emails_of_scim` compares)
EXPRESSION = "(lower(jsonb_path_query_array(scim, '$.emails[*].value')::text)::jsonb)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX {NAME} ON identities USING gin ({EXPRESSION})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {NAME}")
