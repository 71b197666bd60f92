"""The database going away under the API (a restart, a failover) is a 503 to retry, never a
500, and the next request works on fresh connections."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import create_engine, text

from grantflow.store.database import Database
from tests.conftest import Api


def _kill_connections(database: Database) -> int:
    """Terminate every server connection to the test database (what a restart does)."""
    admin = create_engine(database.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database.url.database},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(killed)


def test_a_lost_database_connection_is_a_503_then_recovers(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    if database.dialect != "postgresql":
        pytest.skip("connections to SQLite cannot be lost")
    assert admin.get("/api/v1/applications").status_code == 200
    assert _kill_connections(database) >= 1
    first = admin.get("/api/v1/applications")
    assert first.status_code == 503, first.text
    error = first.json()["error"]
    assert (error["code"], error["failure_class"]) == ("database_unavailable", "transient")
    assert first.headers["retry-after"] == "1"
    again = admin.get("/api/v1/applications")
    assert again.status_code == 200, again.text
