"""One-statement checkpoints: the hot path between consecutive steps of a running run.

While a worker holds a run's lease and the run keeps succeeding steps, the state it would read
back at each step boundary is what it wrote itself. So instead of locking and reloading the run,
it commits each step boundary in one guarded write: the run row is locked only while the run is
still `running`, not asked to pause, inside its deadline, at the expected step, leased by this
worker, with the step in the expected status; every other write depends on that row. When the
guard does not hold (an operator paused or cancelled the run, the lease was lost, the deadline
passed) nothing is written, and the interpreter takes its general path, which reads the run and
acts on what changed.

Three boundaries have a checkpoint: a step's intent before an external call (`record_started`),
a step's success together with the next step (`record_succeeded`), and the last step's success
with the run's end (`record_run_succeeded`). PostgreSQL runs each as
one statement (data-modifying CTEs) in autocommit: one round trip and one commit. SQLite runs
the same writes as separate statements in one transaction (in-process: no round trips).

A pure step's success (no call's intent written with it) commits on PostgreSQL without waiting
for the WAL's flush to disk (`synchronous_commit` off for that one transaction): nothing
outside the database acts on it before a later commit that does wait — the next call's intent,
the run's end, any write of the general path — and the WAL is flushed in order, so that
commit makes this one durable too. A server crash in between loses only pure steps' outcomes,
which the worker (it finds the run behind its memory: interpreter.py) or the run's next worker
computes again; no call, e-mail or run end ever follows a commit the server could lose.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, bindparam, text
from sqlalchemy.sql.elements import TextClause

from grantflow.engine.models import Run, RunEvent, StepAttempt, StepRun
from grantflow.store import native
from grantflow.store.database import Database

if TYPE_CHECKING:
    from grantflow.safety.gate import StepStart


@dataclass(frozen=True)
class Guard:
    """What the run must still be for a checkpoint to apply."""

    run_id: str
    worker_id: str
    lease_token: str  # the worker turn's token: the run must still carry it
    step_id: str  # the run's current step
    step_run_id: str
    step_status: str  # the step run's status as this worker left it
    now: dt.datetime  # the engine clock: the deadline must be later


@dataclass(frozen=True)
class NextStep:
    """The step run that becomes current: inserted `pending`."""

    id: str
    step_id: str
    step_type: str
    sequence: int
    iteration: int
    side_effects: bool


@dataclass(frozen=True)
class Started:
    """An external call's intent: the step runs, its attempt is logged before the call."""

    attempt_id: str
    idempotency_key: str
    request: dict[str, Any]  # rendered, secrets redacted
    started_at: dt.datetime
    event: dict[str, Any]  # the step_started timeline event's data


@dataclass(frozen=True)
class Succeeded:
    """A step's success, the attempt it closes (external calls), and the step after it (None:
    the step ends the run)."""

    attempts: int
    output: Any
    started_at: dt.datetime
    finished_at: dt.datetime
    event: dict[str, Any]  # the step_succeeded timeline event's data
    stuck_at: dt.datetime  # the run's progress is `guard.now`; stuck after this
    next: NextStep | None
    attempt_id: str | None = None
    response: dict[str, Any] | None = None
    duration_ms: float | None = None
    # the next step's intent when it is an external call: it starts in the same write
    next_started: Started | None = None


# --- the statements -------------------------------------------------------------------------------
# The run must still carry this worker turn's lease token. It is a column of the row the guard
# locks, so it is checked on the row's latest version even when the statement waited for the
# lock (the other tables' conditions are read in the statement's snapshot): a successor that
# took the run over has written its own token first, and this write does nothing. The queue
# lease must also be this worker's and unexpired.
_GUARD = (
    "runs.id = :run_id AND runs.status = 'running' AND runs.pause_requested = false "
    "AND runs.lease_token = :lease_token "
    "AND runs.current_step = :step_id AND runs.deadline_at > :now "
    "AND EXISTS (SELECT 1 FROM queue_items q WHERE q.run_id = :run_id "
    "AND q.lease_owner = :worker_id AND q.lease_expires_at > :now) "
    "AND EXISTS (SELECT 1 FROM step_runs s WHERE s.id = :step_run_id "
    "AND s.status = :step_status)"
)
_PROGRESS = (
    "UPDATE runs SET current_step = :next_step_id, last_progress_at = :now, "
    f"stuck_at = :stuck_at WHERE {_GUARD}"
)


