"""A worker whose lease expired while it was away (frozen mid-call) writes nothing over what its
successor recorded, on both databases: the successor's outputs stand, one succeeded attempt per
step, and the stale worker logs `run.lease.lost` and drops what its call returned.

The two workers are real interpreters in this process; "frozen" is a call held by the target
while the test expires the first worker's lease and lets a second one take the run over.
(tests/acceptance/test_frozen_worker.py does the same with SIGSTOP on real processes.)"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from sqlalchemy import select, update

from grantflow.connections.outbound import OutboundPolicy
from grantflow.engine.models import RunEvent, StepAttempt, StepRun
from grantflow.engine.worker import Worker
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.models import QueueItem
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.engine import publish, run_detail, start, workflow
from tests.support.target import Reply, Target, running_target


@pytest.fixture
def target() -> Iterator[Target]:
    with running_target() as server:
        yield server


def _worker(database: Database, name: str) -> Worker:
    """A worker whose interpreter the test drives itself (no threads of its own)."""
    return Worker(
        database,
        DatabaseQueue(database),
        worker_id=name,
        lease_seconds=30,
        outbound=OutboundPolicy.parse(["127.0.0.1"]),
    )


def _expire_lease(database: Database, run_id: str) -> None:
    """What a frozen worker's lease does once it stops heartbeating."""
    with database.transaction() as session:
        session.execute(
            update(QueueItem)
            .where(QueueItem.run_id == run_id)
            .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        )


def _attempts(database: Database, run_id: str) -> list[tuple[str, int, str]]:
    with database.transaction() as session:
        rows = session.execute(
            select(StepRun.step_id, StepAttempt.number, StepAttempt.status)
            .join(StepRun, StepRun.id == StepAttempt.step_run_id)
            .where(StepRun.run_id == run_id)
            .order_by(StepRun.sequence, StepAttempt.number)
        ).all()
        return [tuple(row) for row in rows]  # type: ignore[misc]


def _succeeded_events(database: Database, run_id: str) -> list[str | None]:
    with database.transaction() as session:
        return list(
            session.execute(
                select(RunEvent.step_id)
                .where(RunEvent.run_id == run_id, RunEvent.kind == "step_succeeded")
                .order_by(RunEvent.id)
            ).scalars()
        )


@pytest.mark.parametrize(
    ("steps_after", "stale_reply"),
    [
        (True, Reply(200, {"by": "first"})),  # the stale success arrives on the hot path
        (False, Reply(200, {"by": "first"})),  # the call was the last step: the general path
        (True, Reply(409, {"error": "conflict"})),  # a stale failure must not fail the run
    ],
    ids=["success-then-more-steps", "success-as-last-step", "failure"],
)
def test_a_worker_back_after_its_lease_expired_writes_nothing(
    database: Database, target: Target, steps_after: bool, stale_reply: Reply
) -> None:
    """The successor's output stands, each step has one succeeded attempt, one
    step_succeeded event each, and the stale worker logs run.lease.lost."""
    frozen = threading.Event()
    stale_reply.hold = frozen
    target.on("/call", stale_reply, Reply(200, {"by": "second"}))
    steps: list[dict[str, Any]] = [
        {"id": "before", "type": "set", "config": {"values": {"n": 1}}},
        {"id": "call", "type": "http", "config": {"method": "POST", "url": f"{target.url}/call"}},
    ]
    if steps_after:
        steps.append({"id": "after", "type": "set", "config": {"values": {"done": True}}})
    run_id = start(database, publish(database, workflow("fenced", *steps)))

    first, second = _worker(database, "first"), _worker(database, "second")
    try:
        assert first.queue.claim("first", 1, 30) == [run_id]
        with structlog.testing.capture_logs() as logs:
            away = threading.Thread(target=first.interpreter.advance, args=(run_id,))
            away.start()
            target.wait_for_calls("/call", 1)  # the first worker's call is in flight: frozen
            _expire_lease(database, run_id)
            assert second.queue.claim("second", 1, 30) == [run_id]
            second.interpreter.advance(run_id)  # takes over, calls again, finishes the run
            assert run_detail(database, run_id)["status"] == "succeeded"
            frozen.set()  # the first worker wakes up with its answer
            away.join(timeout=60)
            assert not away.is_alive()
    finally:
        frozen.set()
        first.http.close()
        second.http.close()

    shown = run_detail(database, run_id)
    assert shown["status"] == "succeeded"
    call = next(s for s in shown["steps"] if s["step_id"] == "call")
    assert call["output"]["by"] == "second"
    assert [c.idempotency_key for c in target.calls("/call")] == [f"{run_id}:call:1-1"] * 2
    attempts = _attempts(database, run_id)
    assert [a for a in attempts if a[0] == "call"] == [
        ("call", 1, "abandoned"),
        ("call", 2, "succeeded"),
    ]
    succeeded = _succeeded_events(database, run_id)
    assert sorted(succeeded) == sorted(s["step_id"] for s in shown["steps"])  # one each
    assert len([s for s in shown["steps"] if s["step_id"] == "after"]) == (1 if steps_after else 0)
    lost = [e for e in logs if e["event"] == "run.lease.lost"]
    assert lost
    assert {e["worker"] for e in lost} == {"first"}
