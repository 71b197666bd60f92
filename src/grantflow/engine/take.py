"""Taking a freshly claimed run on PostgreSQL: one read, then one guarded write.

The general path takes a run in a transaction of many statements (engine/interpreter.py
`_locked_run` and `_prepare`). A run that was just created and claimed is the common case and
looks the same every time: `queued`, never started, at its first step, nothing asked of it.
For it the worker reads the run, its first step run and its plan in one statement (the claim
that leased the run reads it too, in the claim's own statement: queue/database.py
`read_with_claim`; a run claimed otherwise is read here), decides the first step in memory,
and commits the take in one statement: the run's new lease token, the run `running` with its
`started` event, the first step's pass through the safety gate's common case
(`gate.folded_marking`: its step run marked counted) and, when the first step calls out, its
intent (the step running, set by that same mark; the attempt with its rendered request; the
`step_started` event).

The write applies only if the run is still as read and this worker holds its queue lease: the
run row is locked first, then the queue item (the general path's order, so the two never wait
on each other), and every write depends on both locks and on the gate counting the step. When
anything differs — the lease lost or expired, the run no longer fresh, the deadline passed,
the workflow at its concurrency limit, the gate holding the step or a breaker near — nothing
is written and the interpreter takes its general path, which reads the run and acts on it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grantflow.engine import concurrency
from grantflow.engine.checkpoint import Started
from grantflow.engine.models import Run, StepRun
from grantflow.store import native
from grantflow.store.database import Database

_RUN = [c.name for c in Run.__table__.columns]
_STEP = [c.name for c in StepRun.__table__.columns]

# One statement: a run that is queued and never started, with one step run, its workflow's name
# and its version's stored plan. (A run with more step runs was started before: not fresh.) The
# plan comes as its stored text, the key its parsed plan is cached by (engine/plans.py): a
# worker that ran the version before parses nothing.
_FRESH = (
    "SELECT "
    + ", ".join([*(f"r.{c}" for c in _RUN), *(f"s.{c}" for c in _STEP)])
    + ", w.name, v.plan::text FROM runs r JOIN step_runs s ON s.run_id = r.id "
    "JOIN workflows w ON w.id = r.workflow_id "
    "LEFT JOIN workflow_versions v ON v.workflow_id = r.workflow_id AND v.number = r.version "
    "WHERE r.id = {run} AND r.status = 'queued' AND r.started_at IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM step_runs o WHERE o.run_id = r.id AND o.id <> s.id)"
)
_READ = _FRESH.replace("{run}", "%(run_id)s")
# The same read for each run a claim leases, in the claim's own statement (queue/database.py
# `read_with_claim`): `claimed.run_id` is the claim's row. Its columns, NULL when not fresh.
READ_WITH_CLAIM = _FRESH.replace("{run}", "claimed.run_id")
READ_COLUMNS = len(_RUN) + len(_STEP) + 2

# The run row locked while it is as read, then the queue item while this worker's lease on it
# holds (an uncorrelated EXISTS runs first: the run row is locked before the queue item); then
# the first step still pending and the workflow under its concurrency limit (its start lock
# and count, in engine/concurrency.py's function; `step`: what the gate's common case waits
# for before it counts the step). The run is written only
# when the gate counted the step; every other write depends on the run's.
_TAKE = """WITH held AS (
  SELECT r.id FROM runs r WHERE r.id = %(run_id)s AND r.status = 'queued'
    AND r.started_at IS NULL AND r.waiting_reason IS NULL AND r.pause_requested = false
    AND r.lease_token IS NOT DISTINCT FROM %(seen_token)s AND r.current_step = %(step_id)s
    AND r.deadline_at > %(now)s
  FOR UPDATE
), lease AS (
  SELECT q.run_id FROM queue_items q WHERE EXISTS (SELECT 1 FROM held)
    AND q.run_id = %(run_id)s AND q.lease_owner = %(worker_id)s
    AND q.lease_expires_at > %(now)s
  FOR UPDATE
), step AS (
  SELECT s.id FROM step_runs s WHERE EXISTS (SELECT 1 FROM lease)
    AND s.id = %(step_run_id)s AND s.status = 'pending' AND s.attempts = 0
    AND workflow_start_count(%(lock_key)s, %(workflow_id)s, %(run_id)s) < %(allowed)s
), {gate}, run AS (
  UPDATE runs SET status = 'running', lease_token = %(lease_token)s, waiting_reason = NULL,
    wake_at = NULL, failure = CASE WHEN failure IS NULL THEN failure ELSE 'null'::jsonb END,
    started_at = %(started_at)s, finished_at = NULL, last_progress_at = %(started_at)s,
    stuck_at = %(stuck_at)s
  WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM mark) RETURNING id
), event AS (
  INSERT INTO run_events (run_id, at, kind, step_id, attempt, data)
  SELECT %(run_id)s, %(started_at)s, v.kind, %(step_id)s, v.attempt, v.data FROM run,
    (VALUES (1, 'started', CAST(NULL AS integer), CAST('{}' AS jsonb)),
      (2, 'step_started', 1, %(event)s)) AS v(n, kind, attempt, data)
  WHERE v.n = 1 OR %(external)s ORDER BY v.n
){intent}
SELECT count(*) FROM run"""
# the first step's call: its attempt logged before the call is made (the step run is set
# running by the gate's mark, _RUNNING: one statement cannot update a row in two of its parts)
_RUNNING = ", status = 'running', attempts = 1, started_at = %(started_at)s"
_INTENT = """, attempt AS (
  INSERT INTO step_attempts (id, step_run_id, number, idempotency_key, status, request,
    started_at)
  SELECT %(attempt_id)s, %(step_run_id)s, 1, %(idempotency_key)s, 'running', %(request)s,
    %(started_at)s FROM run
)"""
_JSON_PARAMS = frozenset({"event", "request"})


@dataclass(frozen=True)
class Fresh:
    """A queued run never started, as one read found it."""

    run: dict[str, Any]  # every column of the run
    step_run: dict[str, Any]  # every column of its one step run
    workflow_name: str
    plan: str | None  # the version's stored plan, as its text (None: not compiled)


@dataclass(frozen=True)
class Take:
    """What taking a fresh run writes, and what it must still be for that."""

    run_id: str
    worker_id: str  # must hold the queue lease
    seen_token: str | None  # the run's lease token as read: unchanged since
    lease_token: str  # the worker turn's new token
    step_id: str  # the run's current (first) step
    step_run_id: str
    workflow_id: str
    allowed: int  # the workflow's concurrency limit: other runs running must be fewer
    now: dt.datetime  # the engine clock: the deadline and the queue lease must be later
    started_at: dt.datetime  # the run's start, its progress and its events
    stuck_at: dt.datetime
    intent: Started | None  # the first step's call, when it calls out: started here too


def read_fresh(database: Database, run_id: str) -> Fresh | None:
    """The run if it is queued and was never started (PostgreSQL, autocommit, one statement)."""
    return fresh_of(native.first_row(database, _READ, {"run_id": run_id}))


def fresh_of(row: Sequence[Any] | None) -> Fresh | None:
    """The run as the read (or the claim, with READ_WITH_CLAIM) found it; None if not fresh."""
    if row is None or row[0] is None:
        return None
    values = [_utc(v) for v in row]
    run = dict(zip(_RUN, values[: len(_RUN)], strict=True))
    step_run = dict(zip(_STEP, values[len(_RUN) : len(_RUN) + len(_STEP)], strict=True))
    name, plan = values[-2:]
    return Fresh(run, step_run, name, plan)


def record_taken(
    database: Database, take: Take, admit: dict[str, Any], kinds: tuple[str, ...]
) -> bool:
    """Commit the take (`admit`: gate.folded's parameters for the first step, which counts
    `kinds`) if the run is still as read, this worker holds its lease and the gate counted the
    step; False (and nothing written) otherwise."""
    intent = take.intent
    params = {
        **{k: v for k, v in take.__dict__.items() if k != "intent"},
        **admit,
        "external": intent is not None,
        "event": intent.event if intent else {},
        "attempt_id": intent.attempt_id if intent else None,
        "idempotency_key": intent.idempotency_key if intent else None,
        "request": intent.request if intent else None,
    }
    params["lock_key"] = concurrency.lock_key(take.workflow_id)
    statement = _statement(intent is not None, kinds)
    row = native.first_row(database, statement, params, _JSON_PARAMS)
    return bool(row and row[0])


@functools.cache
def _statement(external: bool, kinds: tuple[str, ...]) -> str:
    from grantflow.safety.gate import folded_marking  # (the gate imports the engine's models)

    gate = folded_marking(kinds, "id = %(step_run_id)s", _RUNNING if external else "")
    return _TAKE.replace("{gate}", gate).replace("{intent}", _INTENT if external else "")


def _utc(value: Any) -> Any:
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value