_STEP_RUNNING = (
    "UPDATE step_runs SET status = 'running', attempts = 1, started_at = :started_at "
    "WHERE id = :step_run_id"
)
_ATTEMPT_COLUMNS = (
    "INSERT INTO step_attempts (id, step_run_id, number, idempotency_key, status, request, "
    "started_at) "
)
_ATTEMPT_VALUES = ":attempt_id, :step_run_id, 1, :idempotency_key, 'running', :request, :started_at"
_ATTEMPT_DONE = (
    "UPDATE step_attempts SET status = 'succeeded', response = :response, "
    "finished_at = :finished_at, duration_ms = :duration_ms WHERE id = :attempt_id"
)
_STEP_DONE = (
    "UPDATE step_runs SET status = 'succeeded', attempts = :attempts, output = :output, "
    # (as the ORM: a cleared error is JSON null, a never-set one stays SQL NULL)
    "error = CASE WHEN error IS NULL THEN error ELSE :no_error END, "
    "next_step = :next_step_id, started_at = :started_at, "
    "finished_at = :finished_at WHERE id = :step_run_id"
)
_EVENT_COLUMNS = "INSERT INTO run_events (run_id, at, kind, step_id, attempt, data) "
_STARTED_EVENT = ":run_id, :started_at, 'step_started', :step_id, 1, :event"
_SUCCEEDED_EVENT = ":run_id, :finished_at, 'step_succeeded', :step_id, :attempts, :event"
_NEXT_COLUMNS = (
    "INSERT INTO step_runs (id, run_id, step_id, step_type, sequence, iteration, "
    "attempt_group, status, attempts, side_effects, started_at, output, error, counted_at) "
)
# (`counted_at`: NULL, the next step passes the safety gate at its own start; or, where the
# gate rides on the statement, `{counted}`: gate.COUNTED_AT)
_NEXT_VALUES = (
    ":next_id, :run_id, :next_step_id, :next_type, :next_sequence, :next_iteration, "
    "1, :next_status, :next_attempts, :next_side_effects, :next_started_at, :no_output, "
    ":no_error, NULL"
)
_NEXT_VALUES_COUNTED = _NEXT_VALUES.removesuffix("NULL") + "{counted}"
# the next step's intent, when it is an external call that starts in the same write
_NEXT_ATTEMPT_VALUES = (
    ":next_attempt_id, :next_id, 1, :next_key, 'running', :next_request, :next_started_at"
)
_NEXT_STARTED_EVENT = ":run_id, :next_started_at, 'step_started', :next_step_id, 1, :next_event"
# PostgreSQL runs a statement's CTEs in no set order: both events in one insert, in order
_BOTH_EVENTS = (
    f"{_EVENT_COLUMNS} SELECT :run_id, v.at, v.kind, v.step_id, v.attempt, v.data FROM step, "
    "(VALUES (1, CAST(:finished_at AS timestamptz), 'step_succeeded', "
    "CAST(:step_id AS varchar), CAST(:attempts AS integer), CAST(:event AS jsonb)), "
    "(2, CAST(:next_started_at AS timestamptz), 'step_started', CAST(:next_step_id AS varchar), "
    "1, CAST(:next_event AS jsonb))) AS v(n, at, kind, step_id, attempt, data) ORDER BY v.n"
)


