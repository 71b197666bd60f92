"""PostgreSQL URL options Grantflow passes to psycopg: `prepare_threshold=none` keeps every
statement unprepared (what a pooler in transaction mode needs); a bad value names the setting."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from grantflow.config import load_settings
from grantflow.errors import ConfigurationError
from grantflow.store.database import open_database
from tests.support.databases import PostgresRun

pytestmark = [pytest.mark.postgres]


def prepared_after_six_runs(url: URL) -> int:
    db = open_database(url)
    try:
        with db.engine.connect() as conn:
            for _ in range(6):  # (psycopg's default prepares a query on its fifth run)
                conn.execute(text("SELECT 1 WHERE 1 = :one"), {"one": 1})
            prepared = conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))
            return int(prepared.scalar_one())
    finally:
        db.dispose()


@pytest.fixture
def url(_postgres_run: PostgresRun) -> URL:
    return _postgres_run.url


def test_prepare_threshold_none_prepares_nothing(url: URL) -> None:
    assert prepared_after_six_runs(url) >= 1
    assert prepared_after_six_runs(url.update_query_dict({"prepare_threshold": "none"})) == 0
    assert prepared_after_six_runs(url.update_query_dict({"prepare_threshold": "100"})) == 0


def test_a_bad_prepare_threshold_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(database_url="postgresql://u@127.0.0.1/db?prepare_threshold=soon")
    assert "GRANTFLOW_DATABASE_URL" in str(refused.value)
    assert "prepare_threshold must be a whole number or none" in str(refused.value)


def test_flush_every_step_is_read_by_grantflow_and_kept_from_the_driver(url: URL) -> None:
    """`?flush_every_step=` (engine/checkpoint.py) is Grantflow's own: the driver, which
    refuses options it does not know, never sees it; both pools connect."""
    for value, expected in (("true", True), ("off", False)):
        db = open_database(url.update_query_dict({"flush_every_step": value}))
        try:
            assert db.flush_every_step is expected
            for engine in (db.engine, db.autocommit):
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT 1")).scalar_one() == 1
        finally:
            db.dispose()
    db = open_database(url)
    try:
        assert db.flush_every_step is False  # the default: pure steps' successes do not wait
    finally:
        db.dispose()


def test_a_bad_flush_every_step_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(database_url="postgresql://u@127.0.0.1/db?flush_every_step=maybe")
    assert "GRANTFLOW_DATABASE_URL" in str(refused.value)
    assert "flush_every_step must be true or false, not 'maybe'" in str(refused.value)


def test_flush_every_step_is_refused_on_sqlite_and_when_opening_with_a_bad_value(
    url: URL,
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(database_url="sqlite:///./x.db?flush_every_step=true")
    assert "flush_every_step is an option of a postgresql URL only" in str(refused.value)
    with pytest.raises(ValueError, match="flush_every_step must be true or false, not 'soon'"):
        open_database(url.update_query_dict({"flush_every_step": "soon"}))
