"""Migration 0030 (PostgreSQL): the pg_trgm extension and the search's trigram indexes; where
the migrating role may not create the extension, a warning and no indexes (the upgrade goes
on); the downgrade drops them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from grantflow.store import migrate
from grantflow.store.database import Database, open_database
from tests.support.databases import unmigrated

pytestmark = pytest.mark.postgres

INDEXES = {
    "ix_identities_email_trgm",
    "ix_identities_display_name_trgm",
    "ix_identities_user_name_trgm",
}


@pytest.fixture
def at_0029(tmp_path: Path) -> Iterator[Database]:
    with unmigrated("postgresql", tmp_path) as db:
        migrate.upgrade(db, "0029")
        yield db


def trigram_indexes(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        found = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE tablename = 'identities'")
        ).scalars()
        return set(found) & INDEXES


def test_the_indexes_are_built_and_the_downgrade_drops_them(at_0029: Database) -> None:
    migrate.upgrade(at_0029)
    assert trigram_indexes(at_0029) == INDEXES
    command.downgrade(migrate.alembic_config(at_0029), "0029")
    assert trigram_indexes(at_0029) == set()
    migrate.upgrade(at_0029)  # (the extension is there already: the indexes only)
    assert trigram_indexes(at_0029) == INDEXES


def test_an_extension_created_in_another_schema_is_used_where_it_is(at_0029: Database) -> None:
    """pg_trgm in a schema of its own, off the search path (as managed servers have it): the
    indexes name its operator class with that schema."""
    with at_0029.engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA extensions"))
        conn.execute(text("CREATE EXTENSION pg_trgm SCHEMA extensions"))
    migrate.upgrade(at_0029)
    assert trigram_indexes(at_0029) == INDEXES
    with at_0029.engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = conn.execute(
            text("EXPLAIN SELECT id FROM identities WHERE lower(user_name) LIKE '%ada%'")
        ).scalars()
        assert "ix_identities_user_name_trgm" in "\n".join(plan)


def test_a_role_that_may_not_create_the_extension_migrates_without_the_indexes(
    at_0029: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The tables' owner without CREATE on the database (so no extension): warned, no index,
    and the search still answers."""
    role = f"gf_noext_{uuid.uuid4().hex[:8]}"
    with at_0029.engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}"))
        for table in conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ).scalars():
            conn.execute(text(f'ALTER TABLE "{table}" OWNER TO {role}'))
    restricted = open_database(at_0029.url.set(username=role))
    try:
        with caplog.at_level(logging.WARNING, logger="alembic.runtime.migration"):
            migrate.upgrade(restricted)
        assert migrate.current_revision(restricted) == migrate.head_revision(restricted)
        assert trigram_indexes(restricted) == set()
        assert "the pg_trgm extension or its indexes could not be created" in caplog.text
        with restricted.engine.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM identities WHERE lower(user_name) LIKE '%x%'")
            ).scalar_one()
        assert found == 0
    finally:
        restricted.dispose()
        with at_0029.engine.begin() as conn:
            conn.execute(text(f"REASSIGN OWNED BY {role} TO CURRENT_USER"))
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))


def test_a_lock_timeout_fails_the_upgrade_to_be_run_again(at_0029: Database) -> None:
    """Only what the server or the role cannot do is a warning: a table another transaction
    holds (the index waits past lock_timeout) fails the upgrade, which leaves 0029 as it was."""
    impatient = open_database(at_0029.url.update_query_dict({"options": "-c lock_timeout=200"}))
    try:
        with at_0029.engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE identities IN ROW EXCLUSIVE MODE"))
            with pytest.raises(DBAPIError, match="lock timeout"):
                migrate.upgrade(impatient)
            blocker.rollback()
        assert migrate.current_revision(at_0029) == "0029"
        migrate.upgrade(at_0029)  # run again: built
        assert trigram_indexes(at_0029) == INDEXES
    finally:
        impatient.dispose()