_RUNS, _STEPS = Run.__table__.c, StepRun.__table__.c
_EVENTS, _ATTEMPTS = RunEvent.__table__.c, StepAttempt.__table__.c
# Parameters bound with the columns' own types (UTC timestamps, JSON, booleans).
_TYPES = {
    "now": _RUNS.last_progress_at.type,
    "stuck_at": _RUNS.stuck_at.type,
    "started_at": _STEPS.started_at.type,
    "finished_at": _STEPS.finished_at.type,
    "output": _STEPS.output.type,
    # JSON null, as the ORM writes None into a JSON column (not SQL NULL)
    "no_output": _STEPS.output.type,
    "no_error": _STEPS.error.type,
    "event": _EVENTS.data.type,
    "request": _ATTEMPTS.request.type,
    "response": _ATTEMPTS.response.type,
    "next_side_effects": _STEPS.side_effects.type,
    "next_started_at": _STEPS.started_at.type,
    "next_request": _ATTEMPTS.request.type,
    "next_event": _EVENTS.data.type,
    "run_finished_at": _RUNS.finished_at.type,
    "run_event": _EVENTS.data.type,
}
_JSON = frozenset(name for name, kind in _TYPES.items() if isinstance(kind, JSON))


def _typed(sql: str) -> TextClause:
    return text(sql).bindparams(
        *(bindparam(name, type_=kind) for name, kind in _TYPES.items() if f":{name}" in sql)
    )


# PostgreSQL: the guard's row drives every write, in one statement.
_POSTGRES_STARTED = _typed(
    f"WITH run AS (SELECT runs.id FROM runs WHERE {_GUARD} FOR UPDATE), "
    f"step AS ({_STEP_RUNNING} AND EXISTS (SELECT 1 FROM run) RETURNING id), "
    f"attempt AS ({_ATTEMPT_COLUMNS} SELECT {_ATTEMPT_VALUES} FROM step), "
    f"event AS ({_EVENT_COLUMNS} SELECT {_STARTED_EVENT} FROM step) "
    "SELECT count(*) FROM step"
)
# the run row guarded and written (`run`), then the step's success and its attempt
_ATTEMPT_DONE_CTE = f"attempt AS ({_ATTEMPT_DONE} AND EXISTS (SELECT 1 FROM step))"
_STEP_DONE_CTES = (
    f"step AS ({_STEP_DONE} AND EXISTS (SELECT 1 FROM run) RETURNING id), {_ATTEMPT_DONE_CTE}"
)
_PROGRESS_CTES = f"WITH run AS ({_PROGRESS} RETURNING runs.id), {_STEP_DONE_CTES}"
_SUCCEEDED_CTES = (
    f"{_PROGRESS_CTES}, "
    f"event AS ({_EVENT_COLUMNS} SELECT {_SUCCEEDED_EVENT} FROM step), "
    f"next AS ({_NEXT_COLUMNS} SELECT {_NEXT_VALUES} FROM step)"
)
_POSTGRES_SUCCEEDED = _typed(f"{_SUCCEEDED_CTES} SELECT (SELECT count(*) FROM step)")
# ... and the safety gate's common case for the next step in the same write (gate.folded_ctes,
# before the next step run, which it marks counted): one commit per step boundary, not two
_ADMITTED = "EXISTS (SELECT 1 FROM mark)"
_POSTGRES_SUCCEEDED_ADMITTING = (
    f"{_PROGRESS_CTES}, "
    "{gate}, "
    f"event AS ({_EVENT_COLUMNS} SELECT {_SUCCEEDED_EVENT} FROM step), "
    f"next AS ({_NEXT_COLUMNS} SELECT {_NEXT_VALUES_COUNTED} FROM step) "
    f"SELECT (SELECT count(*) FROM step), {_ADMITTED}"
)
# ... and the next call's intent with the gate's common case (gate.folded_ctes, between `attempt`
# and the writes that depend on it): the intent is written only when the gate counted the
# call; otherwise the call is inserted `pending`, to pass the gate at its own boundary
_POSTGRES_SUCCEEDED_AND_STARTED_ADMITTING = (
    f"{_PROGRESS_CTES}, "
    "{gate}, "
    f"event AS ({_BOTH_EVENTS.replace(' ORDER BY', f' WHERE v.n = 1 OR {_ADMITTED} ORDER BY')}), "
    f"next AS ({_NEXT_COLUMNS} SELECT "
    ":next_id, :run_id, :next_step_id, :next_type, :next_sequence, :next_iteration, 1, "
    f"CASE WHEN {_ADMITTED} THEN 'running' ELSE 'pending' END, "
    f"CASE WHEN {_ADMITTED} THEN 1 ELSE 0 END, :next_side_effects, "
    f"CASE WHEN {_ADMITTED} THEN CAST(:next_started_at AS timestamptz) END, "
    ":no_output, :no_error, {counted} FROM step), "
    f"next_attempt AS ({_ATTEMPT_COLUMNS} SELECT {_NEXT_ATTEMPT_VALUES} FROM step, mark) "
    f"SELECT (SELECT count(*) FROM step), {_ADMITTED}"
)
# A run's last step succeeding ends the run (when no run-status listener is concerned): the
# step's success, the run `succeeded`, both events in order, the queue item gone.
_RUN_SUCCEEDED = (
    "UPDATE runs SET status = 'succeeded', finished_at = :run_finished_at, "
    f"last_progress_at = :now, stuck_at = :stuck_at WHERE {_GUARD}"
)
_END_EVENTS = (
    f"{_EVENT_COLUMNS} SELECT :run_id, v.at, v.kind, v.step_id, v.attempt, v.data FROM step, "
    "(VALUES (1, CAST(:finished_at AS timestamptz), 'step_succeeded', "
    "CAST(:step_id AS varchar), CAST(:attempts AS integer), CAST(:event AS jsonb)), "
    "(2, CAST(:run_finished_at AS timestamptz), 'succeeded', CAST(:step_id AS varchar), "
    "CAST(NULL AS integer), CAST(:run_event AS jsonb))) "
    "AS v(n, at, kind, step_id, attempt, data) ORDER BY v.n"
)
_DEQUEUE = "DELETE FROM queue_items WHERE run_id = :run_id"
_POSTGRES_RUN_SUCCEEDED = _typed(
    f"WITH run AS ({_RUN_SUCCEEDED} RETURNING runs.id), {_STEP_DONE_CTES}, "
    f"event AS ({_END_EVENTS}), "
    f"dequeue AS ({_DEQUEUE} AND EXISTS (SELECT 1 FROM step)) "
    "SELECT count(*) FROM step"
)
# SQLite: the guard first (BEGIN IMMEDIATE already holds the write lock), then the writes.
_SQLITE_STARTED = [
    _typed(f"SELECT runs.id FROM runs WHERE {_GUARD}"),
    _typed(_STEP_RUNNING),
    _typed(f"{_ATTEMPT_COLUMNS} VALUES ({_ATTEMPT_VALUES})"),
    _typed(f"{_EVENT_COLUMNS} VALUES ({_STARTED_EVENT})"),
]
_SQLITE_SUCCEEDED = [
    _typed(_PROGRESS),
    _typed(_STEP_DONE),
    _typed(_ATTEMPT_DONE),
    _typed(f"{_EVENT_COLUMNS} VALUES ({_SUCCEEDED_EVENT})"),
    _typed(f"{_NEXT_COLUMNS} VALUES ({_NEXT_VALUES})"),
]
_SQLITE_NEXT_STARTED = [
    _typed(
        "UPDATE step_runs SET status = 'running', attempts = 1, started_at = :next_started_at "
        "WHERE id = :next_id"
    ),
    _typed(f"{_EVENT_COLUMNS} VALUES ({_NEXT_STARTED_EVENT})"),
    _typed(f"{_ATTEMPT_COLUMNS} VALUES ({_NEXT_ATTEMPT_VALUES})"),
]


