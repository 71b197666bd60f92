"""Engine helpers: publish a workflow document, start runs, run a worker, wait for a status.

The queue transport is the database's unless a test runs on Valkey/Redis (`use_transport`, by
the `transport` fixture): then `queue(db)` announces on the stream and every worker takes its
runs from it."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select, update

from grantflow.auth.actor import Actor
from grantflow.connections.outbound import OutboundPolicy
from grantflow.definitions import workflows
from grantflow.engine import detail, history, operations
from grantflow.engine.checkpoint import NextStep, Succeeded
from grantflow.engine.models import Run, StepRun
from grantflow.engine.runs import start_run
from grantflow.engine.worker import Worker
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import Queue
from grantflow.queue.models import QueueItem
from grantflow.queue.streams import StreamQueue
from grantflow.queue.transports import open_queue, queue_of
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database

ACTOR = Actor.system("test")

_stream: dict[str, str] = {}  # the Valkey/Redis transport of the running test: url, prefix
_opened: list[Queue] = []


def use_transport(url: str | None, prefix: str = "") -> None:
    """Run this test's engine on Valkey/Redis at `url` (None: back to the database), and
    close what the last one opened."""
    while _opened:
        _opened.pop().close()
    _stream.clear()
    if url:
        _stream.update(url=url, prefix=prefix)


def transport_settings() -> dict[str, str]:
    """The settings that put a `grantflow` process on this test's transport."""
    if not _stream:
        return {}
    return {"queue_url": _stream["url"], "queue_prefix": _stream["prefix"]}


def queue(db: Database) -> Queue:
    """The transport this test schedules runs on, for `db` (opened once per database)."""
    if not _stream:
        return DatabaseQueue(db)
    configured = queue_of(db)
    if configured.kind != "redis":
        configured = open_queue(db, _stream["url"], prefix=_stream["prefix"])
        _opened.append(configured)
    return configured


def worker_queue(db: Database) -> Queue:
    """A worker's own transport: on Valkey each worker is one consumer with its own state."""
    if not _stream:
        return DatabaseQueue(db)
    queue(db)  # (what the worker's engine schedules inside its transactions goes there too)
    return StreamQueue(db, _stream["url"], prefix=_stream["prefix"], reconcile_seconds=0.2)


def workflow(name: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A manual workflow document running `steps` in order (`extra`: top-level fields)."""
    chained = [dict(s) for s in steps]
    for step, following in itertools.pairwise(chained):
        step.setdefault("next", following["id"])
    return {"name": name, "trigger": {"type": "manual"}, "steps": chained, **extra}


def publish(db: Database, document: dict[str, Any]) -> str:
    """Create (or redraft) and publish a workflow; its id."""
    with db.transaction() as session:
        applied = workflows.apply_document(session, ACTOR, document, publish_it=True)
        return applied.workflow.id


def start(db: Database, workflow_id: str, run_input: dict[str, Any] | None = None) -> str:
    with db.transaction() as session:
        run = start_run(session, ACTOR, queue(db), workflow_id, run_input or {})
        return run.id


def run_detail(db: Database, run_id: str) -> dict[str, Any]:
    with db.transaction() as session:
        return detail.run_detail(session, operations.get_run(session, run_id), queue(db))


def events(db: Database, run_id: str) -> list[dict[str, Any]]:
    with db.transaction() as session:
        return history.timeline(session, operations.get_run(session, run_id))


def wait_for(
    db: Database, run_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll the run until `predicate(detail)` holds; fail with the last detail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        shown = run_detail(db, run_id)
        if predicate(shown):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError(f"run never reached the expected state; last: {shown}")
        time.sleep(0.02)


def wait_status(db: Database, run_id: str, *statuses: str, timeout: float = 60.0) -> dict[str, Any]:
    return wait_for(db, run_id, lambda d: d["status"] in statuses, timeout)


@contextmanager
def running_worker(db: Database, **options: Any) -> Iterator[Worker]:
    options.setdefault("concurrency", 2)
    options.setdefault("poll_seconds", 0.2)
    options.setdefault("lease_seconds", 5.0)
    options.setdefault("outbound", OutboundPolicy.parse(["127.0.0.1"]))
    own = worker_queue(db)
    worker = Worker(db, own, **options)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(grace_seconds=10)
        own.close()


def leased_run(db: Database, status: str) -> tuple[str, str]:
    """A running run (of a new workflow of two `set` steps, a and b) at step `a`, its step run
    in `status`, leased by worker w1, whose turn holds it with lease token t1: (run id, step
    run id)."""
    steps = [{"id": s, "type": "set", "config": {"values": {s: 1}}} for s in ("a", "b")]
    run_id = start(db, publish(db, workflow(f"guarded-{new_id()}", *steps)))
    with db.transaction() as session:
        session.execute(
            update(QueueItem)
            .where(QueueItem.run_id == run_id)
            .values(lease_owner="w1", lease_expires_at=utcnow() + dt.timedelta(seconds=30))
        )
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", current_step="a", lease_token="t1")
        )
        session.execute(update(StepRun).where(StepRun.run_id == run_id).values(status=status))
        step_run_id = session.execute(
            select(StepRun.id).where(StepRun.run_id == run_id)
        ).scalar_one()
    return run_id, step_run_id


def boundary_success(now: dt.datetime) -> Succeeded:
    """A pure step `a`'s plain success at `now`, with step `b` (a `set`) next: what a checkpoint
    records for `leased_run`'s run."""
    return Succeeded(
        attempts=1,
        output={"x": 1},
        started_at=now,
        finished_at=now,
        event={"duration_ms": 0.1},
        stuck_at=now + dt.timedelta(minutes=5),
        next=NextStep(new_id(), "b", "set", 2, 1, False),
    )
