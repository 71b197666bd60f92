"""The statements a worker sends in PostgreSQL's own SQL, outside SQLAlchemy's execution (a
claim, a take, a checkpoint: store/native.py), meet a lost server as SQLAlchemy's own
execution does: one failure, then every pooled connection of both pools is fresh; an error
that is not a lost connection keeps it; and every error is SQLAlchemy's, which the engine
tells from a fault of its own."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from grantflow.queue.database import DatabaseQueue
from grantflow.store import native
from grantflow.store.database import Database, open_database
from tests.support.databases import kill_connections


@pytest.fixture
def pg(database: Database) -> Database:
    if database.dialect != "postgresql":
        pytest.skip("connections to SQLite cannot be lost")
    return database


def _fill_pools(database: Database, count: int) -> None:
    """`count` connections in each pool, open and idle (a busy worker's)."""
    with contextlib.ExitStack() as stack:
        for engine in (database.autocommit, database.engine):
            for _ in range(count):
                stack.enter_context(engine.connect()).execute(text("SELECT 1"))


def test_a_claim_on_a_restarted_server_fails_once_then_every_connection_is_fresh(
    pg: Database,
) -> None:
    queue = DatabaseQueue(pg)
    _fill_pools(pg, 4)
    assert kill_connections(pg) >= 8
    with pytest.raises(OperationalError) as raised:
        queue.claim("w1", 4, 30.0)
    assert raised.value.connection_invalidated
    for _ in range(6):  # (each of the other pooled connections was as dead)
        assert queue.claim("w1", 4, 30.0) == []
    with pg.transaction() as session:  # the other pool was renewed with it
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_an_error_that_is_not_a_lost_connection_keeps_the_connection(pg: Database) -> None:
    backend = native.first_row(pg, "SELECT pg_backend_pid()", {})[0]
    with pytest.raises(OperationalError) as raised:  # (query_canceled: an OperationalError)
        native.first_row(pg, "SELECT pg_cancel_backend(pg_backend_pid()), pg_sleep(5)", {})
    assert not raised.value.connection_invalidated
    assert native.first_row(pg, "SELECT pg_backend_pid()", {})[0] == backend


def test_a_server_that_refuses_connections_raises_sqlalchemys_error(pg: Database) -> None:
    """Not the driver's own: the interpreter leaves a database error to the lease, where
    anything else fails the run as an internal fault."""
    unreachable = open_database(pg.url.set(host="127.0.0.1", port=1))
    try:
        with pytest.raises(DBAPIError) as raised:
            native.first_row(unreachable, "SELECT 1", {})
        assert isinstance(raised.value, OperationalError)
    finally:
        unreachable.dispose()


def test_a_database_errors_text_names_its_statement_not_the_values_sent(
    database: Database,
) -> None:
    """What an error says (logged, kept, shown) never carries the values sent with its
    statement — they hold rows' data — on either path: SQLAlchemy's execution, and the
    driver's own statements (PostgreSQL)."""
    secret = "person-secret-4242"
    failing = "SELECT CAST(:value AS integer) + CAST(:other AS integer)"
    with pytest.raises(DBAPIError) as raised, database.engine.connect() as conn:
        conn.execute(text(failing + " FROM no_such_table"), {"value": secret, "other": secret})
    assert "no_such_table" in str(raised.value)
    assert secret not in str(raised.value)
    if database.dialect == "postgresql":
        with pytest.raises(DBAPIError) as native_raised:
            native.first_row(
                database, "SELECT %(value)s::text FROM no_such_table", {"value": secret}
            )
        assert "no_such_table" in str(native_raised.value)
        assert secret not in str(native_raised.value)