_SQLITE_RUN_SUCCEEDED = [
    _typed(_RUN_SUCCEEDED),
    _typed(_STEP_DONE),
    _typed(_ATTEMPT_DONE),
    _typed(f"{_EVENT_COLUMNS} VALUES ({_SUCCEEDED_EVENT})"),
    _typed(
        f"{_EVENT_COLUMNS} VALUES (:run_id, :run_finished_at, 'succeeded', :step_id, NULL, "
        ":run_event)"
    ),
    _typed(_DEQUEUE),
]


_NULLS = {"no_output": None, "no_error": None}


# --- applying them --------------------------------------------------------------------------------
def record_started(database: Database, guard: Guard, started: Started) -> bool:
    """Commit an external call's intent if the run is still as this worker left it; False
    (and nothing written) otherwise."""
    params = {**guard.__dict__, **started.__dict__, **_NULLS}
    return _apply(database, params, _POSTGRES_STARTED, _SQLITE_STARTED, selects=True)


def record_succeeded(database: Database, guard: Guard, done: Succeeded) -> bool:
    """Commit a step's success and the next step, `pending`, if the run is still as this
    worker left it; False (and nothing written) otherwise."""
    if done.next_started is not None:  # (not an assert: it must hold under `python -O` too)
        raise ValueError("an intent is written only with the gate: record_succeeded_admitting")
    params = _succeeded_params(guard, done)
    return _apply(
        database,
        params,
        _POSTGRES_SUCCEEDED,
        _sqlite_succeeded(done),
        selects=False,
        local=not done.attempt_id,
        flush=flushes(database, done),
    )


