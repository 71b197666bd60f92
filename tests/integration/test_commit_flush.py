"""Which step boundaries wait for the WAL's flush (engine/checkpoint.py): on PostgreSQL a pure
step's success commits without waiting, and every commit that a call or the run's end follows
waits. Each checkpoint the hot path sent for a real run is sent again here, inside a
transaction, and the transaction's `synchronous_commit` read back: the setting the server
applies when the statement's own transaction commits."""

from __future__ import annotations

from typing import Any, cast

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import text

from grantflow.engine import checkpoint
from grantflow.store import native
from grantflow.store.database import Database, open_database
from tests.support.engine import publish, running_worker, start, wait_status, workflow
from tests.support.target import Reply, running_target


def _setting_after(database: Database, sql: str, params: dict[str, Any]) -> str:
    """`synchronous_commit` in a transaction once `sql` ran in it (then rolled back)."""
    query, names = native.native(sql)
    values = [Jsonb(params[n]) if n in checkpoint._JSON else params[n] for n in names]
    connection = database.engine.raw_connection()
    try:
        driver = cast("psycopg.Connection[Any]", connection.driver_connection)
        with psycopg.RawCursor(driver) as cursor:  # ($1, $2...: as the engine sends it)
            cursor.execute(query, values)
            cursor.execute("SHOW synchronous_commit")
            row = cursor.fetchone()
        driver.rollback()
    finally:
        connection.close()
    assert row is not None
    return str(row[0])


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # (SQLite: no WAL flush)
def test_only_a_pure_steps_success_commits_without_waiting_for_the_flush(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    original = checkpoint.row_on_postgres

    def recording(db: Database, sql: str, params: dict[str, Any]) -> Any:
        sent.append((sql, params))
        return original(db, sql, params)

    monkeypatch.setattr(checkpoint, "row_on_postgres", recording)
    with running_target() as target:
        target.on("/users", Reply(201, {"id": "u-1"}))
        wf = publish(
            database,
            workflow(
                "flushes",
                {"id": "a", "type": "set", "config": {"values": {"n": 1}}},
                {"id": "b", "type": "set", "config": {"values": {"n": 2}}},
                {"id": "c", "type": "set", "config": {"values": {"n": 3}}},
                {
                    "id": "call",
                    "type": "http",
                    "config": {"method": "POST", "url": f"{target.url}/users"},
                },
                {"id": "d", "type": "set", "config": {"values": {"n": 4}}},
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded", shown["failure"]
    assert [s["output"] for s in shown["steps"] if s["step_id"] != "call"] == [
        {"n": 1},
        {"n": 2},
        {"n": 3},
        {"n": 4},
    ]
    # a -> b, b -> c: pure successes; c -> call: its intent rides on c's success; call -> d: a
    # call's success; d: the run's end
    settings = [_setting_after(database, sql, params) for sql, params in sent]
    assert settings == ["off", "off", "on", "on", "on"]
    with database.autocommit.connect() as conn:  # the pooled connections keep the server's
        assert conn.execute(text("SHOW synchronous_commit")).scalar_one() == "on"


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_flush_every_step_makes_every_boundary_wait_for_the_flush(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`?flush_every_step=true` on the database URL: a pure step's success waits too."""
    flushed = open_database(database.url.update_query_dict({"flush_every_step": "true"}))
    sent: list[tuple[str, dict[str, Any]]] = []
    original = checkpoint.row_on_postgres

    def recording(db: Database, sql: str, params: dict[str, Any]) -> Any:
        sent.append((sql, params))
        return original(db, sql, params)

    monkeypatch.setattr(checkpoint, "row_on_postgres", recording)
    try:
        flushed.use_master_keys(database.master_keys)
        wf = publish(flushed, workflow("flushed", *(_set(f"s{i}", i) for i in range(3))))
        run_id = start(flushed, wf)
        with running_worker(flushed):
            shown = wait_status(flushed, run_id, "succeeded", "failed")
    finally:
        flushed.dispose()
    assert shown["status"] == "succeeded", shown["failure"]
    assert [_setting_after(database, sql, params) for sql, params in sent] == ["on"] * 3


def _set(step_id: str, n: int) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": {"n": n}}}


def test_a_statement_whose_final_select_reads_rows_is_never_left_unflushed() -> None:
    """The setting is added as a column of the statement's final SELECT: one that reads rows
    could make the call zero times (and the commit wait, silently) or many."""
    with pytest.raises(RuntimeError, match="final SELECT reads rows"):
        checkpoint._flushed_later("WITH step AS (SELECT 1) SELECT count(*) FROM step")
