"""The search box finds a part of an e-mail, a name or a userName (`GET /api/v1/identities?q=`,
the console's identities page) through trigram indexes on PostgreSQL: it read every identity,
about 100 ms at 100,000 and a second at a million.

PostgreSQL only, with the `pg_trgm` extension, which a database's owner may create (it is a
trusted extension since PostgreSQL 13); an extension already created in another schema is used
where it is. Where it cannot be created (not installed on the server, or no privilege to create
it), the indexes are left out with a warning and the search keeps reading every identity;
`CREATE EXTENSION pg_trgm` and `grantflow migrate` again do not add them: see
docs/how-to/deploy-postgresql.md for the statements. SQLite has no such index.

Each index takes about a second per 100,000 identities to build.

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

import logging

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

# (the expressions the search compares: `email` is stored lower-cased)
INDEXES = {
    "ix_identities_email_trgm": "email",
    "ix_identities_display_name_trgm": "lower(display_name)",
    "ix_identities_user_name_trgm": "lower(user_name)",
}


# What a server or a role cannot do, as opposed to a failure worth failing the upgrade for (a
# lock timeout): no privilege; the extension's files not installed; not supported here.
_NOT_POSSIBLE = {"42501", "58P01", "0A000"}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        # (each step in a savepoint: a refusal here must not undo the rest of the upgrade)
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            # the extension may live in a schema this connection does not search (one for
            # extensions, on managed servers): its operator class named with that schema
            schema = bind.exec_driver_sql(
                "SELECT n.nspname FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
            ).scalar_one()
        opclass = f"{bind.dialect.identifier_preparer.quote_identifier(schema)}.gin_trgm_ops"
        with bind.begin_nested():
            for name, expression in INDEXES.items():
                bind.exec_driver_sql(
                    f"CREATE INDEX {name} ON identities USING gin ({expression} {opclass})"
                )
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) not in _NOT_POSSIBLE:
            raise  # (a lock or statement timeout, ...: the upgrade fails and is run again)
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        log.warning(
            "the pg_trgm extension or its indexes could not be created (%s): the identity "
            "search keeps reading every identity",
            first,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