def flushes(database: Database, done: Succeeded) -> bool:
    """Must this success's commit wait for the WAL's flush? Not a pure step's, unless a call's
    intent rides on it (the call follows the commit) or the database's URL asks for every
    step's (`?flush_every_step=true`)."""
    return bool(done.attempt_id) or done.next_started is not None or database.flush_every_step


def _sqlite_succeeded(done: Succeeded) -> list[TextClause]:
    statements = list(_SQLITE_SUCCEEDED)
    if not done.attempt_id:
        statements.remove(_SQLITE_SUCCEEDED[2])  # a local step keeps no attempt log
    return statements


def _succeeded_params(guard: Guard, done: Succeeded) -> dict[str, Any]:
    following, started = done.next, done.next_started
    return {
        **guard.__dict__,
        **{k: v for k, v in done.__dict__.items() if k not in ("next", "next_started")},
        "next_id": following.id if following else None,
        "next_step_id": following.step_id if following else None,
        "next_type": following.step_type if following else None,
        "next_sequence": following.sequence if following else None,
        "next_iteration": following.iteration if following else None,
        "next_side_effects": following.side_effects if following else None,
        "next_status": "running" if started else "pending",
        "next_attempts": 1 if started else 0,
        "next_started_at": started.started_at if started else None,
        "next_attempt_id": started.attempt_id if started else None,
        "next_key": started.idempotency_key if started else None,
        "next_request": started.request if started else None,
        "next_event": started.event if started else None,
        **_NULLS,
    }


def record_run_succeeded(database: Database, guard: Guard, done: Succeeded) -> bool:
    """Commit the last step's success (`done.next` is None) and the run's end if the run is
    still as this worker left it; False (and nothing written) otherwise."""
    assert done.next is None and done.next_started is None
    params = {
        **_succeeded_params(guard, done),
        "run_finished_at": done.finished_at,
        "run_event": {},
    }
    statements = list(_SQLITE_RUN_SUCCEEDED)
    if not done.attempt_id:
        statements.remove(_SQLITE_RUN_SUCCEEDED[2])  # a local step keeps no attempt log
    return _apply(
        database,
        params,
        _POSTGRES_RUN_SUCCEEDED,
        statements,
        selects=False,
        local=not done.attempt_id,
    )


def record_succeeded_admitting(
    database: Database, guard: Guard, done: Succeeded, start: StepStart
) -> tuple[bool, dt.datetime | None]:
    """`record_succeeded` that also passes the next step (`start`) through the safety gate in
    the same write. Whether the success was recorded, and when the next step was counted: it
    needs no gate of its own then, and its intent (when `done.next_started` is given) was
    written. Not counted (None): the next step is written `pending` and meets the gate at its
    own boundary, which holds it (a paused workflow, a cap, a breaker near) or finds it
    counted."""
    from grantflow.safety import gate  # (the gate imports the engine's models)

    if database.dialect != "postgresql":
        return _succeeded_admitting_in_transaction(database, guard, done, start)
    admit = gate.folded(start)  # (the common case: the gate's statement rides on this one)
    if admit is None:  # a limit checked first stops it: the general path says which
        return record_succeeded(database, guard, replace(done, next_started=None)), None
    params = {**_succeeded_params(guard, done), **admit}
    sql = _admitting_sql(done.next_started is not None, tuple(start.kinds))
    if not done.attempt_id:
        sql = _local(sql)
    if not flushes(database, done):
        sql = _flushed_later(sql)
    row = row_on_postgres(database, sql, params)
    return bool(row and row[0]), admit["g_now"] if row and row[1] else None


