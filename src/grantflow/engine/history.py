"""A run's history as the API and console show it: its step runs (with their attempts) and its
timeline of events — whole, its latest part, or in pages. A run that loops (a poll until a
target answers) can hold thousands of step runs, so a page of it reads only what it shows.
Read in one `Database.snapshot()`, a count agrees with the rows listed while the run moves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.engine.models import Run, RunEvent, StepAttempt, StepRun
from grantflow.store.pagination import Page, page_of


def _iso(value: dt.datetime | None) -> str | None:
    return timestamps.rfc3339(value)


def last_step_runs(session: Session, run: Run, limit: int | None) -> tuple[list[StepRun], int]:
    """The run's step runs in the order they ran, only the last `limit` of them when given,
    and how many it has in all."""
    query = select(StepRun).where(StepRun.run_id == run.id)
    if limit is None:
        found = list(session.execute(query.order_by(StepRun.sequence)).scalars())
        return found, len(found)
    found = list(session.execute(query.order_by(StepRun.sequence.desc()).limit(limit)).scalars())
    found.reverse()
    if len(found) < limit:
        return found, len(found)
    return found, step_runs_total(session, run)


def step_runs_total(session: Session, run: Run) -> int:
    counted = select(func.count()).select_from(StepRun).where(StepRun.run_id == run.id)
    return int(session.execute(counted).scalar_one())


def step_page(session: Session, run: Run, before: int | None, limit: int) -> Page[dict[str, Any]]:
    """Step runs newest first, `limit` of them, from the one before sequence `before` (the
    cursor: None, the newest)."""
    query = select(StepRun).where(StepRun.run_id == run.id)
    if before is not None:
        query = query.where(StepRun.sequence < before)
    rows = session.execute(query.order_by(StepRun.sequence.desc()).limit(limit + 1)).scalars()
    page = page_of(list(rows), limit, key=lambda step_run: step_run.sequence)
    return Page(items=step_entries(session, page.items), next_cursor=page.next_cursor)


def step_entries(
    session: Session, step_runs: Sequence[StepRun], *, attempts: bool = True
) -> list[dict[str, Any]]:
    """The step runs as the API shows them, each with its attempt log (`attempts` False: a run
    created in this transaction, which has none yet)."""
    log: dict[str, list[StepAttempt]] = {}
    if step_runs and attempts:
        for attempt in session.execute(
            select(StepAttempt)
            .where(StepAttempt.step_run_id.in_([s.id for s in step_runs]))
            .order_by(StepAttempt.number)
        ).scalars():
            log.setdefault(attempt.step_run_id, []).append(attempt)
    return [_step_entry(s, log.get(s.id, [])) for s in step_runs]


def _step_entry(s: StepRun, attempts: list[StepAttempt]) -> dict[str, Any]:
    return {
        "step_id": s.step_id,
        "type": s.step_type,
        "sequence": s.sequence,
        "iteration": s.iteration,
        "status": s.status,
        "attempts": s.attempts,
        "side_effects": s.side_effects,
        "output": s.output,
        "error": s.error,
        "next_step": s.next_step,
        "next_attempt_at": _iso(s.next_attempt_at),
        "started_at": _iso(s.started_at),
        "finished_at": _iso(s.finished_at),
        "attempt_log": [
            {
                "number": a.number,
                "idempotency_key": a.idempotency_key,
                "status": a.status,
                "request": a.request,
                "response": a.response,
                "error": a.error,
                "started_at": _iso(a.started_at),
                "finished_at": _iso(a.finished_at),
                "duration_ms": a.duration_ms,
            }
            for a in attempts
        ],
    }


def _newest_events(run: Run, before: int | None, limit: int) -> Select[RunEvent]:
    query = select(RunEvent).where(RunEvent.run_id == run.id)
    if before is not None:
        query = query.where(RunEvent.id < before)
    # (`id + 0`: the run's events by their own index, then the newest sorted; ordered by the
    # key's index, the server could walk every run's events from the newest)
    return query.order_by((RunEvent.id + 0).desc()).limit(limit)


def timeline(session: Session, run: Run, limit: int | None = None) -> list[dict[str, Any]]:
    """The run's events, oldest first: every one, or only the last `limit`."""
    return [_event_entry(e) for e in _timeline_rows(session, run, limit)]


def _timeline_rows(session: Session, run: Run, limit: int | None) -> list[RunEvent]:
    if limit is None:
        query = select(RunEvent).where(RunEvent.run_id == run.id).order_by(RunEvent.id)
        return list(session.execute(query).scalars())
    return list(reversed(session.execute(_newest_events(run, None, limit)).scalars().all()))


def latest_events(
    session: Session, run: Run, limit: int | None
) -> tuple[list[dict[str, Any]], int]:
    """`timeline(session, run, limit)`, and how many events the run has in all."""
    rows = _timeline_rows(session, run, limit)
    total = len(rows) if limit is None or len(rows) < limit else events_total(session, run)
    return [_event_entry(e) for e in rows], total


def event_page(session: Session, run: Run, before: int | None, limit: int) -> Page[dict[str, Any]]:
    """Events newest first, `limit` of them, from the one before event `before` (the cursor:
    None, the newest)."""
    rows = session.execute(_newest_events(run, before, limit + 1)).scalars().all()
    page = page_of(list(rows), limit, key=lambda event: event.id)
    return Page(items=[_event_entry(e) for e in page.items], next_cursor=page.next_cursor)


def events_total(session: Session, run: Run) -> int:
    counted = select(func.count()).select_from(RunEvent).where(RunEvent.run_id == run.id)
    return int(session.execute(counted).scalar_one())


def _event_entry(e: RunEvent) -> dict[str, Any]:
    return {
        "at": _iso(e.at),
        "kind": e.kind,
        "step_id": e.step_id,
        "attempt": e.attempt,
        "actor": e.actor,
        **({"data": e.data} if e.data else {}),
    }
