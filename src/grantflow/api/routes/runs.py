"""/api/v1/runs and /api/v1/queue: start, read, and operate on runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from grantflow.api.idempotency import Idempotency, idempotency
from grantflow.api.routes import API_PREFIX
from grantflow.api.routes.schemas import PageOut
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.models import Workflow
from grantflow.engine import detail, history, operations
from grantflow.engine.runs import start_run
from grantflow.engine.states import RunStatus
from grantflow.queue.interface import Queue
from grantflow.queue.workers import WorkerState
from grantflow.store.database import Database
from grantflow.store.pagination import (
    BIGINT_KEYS,
    DEFAULT_LIMIT,
    INTEGER_KEYS,
    MAX_LIMIT,
    decode_cursor,
)
from grantflow.strict import MAX_INT, Bool, Timestamp

router = APIRouter(prefix=API_PREFIX, tags=["runs"])


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict, description="validated by the schema")


class CancelRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    force: Bool = Field(False, description="cancel even after steps with side effects acted")


def _detail(db: Database, q: Queue, run_id: str, steps_limit: int | None = None) -> dict[str, Any]:
    with db.snapshot() as session:
        run = operations.get_run(session, run_id)
        return detail.run_detail(session, run, q, steps_limit=steps_limit)


@router.post("/workflows/{workflow_id}/runs", status_code=201, response_model=dict[str, Any])
def start(
    workflow_id: str,
    body: StartRun,
    actor: Actor = Depends(Require(Permission.RUN_OPERATE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """Start a run of the active version with this input (manual trigger). With an
    Idempotency-Key, a retry of the same request returns the same run and starts none."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: detail.run_detail(
                session, start_run(session, actor, q, workflow_id, body.input), q, new=True
            ),
        )


