"""Which step boundaries wait for the WAL's flush (engine/checkpoint.py): on PostgreSQL a pure
step's success commits without waiting, and every commit that a call or the run's end follows
waits. Each checkpoint the hot path sent for a real run is sent again here, inside a
transaction, and the transaction's `synchronous_commit` read back: the setting the server
applies when the statement's own transaction commits."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, cast

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import func, select, text

from grantflow.engine import checkpoint, hot_path
from grantflow.engine.models import StepAttempt
from grantflow.safety import gate, spend
from grantflow.safety.models import UsageCounter
from grantflow.store import native
from grantflow.store.base import utcnow
from grantflow.store.database import Database, open_database
from tests.support.engine import (
    ACTOR,
    boundary_success,
    events,
    leased_run,
    publish,
    queue,
    run_detail,
    running_worker,
    start,
    wait_status,
    workflow,
)
from tests.support.target import Reply, running_target


def _rolled_back(database: Database, sql: str, params: dict[str, Any], then: str) -> Any:
    """`sql` (a checkpoint statement, as the engine sends it) then `then`, in a transaction
    rolled back afterwards: `then`'s first row."""
    query, names = native.native(sql)
    values = [Jsonb(params[n]) if n in checkpoint._JSON else params[n] for n in names]
    connection = database.engine.raw_connection()
    try:
        driver = cast("psycopg.Connection[Any]", connection.driver_connection)
        with psycopg.RawCursor(driver) as cursor:  # ($1, $2...: as the engine sends it)
            cursor.execute(query, values)
            row = cursor.fetchone() if not then else cursor.execute(then).fetchone()
        driver.rollback()
    finally:
        connection.close()
    return row


def _setting_after(database: Database, sql: str, params: dict[str, Any]) -> str:
    """`synchronous_commit` in a transaction once `sql` ran in it."""
    row = _rolled_back(database, sql, params, "SHOW synchronous_commit")
    assert row is not None
    return str(row[0])


