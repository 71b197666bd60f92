"""Creating a run on PostgreSQL in one statement: the run, its first step run, its `queued`
event and its queue item with the workers' wake-up, where the general path sends four (two
flushes, the event at commit and the queue's upsert). The ids are made here, so no part needs
another's answer; the foreign keys are checked at the statement's end, when every row is in.

The run and its step run are then attached to the caller's session as if read from the
database: a later change to them is an UPDATE at flush, and nothing is inserted twice. Every
column is given a value first, so that no attribute is left to load.

SQLite and any other queue take the general path in engine/runs.py, as does a run held at its
start (the workflow paused for safety): its hold writes more than the run's creation."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, TypeGuard

from sqlalchemy import CTE, Column, Select, Table, bindparam, insert
from sqlalchemy.orm import Session, make_transient_to_detached

from grantflow.engine.models import Run, RunEvent, StepRun
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import Queue
from grantflow.store.base import Base, utcnow


def applies(queue: Queue, session: Session) -> TypeGuard[DatabaseQueue]:
    """Is this a start to create in one statement: PostgreSQL, the queue in its database?"""
    database = session.info.get("database")
    return (
        isinstance(queue, DatabaseQueue)
        and database is not None
        and database.dialect == "postgresql"
        and queue.database is database
    )


def create(
    session: Session,
    queue: DatabaseQueue,
    run: Run,
    step_run: StepRun,
    event: dict[str, Any],
    at: dt.datetime,
) -> None:
    """Write `run` (transient, with `step_run` among its step runs), the event's columns and the
    queue item available `at`; then attach the run and its step run to `session`."""
    params = _values("run", run)
    step_run.run_id = run.id  # (the general path's flush sets it from the relationship)
    params |= _values("step", step_run)
    params |= {"event_run_id": run.id, "event_at": utcnow(), "event_step_id": None}
    params |= {"event_attempt": None, **{f"event_{key}": value for key, value in event.items()}}
    item, item_params = queue.item_of_new_run(session, run.id, at)
    session.execute(_statement(item), params | item_params)
    for instance in (run, step_run):
        make_transient_to_detached(instance)
    session.add(run)  # (its step runs with it)


def _inserts(table: Table, prefix: str, columns: list[Column[Any]]) -> CTE:
    values = {c.key: bindparam(f"{prefix}_{c.key}", type_=c.type) for c in columns}
    return insert(table).values(values).cte(prefix)


_EVENT = RunEvent.__table__
assert isinstance(_EVENT, Table)
# (made once per queue statement: a statement's cache key is made once per object)
_WRITES = [
    _inserts(table, prefix, list(table.columns))
    for table, prefix in ((Run.__table__, "run"), (StepRun.__table__, "step"))
    if isinstance(table, Table)
] + [_inserts(_EVENT, "event", [c for c in _EVENT.columns if c.key != "id"])]


@functools.cache
def _statement(item: Select[Any]) -> Select[Any]:
    return item.add_cte(*_WRITES)


def _values(prefix: str, instance: Base) -> dict[str, Any]:
    """Every column's value, the column's default where the instance has none (set on the
    instance too: nothing is left to load once it is attached)."""
    table = instance.__table__
    assert isinstance(table, Table)
    values: dict[str, Any] = {}
    for column in table.columns:
        if column.key in instance.__dict__:
            value = instance.__dict__[column.key]
        elif column.default is None:
            value = None
        elif column.default.is_callable:
            value = column.default.arg(None)
        else:
            value = column.default.arg
        setattr(instance, column.key, value)
        values[f"{prefix}_{column.key}"] = value
    return values
