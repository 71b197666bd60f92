"""Four `grantflow worker` processes on one PostgreSQL calling one connection: its rate limit
holds across all of them, and a 429 with Retry-After from the target slows every one. Calls
are counted by the target's own arrival times."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.auth.actor import Actor
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection
from grantflow.engine.models import Run
from grantflow.queue.models import QueueItem
from grantflow.store.database import Database, open_database
from tests.support.databases import PostgresRun
from tests.support.engine import publish, start
from tests.support.processes import WorkerProcess, grantflow_env, poll, start_worker
from tests.support.target import Reply, Seen, Target, running_target

pytestmark = [pytest.mark.postgres, pytest.mark.acceptance]
ACTOR = Actor.system("test")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresRun]:
    run = PostgresRun()
    run.create()
    try:
        yield run
    finally:
        run.drop()


@pytest.fixture
def db(postgres: PostgresRun) -> Iterator[Database]:
    database = open_database(postgres.url)
    with database.transaction() as session:
        session.execute(delete(QueueItem))
    yield database
    database.dispose()


@pytest.fixture
def target() -> Iterator[Target]:
    with running_target() as server:
        yield server


@pytest.fixture
def four_workers(db: Database, tmp_path: Path) -> Iterator[Callable[[], list[WorkerProcess]]]:
    """Starts four `grantflow worker --concurrency 3` on the test database when called."""
    key = os.urandom(32)
    db.use_master_keys(lambda: [key])
    env = grantflow_env(
        database_url=db.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(key).decode(),
    )
    started: list[WorkerProcess] = []

    def spawn() -> list[WorkerProcess]:
        started.extend(start_worker(env, tmp_path, "--concurrency", "3") for _ in range(4))
        return started

    try:
        yield spawn
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in started:
            worker.stop(timeout=10)


def connected_workflow(db: Database, target: Target, name: str, **limits: Any) -> str:
    """An application with connection `api` to the target (with `limits`), and a published
    workflow of two http calls to /hit through it (retried on 429)."""
    with db.transaction() as session:
        app = create_application(session, ACTOR, ApplicationCreate(name=name))
        data = ConnectionCreate.model_validate({"name": "api", "base_url": target.url, **limits})
        create_connection(session, ACTOR, app.id, data)
        app_id = app.id
    retry = {"max_attempts": 5, "initial_backoff": "PT0.1S", "jitter": "none"}
    steps = [
        {
            "id": f"call{n}",
            "type": "http",
            "config": {"method": "POST", "connection": "api", "path": "/hit"},
            "retry": retry,
            "reversible": True,
        }
        for n in (1, 2)
    ]
    steps[0]["next"] = "call2"
    document = {"name": name, "application": app_id, "trigger": {"type": "manual"}}
    return publish(db, {**document, "steps": steps})


def lease_owners(db: Database, run_ids: list[str]) -> set[str]:
    with db.transaction() as session:
        owners = session.execute(
            select(QueueItem.lease_owner).where(
                QueueItem.run_id.in_(run_ids), QueueItem.lease_owner.is_not(None)
            )
        ).scalars()
        return {o for o in owners if o}


def all_succeeded(db: Database, run_ids: list[str]) -> bool:
    with db.transaction() as session:
        done = session.execute(
            select(func.count()).where(Run.id.in_(run_ids), Run.status == "succeeded")
        ).scalar_one()
        failed = session.execute(
            select(func.count()).where(Run.id.in_(run_ids), Run.status.in_(["failed"]))
        ).scalar_one()
    assert failed == 0
    return bool(done == len(run_ids))


def finish(db: Database, run_ids: list[str]) -> set[str]:
    """Wait for every run to succeed; the workers seen holding them meanwhile."""
    seen: set[str] = set()

    def done() -> bool:
        seen.update(lease_owners(db, run_ids))
        return all_succeeded(db, run_ids)

    poll(done, timeout=120, what="every run to succeed")
    return seen


def worst_window_excess(times: list[float], rate: float, burst: int) -> float:
    """The most any window [t_i, t_j] of arrivals holds over `rate * (t_j - t_i) + burst`."""
    times = sorted(times)
    worst = float("-inf")
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (rate * (times[j] - first) + burst))
    return worst


def test_four_workers_share_one_connections_rate_limit(
    db: Database, target: Target, four_workers: Callable[[], list[WorkerProcess]]
) -> None:
    """40 runs x 2 calls through a connection limited to 8 calls/s (burst 2), over four
    worker processes that all hold runs: in no window of the target's arrivals do more than
    8/s x window + burst calls arrive (two calls of slack: a loaded machine delivers some
    calls late and bunched); four per-process buckets would have allowed four times as many."""
    rate, burst = 8.0, 2
    target.on("/hit", Reply(200, {"ok": True}))
    workflow_id = connected_workflow(
        db, target, "Rate limited", rate_limit_per_second=rate, rate_limit_burst=burst
    )
    run_ids = [start(db, workflow_id) for _ in range(40)]
    workers = four_workers()
    ids = {w.worker_id() for w in workers}
    assert finish(db, run_ids) == ids
    arrivals = [seen.at for seen in target.calls("/hit")]
    assert len(arrivals) == 80
    assert worst_window_excess(arrivals, rate, burst) <= 2.0
    # the whole measured span: at least (80 - burst) / rate seconds by the target's clock
    assert max(arrivals) - min(arrivals) >= (80 - burst - 1) / rate


def test_a_429_from_the_target_slows_every_worker(
    db: Database, target: Target, four_workers: Callable[[], list[WorkerProcess]]
) -> None:
    """The 6th call is answered 429 with Retry-After: 4. Every worker then holds its calls:
    nothing arrives from 1 s to 3.5 s after the 429 (calls already on their way may land in
    the first second), although all four workers hold runs waiting to call; afterwards every
    run succeeds."""
    answered = 0
    throttled_at: list[float] = []
    lock = threading.Lock()

    def respond(seen: Seen) -> Reply:
        nonlocal answered
        with lock:
            answered += 1
            if answered == 6:
                throttled_at.append(seen.at)
                return Reply(429, {"error": "slow down"}, headers={"Retry-After": "4"})
        return Reply(200, {"ok": True}, delay=0.02)

    target.respond("/hit", respond)
    workflow_id = connected_workflow(db, target, "Throttled")
    run_ids = [start(db, workflow_id) for _ in range(60)]
    workers = four_workers()
    ids = {w.worker_id() for w in workers}
    poll(lambda: throttled_at, timeout=120, what="the 429")
    poll(lambda: lease_owners(db, run_ids) == ids, timeout=120, what="all four to hold runs")
    finish(db, run_ids)
    t0 = throttled_at[0]
    arrivals = [seen.at for seen in target.calls("/hit")]
    assert [t for t in arrivals if t0 + 1.0 < t < t0 + 3.5] == []
    assert len([t for t in arrivals if t >= t0 + 3.5]) >= 60
