"""Creating a run on PostgreSQL in one statement: the run, its first step run, its `queued`
event and its queue item with the workers' wake-up, where the general path sends four (two
flushes, the event at commit and the queue's upsert). The ids are made here, so no part needs
another's answer; the foreign keys are checked at the statement's end, when every row is in.

A start may also skip reading the workflow: each process keeps, per workflow, what its last
start read (`Known`: the exact id, the name, the active version and that version's stored
plan). The statement then writes the run only while the workflow is still so — enabled, not
paused for safety, with that name, that active version and that very plan — and every other
row only with it. When it writes nothing (the workflow changed since), the start forgets what
it knew and takes the general path, which reads the workflow and refuses, holds or starts the
run as it finds it. So a start never acts on a stale workflow; it only spares the read.

The run and its step run are then attached to the caller's session as if read from the
database: a later change to them is an UPDATE at flush, and nothing is inserted twice. Every
column is given a value first, so that no attribute is left to load.

SQLite and any other queue take the general path in engine/runs.py, as does a run held at its
start (the workflow paused for safety): its hold writes more than the run's creation."""

from __future__ import annotations

import datetime as dt
import functools
import weakref
from dataclasses import dataclass
from typing import Any, TypeGuard

from sqlalchemy import (
    CTE,
    Column,
    Select,
    String,
    Table,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, make_transient_to_detached

from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.engine.models import Run, RunEvent, StepRun
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import Queue
from grantflow.store.base import Base, JSONType, utcnow
from grantflow.store.database import Database


@dataclass(frozen=True)
class Known:
    """A workflow as a start read it, startable: enabled, not paused, with an active version."""

    workflow_id: str
    name: str
    version: int
    plan: Any  # the active version's stored plan


# per database, per exact workflow id (bounded: emptied when it grows past _KNOWN_MAX)
_KNOWN: weakref.WeakKeyDictionary[Database, dict[str, Known]] = weakref.WeakKeyDictionary()
_KNOWN_MAX = 1024


def known(session: Session, workflow_id: str) -> Known | None:
    """What this process's last start of `workflow_id` read, if it was startable."""
    return _KNOWN.get(session.info["database"], {}).get(workflow_id)


def remember(session: Session, workflow: Workflow, plan: Any) -> None:
    """Keep `workflow` as read for the next start, or forget it when it is not startable."""
    found = _KNOWN.setdefault(session.info["database"], {})
    if (
        not workflow.enabled
        or workflow.safety_pause is not None
        or workflow.active_version is None
        or plan is None
    ):
        found.pop(workflow.id, None)
        return
    if len(found) >= _KNOWN_MAX:
        found.clear()
    found[workflow.id] = Known(workflow.id, workflow.name, workflow.active_version, plan)


def forget(session: Session, workflow_id: str) -> None:
    _KNOWN.get(session.info["database"], {}).pop(workflow_id, None)


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
    known: Known | None = None,
) -> bool:
    """Write `run` (transient, with `step_run` among its step runs), the event's columns and the
    queue item available `at`; then attach the run and its step run to `session`. `known`: the
    workflow as it was read before, which it must still be; False when it no longer is (and
    nothing was written)."""
    params = _values("run", run)
    step_run.run_id = run.id  # (the general path's flush sets it from the relationship)
    params |= _values("step", step_run)
    params |= {"event_run_id": run.id, "event_at": utcnow(), "event_step_id": None}
    params |= {"event_attempt": None, **{f"event_{key}": value for key, value in event.items()}}
    source = None
    if known is not None:
        source = _GUARDED[0]
        params |= {"known_workflow_id": known.workflow_id, "known_name": known.name}
        params |= {"known_version": known.version, "known_plan": known.plan}
    item, item_params = queue.item_of_new_run(session, run.id, at, source)
    written = session.execute(_statement(item, known is not None), params | item_params)
    if written.scalar_one() != 1:
        return False
    for instance in (run, step_run):
        make_transient_to_detached(instance)
    session.add(run)  # (its step runs with it)
    return True


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_RUN, _STEP, _EVENT = _table(Run), _table(StepRun), _table(RunEvent)


def _inserts(table: Table, prefix: str, columns: list[Column[Any]]) -> CTE:
    values = {c.key: bindparam(f"{prefix}_{c.key}", type_=c.type) for c in columns}
    return insert(table).values(values).cte(prefix)


def _typed(prefix: str, column: Column[Any]) -> Any:
    """A value selected for `column`, typed as PostgreSQL must know it in a select list; text
    without the column's length (an explicit cast to varchar(n) would cut a longer value, where
    the insert refuses it)."""
    kind = String() if isinstance(column.type, String) else column.type
    return cast(bindparam(f"{prefix}_{column.key}", type_=column.type), kind)


def _inserts_with(source: CTE, table: Table, prefix: str, columns: list[Column[Any]]) -> CTE:
    """The same insert, of one row per row of `source` (the run's own write)."""
    values = select(*(_typed(prefix, c) for c in columns))
    return (
        insert(table).from_select([c.key for c in columns], values.select_from(source)).cte(prefix)
    )


def _startable_run() -> CTE:
    """The run's insert, of one row while the workflow is as it was known."""
    workflows, versions = _table(Workflow), _table(WorkflowVersion)
    columns = list(_RUN.columns)
    values = select(*(_typed("run", c) for c in columns))
    w, v = workflows.c, versions.c
    startable = values.select_from(
        workflows.join(versions, (v.workflow_id == w.id) & (v.number == w.active_version))
    ).where(
        w.id == bindparam("known_workflow_id"),
        w.name == bindparam("known_name"),
        w.active_version == bindparam("known_version"),
        w.enabled.is_(True),
        # (a pause lifted through the ORM is stored as JSON null)
        or_(w.safety_pause.is_(None), func.jsonb_typeof(w.safety_pause) == literal("null")),
        v.plan == cast(bindparam("known_plan", type_=JSONType), JSONType),
    )
    return (
        insert(_RUN)
        .from_select([c.key for c in columns], startable)
        .returning(_RUN.c.id)
        .cte("run")
    )


_EVENT_COLUMNS = [c for c in _EVENT.columns if c.key != "id"]
# (made once per queue statement: a statement's cache key is made once per object)
_WRITES = [
    _inserts(_RUN, "run", list(_RUN.columns)),
    _inserts(_STEP, "step", list(_STEP.columns)),
    _inserts(_EVENT, "event", _EVENT_COLUMNS),
]
_GUARDED_RUN = _startable_run()
_GUARDED = [
    _GUARDED_RUN,
    _inserts_with(_GUARDED_RUN, _STEP, "step", list(_STEP.columns)),
    _inserts_with(_GUARDED_RUN, _EVENT, "event", _EVENT_COLUMNS),
]


@functools.cache
def _statement(item: Select[Any], guarded: bool) -> Select[Any]:
    return item.add_cte(*(_GUARDED if guarded else _WRITES))


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
