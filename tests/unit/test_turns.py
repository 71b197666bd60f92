"""The hot path keeps step runs and attempts as plain rows (turns.StepRow, turns.AttemptRow);
the general path re-attaches them as the ORM's StepRun and StepAttempt without a query."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import inspect

from grantflow.engine.models import StepAttempt, StepRun
from grantflow.engine.turns import AttemptRow, StepRow, columns_of, orm_attempt, orm_step_run


def test_a_step_row_holds_every_column_of_a_step_run() -> None:
    """A column added to StepRun and forgotten here would be lost on the way back."""
    assert {f.name for f in dataclasses.fields(StepRow)} == {
        c.key for c in StepRun.__table__.columns
    }


def test_a_step_row_becomes_a_detached_step_run_with_every_value() -> None:
    started = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    row = StepRow(
        id="s1",
        run_id="r1",
        step_id="grant",
        step_type="http",
        sequence=3,
        iteration=2,
        attempt_group=1,
        status="running",
        attempts=1,
        side_effects=True,
        output=None,
        error=None,
        next_step=None,
        next_attempt_at=None,
        started_at=started,
        finished_at=None,
        counted_at=started,
    )
    step_run = orm_step_run(row)
    assert isinstance(step_run, StepRun)
    assert inspect(step_run).detached  # merged by the general path with load=False
    assert columns_of(step_run) == columns_of(row)
    assert orm_step_run(step_run) is step_run


def test_an_attempt_row_holds_every_column_of_a_step_attempt() -> None:
    assert {f.name for f in dataclasses.fields(AttemptRow)} == {
        c.key for c in StepAttempt.__table__.columns
    }


def test_an_attempt_row_becomes_a_detached_step_attempt_with_every_value() -> None:
    started = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    row = AttemptRow(
        id="a1",
        step_run_id="s1",
        number=1,
        idempotency_key="r1:grant:1-1",
        status="running",
        request={"request": {"method": "POST"}},
        response=None,
        error=None,
        started_at=started,
        finished_at=None,
        duration_ms=None,
    )
    attempt = orm_attempt(row)
    assert isinstance(attempt, StepAttempt)
    assert inspect(attempt).detached  # merged by the general path with load=False
    assert {c.key: getattr(attempt, c.key) for c in StepAttempt.__table__.columns} == (
        dataclasses.asdict(row)
    )
    assert orm_attempt(attempt) is attempt
