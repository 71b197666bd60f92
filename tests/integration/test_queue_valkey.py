"""The Valkey/Redis transport on PostgreSQL: the stream carries "ready", the database decides
who holds a run. Each test runs its own redis-server on a free port (stopped and started again
where the test needs an outage), never the machine's shared one."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from grantflow.api import create_app
from grantflow.auth.permissions import Role
from grantflow.config import load_settings
from grantflow.connections.outbound import OutboundPolicy
from grantflow.engine.models import StepRun
from grantflow.engine.worker import Worker
from grantflow.queue.models import QueueItem
from grantflow.queue.streams import GROUP, StreamQueue
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support import engine
from tests.support.databases import PostgresRun
from tests.support.engine import publish, run_detail, running_worker, start, wait_status, workflow
from tests.support.processes import grantflow_env, poll, run_grantflow
from tests.support.redis_server import RedisServer, redis_server
from tests.support.server import serve_in_thread

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PREFIX = "gf-test"
STREAM = f"{PREFIX}:queue:ready"


@pytest.fixture
def pg(_postgres_run: PostgresRun) -> Iterator[Database]:
    db = _postgres_run.fresh()
    key = os.urandom(32)
    db.use_master_keys(lambda: [key])
    yield db
    db.dispose()


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own; the engine helpers schedule runs and run workers on it."""
    with redis_server(tmp_path) as server:
        engine.use_transport(server.url, PREFIX)
        try:
            yield server
        finally:
            engine.use_transport(None)


def sets(name: str, count: int = 3) -> dict[str, Any]:
    return workflow(
        name,
        *({"id": f"s{i}", "type": "set", "config": {"values": {"n": i}}} for i in range(count)),
    )


def attempts(db: Database, run_id: str) -> dict[str, int]:
    with db.transaction() as session:
        rows = session.execute(select(StepRun).where(StepRun.run_id == run_id)).scalars()
        return {s.step_id: s.attempts for s in rows}


def test_a_run_is_announced_on_the_stream_and_acknowledged_when_its_turn_ends(
    pg: Database, valkey: RedisServer
) -> None:
    client = valkey.client()
    run_id = start(pg, publish(pg, sets("announced")))
    assert client.xlen(STREAM) == 1
    [(_, fields)] = client.xrange(STREAM)
    assert fields == {"run": run_id}
    assert client.exists(f"{STREAM}:sent:{run_id}") == 1  # announced once: not added again

    with running_worker(pg) as worker:
        wait_status(pg, run_id, "succeeded")
        assert worker.queue.kind == "redis"
        poll(lambda: client.xlen(STREAM) == 0, timeout=30, what="the entry to be acknowledged")
        assert client.xpending(STREAM, GROUP)["pending"] == 0
    assert client.exists(f"{STREAM}:sent:{run_id}") == 0
    assert attempts(pg, run_id) == {"s0": 1, "s1": 1, "s2": 1}
    with pg.transaction() as session:
        assert session.get(QueueItem, run_id) is None


def test_an_entry_for_a_finished_run_is_dropped_and_changes_nothing(
    pg: Database, valkey: RedisServer
) -> None:
    client = valkey.client()
    run_id = start(pg, publish(pg, sets("once")))
    with running_worker(pg):
        wait_status(pg, run_id, "succeeded")
        before = run_detail(pg, run_id)
        client.xadd(STREAM, {"run": run_id})  # a stale announcement (e.g. a reconciler's)
        poll(lambda: client.xlen(STREAM) == 0, timeout=30, what="the stale entry to be dropped")
        assert client.xpending(STREAM, GROUP)["pending"] == 0
    after = run_detail(pg, run_id)
    assert (after["status"], after["finished_at"]) == ("succeeded", before["finished_at"])
    assert attempts(pg, run_id) == {"s0": 1, "s1": 1, "s2": 1}
    with pg.transaction() as session:
        assert session.get(QueueItem, run_id) is None  # not queued again