def _succeeded_admitting_in_transaction(
    database: Database, guard: Guard, done: Succeeded, start: StepStart
) -> tuple[bool, dt.datetime | None]:
    """SQLite: the success and the next step `pending` (the gate marks its step run), the
    gate, then the intent when the gate counted the step — in one transaction."""
    from grantflow.safety import config, gate
    from grantflow.safety.limits import LimitExceeded

    pending = _succeeded_params(guard, replace(done, next_started=None))
    with database.transaction() as session:
        conn = session.connection()
        check, *writes = _sqlite_succeeded(done)
        if conn.execute(check, pending).rowcount != 1:
            return False, None  # nothing written: the transaction ends without a change
        for statement in writes:
            conn.execute(statement, pending)
        now = config.now()
        try:
            if gate.admit(session, start, now) is not None:
                return True, None  # held: what the gate wrote (a breaker's trip) stays
        except LimitExceeded:
            return True, None  # the general path fails the run, naming the limit
        if done.next_started is not None:
            started = _succeeded_params(guard, done)
            for statement in _SQLITE_NEXT_STARTED:
                session.connection().execute(statement, started)
    return True, now


@functools.cache
def _admitting_sql(next_started: bool, kinds: tuple[str, ...]) -> str:
    from grantflow.safety.gate import COUNTED_AT, folded_ctes

    sql = _POSTGRES_SUCCEEDED_AND_STARTED_ADMITTING
    if not next_started:
        sql = _POSTGRES_SUCCEEDED_ADMITTING
    gate = folded_ctes(kinds)
    return native.driver_sql(sql).replace("{gate}", gate).replace("{counted}", COUNTED_AT)


def _apply(
    database: Database,
    params: dict[str, Any],
    postgres: TextClause,
    sqlite: list[TextClause],
    *,
    selects: bool,
    local: bool = False,
    flush: bool = True,
) -> bool:
    if database.dialect == "postgresql":
        sql = _psycopg_sql(postgres)
        if local:
            sql = _local(sql)
        row = row_on_postgres(database, sql if flush else _flushed_later(sql), params)
        return bool(row and row[0])
    guard, *writes = sqlite
    with database.engine.begin() as conn:
        result = conn.execute(guard, params)
        matched = result.first() is not None if selects else result.rowcount == 1
        if not matched:
            return False  # nothing written: the transaction ends without a change
        for statement in writes:
            conn.execute(statement, params)
    return True


# PostgreSQL: the statement goes straight to psycopg (a third of a checkpoint's time was the
# SQL layer's parameter handling); errors come out as SQLAlchemy's, like every other write.
@functools.cache
def _psycopg_sql(statement: TextClause) -> str:
    return native.driver_sql(statement.text)


@functools.cache
def _local(sql: str) -> str:
    """`sql` (a step's success) for a local step, which keeps no attempt log: without the
    attempt's update, so the statement neither locks nor opens that table and its indexes."""
    local = sql.replace(native.driver_sql(f", {_ATTEMPT_DONE_CTE}"), "")
    if local == sql:  # (not an assert: it must hold under `python -O` too)
        raise RuntimeError("a checkpoint statement without the attempt's update")
    return local


@functools.cache
def _flushed_later(sql: str) -> str:
    """`sql` committing without waiting for the WAL's flush (see the module's docstring). The
    setting is local to the statement's own transaction: the pooled connection keeps the
    server's. (Its final SELECT has no FROM: one row, so the call is made once.)"""
    final = sql[sql.rindex(") SELECT ") + 2 :]
    if " FROM " in final.replace(" FROM step)", ")").replace(" FROM mark)", ")"):
        raise RuntimeError("a checkpoint statement whose final SELECT reads rows")
    return f"{sql}, set_config('synchronous_commit', 'off', true)"


def row_on_postgres(database: Database, sql: str, params: dict[str, Any]) -> Any:
    """A checkpoint statement's row (its JSON columns' parameters sent as JSON)."""
    return native.first_row(database, sql, params, _JSON)
