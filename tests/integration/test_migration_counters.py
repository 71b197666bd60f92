"""Migration 0022: run events and audit entries count in 64 bits on PostgreSQL. A database whose
counters are at 32 bits' end (2,147,483,647) refuses the next run event before it, and after it
a run goes on past that end — its events, the audit entry of its start, and their pages
through the API; the downgrade takes the columns back while every row fits."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from grantflow.store import migrate
from grantflow.store.database import Database, open_database
from tests.conftest import Api
from tests.support.databases import PostgresRun
from tests.support.engine import publish, running_worker, start, wait_status, workflow

END = 2**31 - 1  # the last value of a 32-bit counter
TABLES = ("run_events", "audit_entries")


@pytest.fixture
def at_0021() -> Iterator[Database]:
    """A PostgreSQL database of its own, migrated to 0021 (32-bit counters)."""
    run = PostgresRun()
    run.create(migrated=False)
    db = open_database(run.url)
    try:
        migrate.upgrade(db, "0021")
        yield db
    finally:
        db.dispose()
        run.drop()


def at_the_end(db: Database) -> None:
    """Both counters at the last 32-bit value: the next row takes 2**31."""
    with db.engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {END})"))


def column_types(db: Database) -> dict[str, str]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, data_type FROM information_schema.columns "
                "WHERE column_name = 'id' AND table_name IN ('run_events', 'audit_entries')"
            )
        )
        return {str(table): str(kind) for table, kind in rows}


@pytest.mark.postgres
def test_the_upgrade_lets_the_counters_go_past_32_bits(at_0021: Database) -> None:
    """At 0021 an audit entry past the 32-bit end is refused; 0022 (and its downgrade and
    upgrade again, while every row fits) keeps the rows, and then the same insert works; the
    downgrade is refused while a row needs 64 bits."""
    db = at_0021
    insert = text(
        "INSERT INTO audit_entries (at, actor, action, target_type, summary, prev_hash, hash) "
        "VALUES (now(), 'test', 'test', 'test', '{}', '', :hash) RETURNING id"
    )
    with db.engine.begin() as conn:
        conn.execute(insert, {"hash": "kept"})
    at_the_end(db)
    with pytest.raises(DBAPIError, match="reached maximum value"), db.engine.begin() as conn:
        conn.execute(insert, {"hash": "refused"})

    migrate.upgrade(db)
    assert column_types(db) == {"run_events": "bigint", "audit_entries": "bigint"}
    command.downgrade(migrate.alembic_config(db), "0021")
    assert column_types(db) == {"run_events": "integer", "audit_entries": "integer"}
    migrate.upgrade(db)
    with db.engine.begin() as conn:
        assert conn.execute(insert, {"hash": "past"}).scalar_one() == END + 1
        kept = conn.execute(text("SELECT count(*) FROM audit_entries WHERE hash = 'kept'"))
        assert kept.scalar_one() == 1
    with pytest.raises(DBAPIError, match="out of range"):
        command.downgrade(migrate.alembic_config(db), "0021")


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_run_goes_on_past_32_bits_of_events(
    database: Database, api: Api, admin: httpx.Client
) -> None:
    """With both counters at the 32-bit end, a run of three steps succeeds; its events and
    the audit entry of its workflow's publication carry ids past it, and the API pages its
    events and the audit log across them."""
    at_the_end(database)
    document = workflow(
        "past the end",
        *({"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}} for i in range(3)),
    )
    run_id = start(database, publish(database, document))
    with running_worker(database):
        assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
    with database.engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM run_events WHERE run_id = :r"), {"r": run_id})
        assert min(ids.scalars()) > END
        audit = conn.execute(text("SELECT max(id) FROM audit_entries")).scalar_one()
        assert audit > END

    first = admin.get(f"/api/v1/runs/{run_id}/events", params={"limit": 2})
    assert first.status_code == 200, first.text
    second = admin.get(
        f"/api/v1/runs/{run_id}/events", params={"limit": 50, "cursor": first.json()["next_cursor"]}
    )
    assert second.status_code == 200, second.text
    timeline = admin.get(f"/api/v1/runs/{run_id}/timeline").json()["events"]
    assert first.json()["items"] + second.json()["items"] == list(reversed(timeline))
    entries = admin.get("/api/v1/audit", params={"limit": 1})
    assert entries.status_code == 200, entries.text
    older = admin.get("/api/v1/audit", params={"limit": 1, "cursor": entries.json()["next_cursor"]})
    assert older.status_code == 200, older.text
