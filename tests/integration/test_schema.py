"""The migrations and the models describe the same schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, text

from grantflow.store import migrate
from grantflow.store.database import Database
from grantflow.store.schema import metadata

# SQLAlchemy cannot reflect SQLite's expression indexes (lower(email)), so the comparison skips
# them there (PostgreSQL's reflection reads them); test_the_expression_indexes_exist checks them
# by name on both.
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:Skipped unsupported reflection of expression-based index:sqlalchemy.exc.SAWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:autogenerate skipping metadata-specified expression-based index:UserWarning"
    ),
]
EXPRESSION_INDEXES = {"ix_identities_lower_email", "ix_identities_lower_user_name"}


# PostgreSQL's GIN indexes are not in the models: the identity search's trigram indexes (0030:
# created only where the pg_trgm extension could be) and the SCIM e-mail lookup's (0031);
# test_the_postgresql_gin_indexes_exist checks them.
TRIGRAM_INDEXES = {
    "ix_identities_email_trgm",
    "ix_identities_display_name_trgm",
    "ix_identities_user_name_trgm",
}
GIN_INDEXES = TRIGRAM_INDEXES | {"ix_identities_scim_emails"}


def _compared(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
    return not (kind == "index" and name in GIN_INDEXES)


def _diff(database: Database, target: MetaData) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _compared}
        )
        return list(compare_metadata(context, target))


def test_migrated_schema_matches_the_models(database: Database) -> None:
    """Autogenerate finds no difference between the migrated database and the models' metadata."""
    assert _diff(database, metadata) == []


def test_a_column_missing_from_the_migrations_is_reported(database: Database) -> None:
    """The comparison is not vacuous: a model column the migrations lack appears in the diff."""
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["users"].append_column(Column("nickname", String(40)))
    diff = _diff(database, changed)
    assert len(diff) == 1
    kind, _schema, table_name, column = diff[0]  # type: ignore[misc]
    assert (kind, table_name, column.name) == ("add_column", "users", "nickname")


def test_database_is_at_the_head_revision(database: Database) -> None:
    """The test database is migrated to the newest revision, as `grantflow migrate` leaves it."""
    assert migrate.current_revision(database) == migrate.head_revision(database)
    assert migrate.is_up_to_date(database)


def test_every_foreign_key_leads_an_index(database: Database) -> None:
    """A row's children are found (and cascaded on delete) by an index whose first column is
    the foreign key: a primary key, a unique key or an index of its own. (Migration 0020
    dropped step_runs.run_id's own index: the unique key (run_id, step_id, iteration) leads
    with it.)"""
    from sqlalchemy import inspect

    missing = []
    with database.engine.connect() as conn:
        found = inspect(conn)
        for table in found.get_table_names():
            leading = {tuple(found.get_pk_constraint(table)["constrained_columns"])[:1]}
            leading |= {tuple(i["column_names"])[:1] for i in found.get_indexes(table)}
            leading |= {tuple(u["column_names"])[:1] for u in found.get_unique_constraints(table)}
            for key in found.get_foreign_keys(table):
                if tuple(key["constrained_columns"])[:1] not in leading:
                    missing.append(f"{table}.{key['constrained_columns'][0]}")
    assert missing == []


def test_the_expression_indexes_exist(database: Database) -> None:
    """The indexes on an expression, which only PostgreSQL's comparison sees: present by name
    on both databases (a table rebuilt by a later SQLite batch migration must recreate them)."""
    listing = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if database.engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )
    with database.engine.connect() as conn:
        found = set(conn.execute(text(listing)).scalars())
    assert found >= EXPRESSION_INDEXES


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_the_postgresql_gin_indexes_exist(database: Database) -> None:
    with database.engine.connect() as conn:
        found = set(
            conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
            ).scalars()
        )
    assert found >= GIN_INDEXES
