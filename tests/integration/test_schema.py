"""The migrations and the models describe the same schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String

from grantflow.store import migrate
from grantflow.store.database import Database
from grantflow.store.schema import metadata


def _diff(database: Database, target: MetaData) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
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