def test_runs_are_announced_at_the_commit_less_those_of_a_savepoint_rolled_back(
    pg: Database, valkey: RedisServer
) -> None:
    """A savepoint's release is not the COMMIT (no worker may hear of a run it cannot see),
    and a savepoint rolled back takes back its own announcements, not the transaction's."""
    client = valkey.client()
    transport = engine.queue(pg)
    with pg.transaction() as session:
        transport.announce(session, ["run-before"])
        with session.begin_nested() as released:
            transport.announce(session, ["run-released"])
            released.commit()
        assert client.xlen(STREAM) == 0
        rolled_back = session.begin_nested()
        transport.announce(session, ["run-rolled-back"])
        rolled_back.rollback()
        transport.announce(session, ["run-after"])
    announced = [fields["run"] for _, fields in client.xrange(STREAM)]
    assert announced == ["run-before", "run-released", "run-after"]


def test_a_dead_consumers_pending_entry_is_claimed_by_another_after_the_lease(
    pg: Database, valkey: RedisServer
) -> None:
    """A consumer reads the entry and leases the run, then dies without acknowledging: once
    the entry has been idle for a lease, a live worker claims it (XAUTOCLAIM), takes the run
    (its database lease ran out) and finishes it. The reconciler is off: nothing else could."""
    client = valkey.client()
    run_id = start(pg, publish(pg, sets("orphaned")))
    dead = StreamQueue(pg, valkey.url, prefix=PREFIX)
    try:
        dead._create_group()
        assert dead.claim("dead-worker", 1, lease_seconds=1.0) == [run_id]
    finally:
        dead.redis.close()  # (it never acknowledges: it died)
    [pending] = client.xpending_range(STREAM, GROUP, "-", "+", 10)
    assert pending["consumer"] == "dead-worker"

    live = StreamQueue(pg, valkey.url, prefix=PREFIX)
    live.reconciles = False
    worker = Worker(
        pg,
        live,
        concurrency=1,
        lease_seconds=1.0,
        poll_seconds=0.2,
        outbound=OutboundPolicy.parse(["127.0.0.1"]),
    )
    worker.start()
    try:
        wait_status(pg, run_id, "succeeded")
    finally:
        worker.stop(grace_seconds=10)
        live.close()
    assert attempts(pg, run_id) == {"s0": 1, "s1": 1, "s2": 1}
    assert client.xlen(STREAM) == 0
    assert client.xpending(STREAM, GROUP)["pending"] == 0


@contextmanager
def served(pg: Database, valkey: RedisServer) -> Iterator[Api]:
    """The API on this test's database and Valkey."""
    settings = load_settings(
        database_url=pg.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(pg.master_keys()[0]).decode(),
        secret_key_file=Path("/nonexistent/unused.key"),
        queue_url=valkey.url,
        queue_prefix=PREFIX,
    )
    with serve_in_thread(create_app(settings, pg)) as url:
        yield Api(base_url=url, database=pg)