@router.get("/runs", response_model=PageOut[dict[str, Any]])
def list_runs(
    status: RunStatus | None = Query(None),
    workflow_id: str | None = Query(None, max_length=36),
    version: int | None = Query(None, ge=1, le=MAX_INT),
    since: Timestamp | None = Query(None, description="created at or after (ISO 8601)"),
    until: Timestamp | None = Query(None, description="created before (ISO 8601)"),
    stuck: bool | None = Query(None, description="only runs flagged stuck (or not)"),
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> PageOut[dict[str, Any]]:
    """Runs, newest first, filtered."""
    with db.transaction() as session:
        page = detail.list_runs(
            session,
            status=status,
            workflow_id=workflow_id,
            version=version,
            since=_utc(since),
            until=_utc(until),
            stuck=stuck,
            cursor=cursor,
            limit=limit,
        )
        ids = {run.workflow_id for run in page.items}
        rows = session.execute(select(Workflow.id, Workflow.name).where(Workflow.id.in_(ids)))
        names = dict(rows.all())

        reports = detail.stuck_reports(session, list(page.items), q)
        items = []
        for run in page.items:
            summary = detail.run_summary(run, names.get(run.workflow_id))
            summary["stuck"] = reports[run.id]
            items.append(summary)
        return PageOut(items=items, next_cursor=page.next_cursor)


@router.get("/runs/{run_id}")
def get_run(
    run_id: str,
    steps_limit: int | None = Query(
        None,
        ge=1,
        le=MAX_LIMIT,
        description="only the run's last N step runs (steps_total counts them all; "
        "GET /runs/{run_id}/steps pages through the rest)",
    ),
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """The run: status, failure reason and next action, steps with attempts, stuck facts."""
    return _detail(db, q, run_id, steps_limit)


@router.get("/runs/{run_id}/steps", response_model=PageOut[dict[str, Any]])
def list_steps(
    run_id: str,
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
) -> PageOut[dict[str, Any]]:
    """The run's step runs with their attempts, newest first, a page at a time.

    next_cursor pages to earlier ones; the run's detail holds every one, or its last
    (steps_limit)."""
    with db.snapshot() as session:
        run = operations.get_run(session, run_id)
        page = history.step_page(session, run, decode_cursor(cursor, int, INTEGER_KEYS), limit)
        return PageOut(items=list(page.items), next_cursor=page.next_cursor)


@router.get("/runs/{run_id}/events", response_model=PageOut[dict[str, Any]])
def list_events(
    run_id: str,
    cursor: str | None = Query(None, max_length=500),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
) -> PageOut[dict[str, Any]]:
    """The run's timeline events, newest first, a page at a time.

    next_cursor pages to earlier ones; GET /runs/{run_id}/timeline holds every one, oldest
    first, or its last (limit)."""
    with db.snapshot() as session:
        run = operations.get_run(session, run_id)
        page = history.event_page(session, run, decode_cursor(cursor, int, BIGINT_KEYS), limit)
        return PageOut(items=list(page.items), next_cursor=page.next_cursor)


@router.get("/runs/{run_id}/timeline")
def get_timeline(
    run_id: str,
    limit: int | None = Query(
        None, ge=1, le=MAX_LIMIT, description="only the last N events (total counts them all)"
    ),
    _: Actor = Depends(Require(Permission.RUN_READ)),
    db: Database = Depends(database),
) -> dict[str, Any]:
    """The run's events, oldest first: every one, or the last `limit`."""
    with db.snapshot() as session:
        run = operations.get_run(session, run_id)
        events, total = history.latest_events(session, run, limit)
        return {"run_id": run.id, "status": run.status, "events": events, "total": total}


@router.post("/runs/{run_id}/retry")
def retry(
    run_id: str,
    actor: Actor = Depends(Require(Permission.RUN_OPERATE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """Resume the same run from its failed step, on the same version."""
    with db.transaction() as session:
        operations.retry(session, actor, q, run_id)
    return _detail(db, q, run_id)


@router.post("/runs/{run_id}/replay", status_code=201, response_model=dict[str, Any])
def replay(
    run_id: str,
    latest: bool = Query(False, description="on the active version instead of the run's own"),
    actor: Actor = Depends(Require(Permission.RUN_OPERATE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
    once: Idempotency = Depends(idempotency),
) -> Response:
    """A new run with the same input, linked to this one (with an Idempotency-Key: once)."""
    with db.transaction() as session:
        return once.respond(
            session,
            actor,
            201,
            lambda: detail.run_detail(
                session, operations.replay(session, actor, q, run_id, latest=latest), q, new=True
            ),
        )


@router.post("/runs/{run_id}/cancel")
def cancel(
    run_id: str,
    body: CancelRun | None = None,
    actor: Actor = Depends(Require(Permission.RUN_OPERATE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    with db.transaction() as session:
        operations.cancel(session, actor, q, run_id, force=bool(body and body.force))
    return _detail(db, q, run_id)


@router.post("/runs/{run_id}/pause")
def pause(
    run_id: str,
    actor: Actor = Depends(Require(Permission.RUN_OPERATE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """Stop the run at its next step boundary."""
    with db.transaction() as session:
        operations.pause(session, actor, q, run_id)
    return _detail(db, q, run_id)


@router.post("/runs/{run_id}/resume")
def resume(
    run_id: str,
    actor: Actor = Depends(Require(Permission.RUN_OPERATE)),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    with db.transaction() as session:
        operations.resume(session, actor, q, run_id)
    return _detail(db, q, run_id)


@router.get("/queue")
def queue_status(
    _: Actor = Depends(Require(Permission.RUN_READ)),
    q: Queue = Depends(queue),
) -> dict[str, Any]:
    """Queue depth, the oldest ready run's age, the transport (`database` or `redis`) and
    whether it can be reached (`transport_status`: down since when, the last error), and the
    workers: `workers` the live ones, `lost_workers` those whose lease ran out in the last day
    (a worker that died), each with its host, pid, concurrency, last heartbeat, lease, the
    runs in its hand and the transport it takes runs from."""
    stats = q.stats()
    fleet = q.workers()
    return {
        "transport": q.kind,
        "transport_status": transport_status(q),
        "ready": stats.ready,
        "scheduled": stats.scheduled,
        "leased": stats.leased,
        "oldest_ready_age_seconds": stats.oldest_ready_age_seconds,
        "workers": [_worker(w) for w in fleet if w.live],
        "lost_workers": [_worker(w) for w in fleet if not w.live],
    }


def transport_status(q: Queue) -> dict[str, Any]:
    health = q.health()
    return {
        "kind": health.kind,
        "status": "up" if health.up else "down",
        "down_since": health.down_since,
        "error": health.error,
        "location": health.location,
        "entries": health.entries,
        "pending_entries": health.pending_entries,
    }


def _worker(w: WorkerState) -> dict[str, Any]:
    return {
        "id": w.id,
        "state": "live" if w.live else "lost",
        "hostname": w.hostname,
        "pid": w.pid,
        "concurrency": w.concurrency,
        "started_at": w.started_at,
        "heartbeat_at": w.heartbeat_at,
        "lease_expires_at": w.lease_expires_at,
        "runs_in_hand": w.runs_in_hand,
        "transport": w.transport,
    }


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
