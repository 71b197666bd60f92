"""Migration 0021 moves the safety gate's marks from usage_marks onto the step runs they
count (step_runs.counted_at), and its downgrade moves them back: no step start counted before
is counted again after an upgrade, nor after a downgrade."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from grantflow.safety import gate
from grantflow.safety.gate import StepStart
from grantflow.store import migrate
from grantflow.store.database import Database
from tests.support.databases import unmigrated

COUNTED = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own, never migrated."""
    with unmigrated(request.param, tmp_path) as db:
        yield db


def _step_runs(db: Database) -> None:
    """A run with two step runs, the first counted by the gate, the second not."""
    at = f"'{COUNTED.isoformat()}'"
    statements = [
        "INSERT INTO workflows (id, name, description, trigger_type, enabled, created_at, "
        f"updated_at, name_key) VALUES ('wf-1', 'marks', '', 'manual', true, {at}, {at}, 'marks')",
        "INSERT INTO runs (id, workflow_id, version, status, trigger, input, subject, "
        "deadline_at, stuck_after_seconds, pause_requested, retry_count, acted_steps, "
        "created_by, created_at, last_progress_at) VALUES ('run-1', 'wf-1', 1, 'succeeded', "
        f"'manual', '{{}}', '{{}}', {at}, 60, false, 0, '[]', 'x', {at}, {at})",
        *(
            "INSERT INTO step_runs (id, run_id, step_id, step_type, sequence, iteration, "
            "attempt_group, status, attempts, side_effects) "
            f"VALUES ('s{n}', 'run-1', '{step}', 'set', {n}, 2, 1, 'succeeded', 1, false)"
            for n, step in enumerate(("grant", "notify"), start=1)
        ),
        "INSERT INTO step_attempts (id, step_run_id, number, idempotency_key, status, "
        f"started_at) VALUES ('a1', 's1', 1, 'run-1:grant:2-1', 'succeeded', {at})",
        f"INSERT INTO usage_marks (key, counted_at) VALUES ('run-1:grant:2', {at})",
    ]
    with db.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _counted(db: Database) -> dict[str, dt.datetime | None]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT step_id, counted_at FROM step_runs ORDER BY step_id"))
        return {
            step: at if at is None or isinstance(at, dt.datetime) else _parsed(at)
            for step, at in rows
        }


def _parsed(value: str) -> dt.datetime:
    at = dt.datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _marks(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(text("SELECT key FROM usage_marks ORDER BY key")).scalars())


def test_marks_move_to_the_step_runs_and_back(empty: Database) -> None:
    migrate.upgrade(empty, "0020")
    _step_runs(empty)
    migrate.upgrade(empty)
    counted = _counted(empty)
    assert counted["notify"] is None
    assert counted["grant"] is not None
    assert counted["grant"].astimezone(dt.UTC) == COUNTED
    with empty.engine.connect() as conn:
        assert not inspect(conn).has_table("usage_marks")

    # the gate sees the moved mark: `grant` is not counted again, `notify` is counted now
    with empty.transaction() as session:
        for step in ("grant", "notify"):
            assert (
                gate.admit(session, StepStart("run-1", "wf-1", step, 2, 2, False, None, {})) is None
            )
    with empty.engine.connect() as conn:
        steps = conn.execute(
            text("SELECT kind, sum(count) FROM usage_counters GROUP BY kind")
        ).all()
    assert [tuple(row) for row in steps] == [("steps", 2)]  # (notify's day and month)

    command.downgrade(migrate.alembic_config(empty), "0020")
    assert _marks(empty) == ["run-1:grant:2", "run-1:notify:2"]
    with empty.engine.connect() as conn:  # the step runs' children are untouched
        assert conn.execute(text("SELECT id FROM step_attempts")).scalars().all() == ["a1"]
    migrate.upgrade(empty)
    assert all(at is not None for at in _counted(empty).values())