Sent = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every checkpoint statement sent on PostgreSQL (and sent on, unchanged), with its
    parameters."""
    statements: Sent = []
    original = checkpoint.row_on_postgres

    def recording(db: Database, sql: str, params: dict[str, Any]) -> Any:
        statements.append((sql, params))
        return original(db, sql, params)

    monkeypatch.setattr(checkpoint, "row_on_postgres", recording)
    return statements


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # (SQLite: no WAL flush)
def test_only_a_pure_steps_success_commits_without_waiting_for_the_flush(
    database: Database, sent: Sent
) -> None:
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
    database: Database, sent: Sent
) -> None:
    """`?flush_every_step=true` on the database URL: a pure step's success waits too."""
    flushed = open_database(database.url.update_query_dict({"flush_every_step": "true"}))
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


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("lost", "capped", "step_lost"),
    # (under a cap the first step starts on the general path: `b` is the first pure success
    # on the hot path)
    [(2, False, "b"), (1, False, "a"), (3, False, "c"), (2, True, "c")],
    ids=str,
)
def test_a_worker_goes_on_from_the_database_when_a_crash_lost_its_unflushed_steps(
    database: Database, monkeypatch: pytest.MonkeyPatch, lost: int, capped: bool, step_lost: str
) -> None:
    """A server crash (or the restart PostgreSQL makes after one of its processes was killed)
    loses the commits not yet flushed, while the worker that made them goes on with a fresh
    connection. Simulated: the `lost`th pure step's success is written in a transaction that is
    rolled back, and the worker is told it applied. Its next checkpoint (or, under a spend cap,
    the gate's own count for the next step) finds the run behind; the general path reads the
    run again and computes the lost step again, instead of going on from its memory (which
    failed the run as an internal error): the run succeeds, each step recorded and counted
    once."""
    original = checkpoint.row_on_postgres
    lazy: list[str] = []

    def losing(db: Database, sql: str, params: dict[str, Any]) -> Any:
        if "synchronous_commit" not in sql:
            return original(db, sql, params)
        lazy.append(params["step_id"])
        if len(lazy) != lost:
            return original(db, sql, params)
        return _rolled_back(db, sql, params, then="")  # lost with the server

    monkeypatch.setattr(checkpoint, "row_on_postgres", losing)
    wf = publish(database, workflow("lost", *(_set(s, i) for i, s in enumerate("abcd"))))
    if capped:  # (the checkpoint then leaves each next step to the gate's own statement)
        with database.transaction() as session:
            spend.set_cap(
                session, ACTOR, queue(database), workflow=wf, kind="steps", period="day", cap=99
            )
    run_id = start(database, wf)
    with running_worker(database):
        shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded", shown["failure"]
    assert lazy[lost - 1] == step_lost  # the success that was lost
    assert [(s["step_id"], s["status"]) for s in shown["steps"]] == [
        (step_id, "succeeded") for step_id in "abcd"
    ]
    assert [s["output"] for s in shown["steps"]] == [{"n": i} for i in range(4)]
    timeline = [(e["kind"], e["step_id"]) for e in events(database, run_id)]
    succeeded = [step_id for kind, step_id in timeline if kind == "step_succeeded"]
    assert succeeded == ["a", "b", "c", "d"]
    with database.transaction() as session:  # each step start counted once by the gate
        counted = session.execute(
            select(func.sum(UsageCounter.count)).where(
                UsageCounter.scope_id == wf,
                UsageCounter.kind == "steps",
                UsageCounter.period_key.like("d:%"),
            )
        ).scalar_one()
    assert counted == 4


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_success_recorded_without_the_gate_follows_the_same_rule(
    database: Database, sent: Sent
) -> None:
    """`record_succeeded` (the next step passes the gate at its own boundary: a stopping
    worker, a limit checked first): a pure step's success does not wait; a call's does."""
    now = utcnow()
    pure = leased_run(database, "pending")
    assert checkpoint.record_succeeded(
        database, _guard(pure, "pending", now), boundary_success(now)
    )
    call = leased_run(database, "running")
    with database.transaction() as session:  # the call's intent, as record_started wrote it
        session.add(
            StepAttempt(
                id="att-1", step_run_id=call[1], number=1, idempotency_key="k", status="running"
            )
        )
    done = replace(boundary_success(now), attempt_id="att-1", response={"status_code": 200})
    assert checkpoint.record_succeeded(database, _guard(call, "running", now), done)
    assert [_setting_after(database, sql, params) for sql, params in sent] == ["off", "on"]
    assert run_detail(database, pure[0])["current_step"] == "b"
    assert run_detail(database, call[0])["current_step"] == "b"


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_missing_step_run_that_no_crash_explains_still_fails_the_run_visibly(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate finding no step run after an unflushed commit is taken for a lost commit; if
    the general path then finds the step run as it was left, nothing was lost, and the fault is
    Grantflow's own: the run fails as an internal error instead of going on silently."""
    original = hot_path.HotPath._held
    calls: list[str] = []

    def faulty(self: hot_path.HotPath, start: Any) -> bool:
        calls.append(start.step_id)
        if len(calls) == 2:  # (as a bug in the gate's key would)
            raise gate.StepRunMissing("no step run")
        return original(self, start)

    monkeypatch.setattr(hot_path.HotPath, "_held", faulty)
    wf = publish(database, workflow("faulty", *(_set(s, i) for i, s in enumerate("abcd"))))
    with database.transaction() as session:  # (the gate's own statement at each step)
        spend.set_cap(
            session, ACTOR, queue(database), workflow=wf, kind="steps", period="day", cap=99
        )
    run_id = start(database, wf)
    with running_worker(database):
        shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "failed"
    assert shown["failure"]["code"] == "internal_error"
    assert "the safety gate found no step run" in shown["failure"]["message"]


def _guard(run: tuple[str, str], status: str, now: dt.datetime) -> checkpoint.Guard:
    return checkpoint.Guard(run[0], "w1", "t1", "a", run[1], status, now)


def _set(step_id: str, n: int) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": {"n": n}}}


def test_a_statement_whose_final_select_reads_rows_is_never_left_unflushed() -> None:
    """The setting is added as a column of the statement's final SELECT: one that reads rows
    could make the call zero times (and the commit wait, silently) or many."""
    with pytest.raises(RuntimeError, match="final SELECT reads rows"):
        checkpoint._flushed_later("WITH step AS (SELECT 1) SELECT count(*) FROM step")