def queue_status_cli(pg: Database, valkey: RedisServer, workdir: Path) -> str:
    """`grantflow queue status` in its own process, on this test's database and Valkey."""
    env = grantflow_env(
        database_url=pg.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(pg.master_keys()[0]).decode(),
        queue_url=valkey.url,
        queue_prefix=PREFIX,
    )
    done = run_grantflow("queue", "status", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_runs_are_accepted_while_valkey_is_down_and_all_finish_once_it_returns_empty(
    pg: Database, valkey: RedisServer, tmp_path: Path
) -> None:
    """Valkey stops: the API still starts runs (201), says since when the transport is down
    (/queue, /readyz, the run's stuck cause and its next action); Valkey comes back with
    nothing: the reconciler announces every queued run and each step runs once."""
    flow = publish(pg, {**sets("outage", 2), "settings": {"stuck_after": "100ms"}})
    with (
        served(pg, valkey) as api,
        api.as_role(Role.ADMIN, "admin@example.com") as admin,
        running_worker(pg),
    ):
        first = admin.post(f"/api/v1/workflows/{flow}/runs", json={"input": {}})
        assert first.status_code == 201, first.text
        wait_status(pg, first.json()["id"], "succeeded")

        valkey.stop()
        queued = []
        for n in range(5):
            answer = admin.post(f"/api/v1/workflows/{flow}/runs", json={"input": {"n": n}})
            assert answer.status_code == 201, answer.text
            queued.append(answer.json()["id"])

        status = admin.get("/api/v1/queue").json()
        transport = status["transport_status"]
        assert (status["transport"], transport["status"]) == ("redis", "down")
        assert transport["down_since"] is not None
        assert "Connection" in transport["error"]
        assert transport["location"] == valkey.url
        with api.client() as anonymous:
            ready = anonymous.get("/readyz")
        metrics = admin.get("/metrics").text
        assert 'grantflow_queue_transport_up{transport="redis"} 0.0' in metrics
        cli = queue_status_cli(pg, valkey, tmp_path)
        assert f"transport redis at {valkey.url}: DOWN since" in cli
        assert "runs are accepted and stay queued until it returns" in cli
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["queue"]["status"] == "down"

        def stuck_report() -> dict[str, Any] | None:
            report = admin.get(f"/api/v1/runs/{queued[0]}").json().get("stuck")
            return report if report and report.get("cause") == "transport_down" else None

        report = poll(stuck_report, timeout=30, what="the run to be reported stuck")
        assert "Valkey/Redis" in report["next_action"]
        assert report["down_since"] == transport["down_since"]
        assert {run_detail(pg, r)["status"] for r in queued} == {"queued"}

        valkey.start()  # the advice taken: Valkey back, empty
        for run_id in queued:
            wait_status(pg, run_id, "succeeded")
        assert admin.get("/api/v1/queue").json()["transport_status"]["status"] == "up"
        metrics = admin.get("/metrics").text
        assert 'grantflow_queue_transport_up{transport="redis"} 1.0' in metrics
        assert 'grantflow_queue_transport_down_seconds{transport="redis"} 0.0' in metrics
        assert admin.get(f"/api/v1/runs/{queued[0]}").json().get("stuck") is None
    for run_id in queued:
        assert attempts(pg, run_id) == {"s0": 1, "s1": 1}


def test_the_queue_page_shows_the_transport_and_its_stream(
    pg: Database, valkey: RedisServer
) -> None:
    run_id = start(pg, publish(pg, sets("shown")))
    with served(pg, valkey) as api, api.as_role(Role.OPERATOR, "ops@example.com") as ops:
        shown = ops.get("/api/v1/queue").json()
    assert shown["ready"] == 1
    assert shown["transport_status"] == {
        "kind": "redis",
        "status": "up",
        "down_since": None,
        "error": None,
        "location": valkey.url,
        "entries": 1,
        "pending_entries": 0,
    }
    assert run_detail(pg, run_id)["status"] == "queued"


def test_a_bad_queue_url_is_refused_naming_the_setting() -> None:
    from grantflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as refused:
        load_settings(queue_url="amqp://127.0.0.1/")
    assert "GRANTFLOW_QUEUE_URL" in str(refused.value)
    assert "redis://" in str(refused.value)
    assert load_settings(queue_url="  ").queue_url is None


def test_one_elected_worker_reconciles_and_runs_the_timers_and_another_takes_over(
    pg: Database, valkey: RedisServer
) -> None:
    """Two workers: one leads (announces ready runs, runs the timer chores), the other only
    takes runs; the leader stops and the other takes over, so a timer still comes due."""
    with running_worker(pg) as first, running_worker(pg) as second:
        leaders = poll(
            lambda: [w for w in (first, second) if w.queue.runs_timers()] or None,
            timeout=30,
            what="a leader to be elected",
        )
        assert len(leaders) == 1
        [follower] = [w for w in (first, second) if w is not leaders[0]]
        assert not follower.queue.runs_timers()
        leaders[0].stop(grace_seconds=10)  # (the context's own stop is then a no-op)
        poll(follower.queue.runs_timers, timeout=30, what="the other worker to take over")
        delay = {"id": "wait", "type": "delay", "config": {"duration": "PT0.5S"}}
        flow = publish(pg, workflow("timed", delay))
        run_id = start(pg, flow)
        wait_status(pg, run_id, "succeeded")  # the timer came due through the new leader


def test_a_full_valkey_is_shown_down_and_its_runs_go_once_it_has_room(
    pg: Database, valkey: RedisServer
) -> None:
    """Valkey out of memory (noeviction) still answers reads but refuses writes: the transport
    is shown down with the error, the run stays queued, and goes once Valkey has room."""
    client = valkey.client()
    flow = publish(pg, sets("full", 1))
    with running_worker(pg) as worker:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # below what it holds: every write is refused
        try:
            run_id = start(pg, flow)  # accepted: the queue item is in the database
            health = worker.queue.health()
            assert not health.up
            assert "OutOfMemoryError" in (health.error or "")
            assert run_detail(pg, run_id)["status"] == "queued"
        finally:
            client.config_set("maxmemory", "0")
        wait_status(pg, run_id, "succeeded")
        assert worker.queue.health().up
