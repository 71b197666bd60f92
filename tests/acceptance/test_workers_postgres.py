"""Many `grantflow worker` processes on one PostgreSQL queue: no step runs twice, a worker killed
mid-step loses nothing, SIGTERM finishes the in-flight step and hands the run back, and a worker
frozen past its lease (SIGSTOP) writes nothing over its successor when it wakes."""

from __future__ import annotations

import base64
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from grantflow.engine.models import Run, StepRun
from grantflow.queue import workers
from grantflow.queue.models import QueueItem
from grantflow.store.base import utcnow
from grantflow.store.database import Database, open_database
from tests.support.databases import PostgresRun
from tests.support.engine import events, publish, run_detail, start, transport_settings
from tests.support.engine import queue as engine_queue
from tests.support.processes import WorkerProcess, grantflow_env, poll, start_worker
from tests.support.target import Reply, Target, running_target

pytestmark = [pytest.mark.postgres, pytest.mark.acceptance]
# on both queue transports: the database, and Valkey/Redis (a key prefix of its own); the rest
# (a graceful stop, a frozen worker: the lease fence) behave alike and run on the database's
BOTH_TRANSPORTS = pytest.mark.parametrize("transport", ["database", "redis"], indirect=True)

STEPS = 5


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresRun]:
    """A PostgreSQL database of this module's own, dropped at the end."""
    run = PostgresRun()
    run.create()
    try:
        yield run
    finally:
        run.drop()


@pytest.fixture
def db(postgres: PostgresRun) -> Iterator[Database]:
    """The module's database with an empty queue (tests scope their queries by run id)."""
    database = open_database(postgres.url)
    with database.transaction() as session:
        session.execute(delete(QueueItem))  # nothing an earlier test left may be picked up
    yield database
    database.dispose()


@pytest.fixture
def target() -> Iterator[Target]:
    with running_target() as server:
        yield server


@pytest.fixture
def spawn(db: Database, tmp_path: Path, transport: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `grantflow worker ARGS...` on the test database and the test's queue transport;
    every one is stopped at the end."""
    key = os.urandom(32)
    db.use_master_keys(lambda: [key])  # this process and the workers: one deployment
    env = grantflow_env(
        database_url=db.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(key).decode(),
        log_level="info",
        **transport_settings(),
    )
    started: list[WorkerProcess] = []

    def _spawn(*args: str) -> WorkerProcess:
        worker = start_worker(env, tmp_path, *args)
        started.append(worker)
        return worker

    try:
        yield _spawn
    finally:
        for worker in started:  # signal all first: they shut down side by side
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in started:
            worker.stop(timeout=10)


def http_chain(db: Database, target: Target, name: str) -> str:
    """Publish a workflow of STEPS sequential POSTs to /s1 ... /sN of the target; its id."""
    steps: list[dict[str, Any]] = [
        {
            "id": f"s{i}",
            "type": "http",
            "config": {
                "method": "POST",
                "url": f"{target.url}/s{i}",
                "body": {"n": "{{ input.n }}", "step": i},
                # longer than the target holds a reply (30 s at most): a held call is
                # answered, never timed out, however long the workers take to start
                "request_timeout": "90s",
            },
            "reversible": True,
            **({"next": f"s{i + 1}"} if i < STEPS else {}),
        }
        for i in range(1, STEPS + 1)
    ]
    return publish(db, {"name": name, "trigger": {"type": "manual"}, "steps": steps})


def keys_for(run_id: str) -> list[str]:
    return [f"{run_id}:s{i}:1-1" for i in range(1, STEPS + 1)]


def lease_owners(db: Database, run_ids: list[str]) -> set[str]:
    with db.transaction() as session:
        owners = session.execute(
            select(QueueItem.lease_owner)
            .where(QueueItem.run_id.in_(run_ids), QueueItem.lease_owner.is_not(None))
            .distinct()
        ).scalars()
        return {o for o in owners if o}


def run_statuses(db: Database, run_ids: list[str]) -> dict[str, int]:
    with db.transaction() as session:
        rows = session.execute(
            select(Run.status, func.count()).where(Run.id.in_(run_ids)).group_by(Run.status)
        ).all()
        return dict(rows)


def failures(db: Database, run_ids: list[str]) -> list[Any]:
    """Why runs failed: each one's failure, its steps and their attempts' errors (for the
    assertion's message)."""
    with db.transaction() as session:
        failed = session.execute(
            select(Run).where(Run.id.in_(run_ids), Run.status != "succeeded")
        ).scalars()
        return [
            (
                run.id,
                run.status,
                run.failure,
                [(s.step_id, s.status, s.error) for s in run.step_runs],
            )
            for run in failed
        ]


def step_runs(db: Database, run_id: str) -> dict[str, StepRun]:
    with db.transaction() as session:
        found = session.execute(select(StepRun).where(StepRun.run_id == run_id)).scalars()
        return {s.step_id: s for s in found}


@BOTH_TRANSPORTS
def test_three_workers_share_the_queue_and_run_no_step_twice(
    db: Database, target: Target, spawn: Callable[..., WorkerProcess]
) -> None:
    """30 runs x 5 http steps over 3 worker processes: each key is called once; all 3 held runs."""
    gate = threading.Event()
    target.on("/s1", Reply(200, {"ok": 1}, hold=gate))  # held until every worker holds runs
    for i in range(2, STEPS + 1):
        target.on(f"/s{i}", Reply(200, {"ok": i}))
    wf = http_chain(db, target, "fan-out")
    run_ids = [start(db, wf, {"n": n}) for n in range(30)]

    try:
        workers = [spawn("--concurrency", "4") for _ in range(3)]
        ids = {w.worker_id(): w.pid for w in workers}
        assert len(ids) == 3
        # Each worker can hold at most 4 runs, all blocked on /s1: every worker must lease some.
        seen = poll(
            lambda: (owners := lease_owners(db, run_ids)) == set(ids) and owners,
            timeout=60,
            what="every worker process to hold a lease",
        )
        assert all(f":{pid}:" in owner for owner, pid in ids.items())
    finally:
        gate.set()

    def all_done() -> bool:
        statuses = run_statuses(db, run_ids)
        assert set(statuses) <= {"queued", "running", "succeeded"}, (
            statuses,
            failures(db, run_ids),
        )
        return statuses.get("succeeded") == len(run_ids)

    poll(all_done, timeout=60, what="all 30 runs to succeed")

    per_key = target.per_key()
    expected = {key for run_id in run_ids for key in keys_for(run_id)}
    assert set(per_key) == expected
    assert [k for k, n in per_key.items() if n != 1] == []
    assert len(target.calls()) == 30 * STEPS
    for run_id in run_ids:
        assert {s.attempts for s in step_runs(db, run_id).values()} == {1}
    assert seen == set(ids)
    assert all(w.process.poll() is None for w in workers), "a worker died"


@BOTH_TRANSPORTS
def test_sigkill_mid_step_resumes_on_another_worker_with_the_same_key(
    db: Database, target: Target, spawn: Callable[..., WorkerProcess]
) -> None:
    """A worker SIGKILLed during /s3: another re-sends that call with the same key and finishes."""
    gate = threading.Event()
    for i in range(1, STEPS + 1):
        target.on(f"/s{i}", Reply(200, {"ok": i}))
    target.on("/s3", Reply(200, {"first": True}, hold=gate), Reply(200, {"ok": 3}))
    wf = http_chain(db, target, "killed")
    run_id = start(db, wf, {"n": 1})

    try:
        doomed = spawn("--concurrency", "1", "--lease-seconds", "2")
        target.wait_for_calls("/s3", 1, timeout=60)
        doomed.process.kill()
        assert doomed.process.wait(timeout=10) == -9
    finally:
        gate.set()

    # The intent was committed before the call: the step run and its attempt are in flight.
    in_flight = run_detail(db, run_id)
    s3 = next(s for s in in_flight["steps"] if s["step_id"] == "s3")
    assert s3["status"] == "running"
    assert [a["status"] for a in s3["attempt_log"]] == ["running"]

    rescuer = spawn("--concurrency", "1")
    poll(
        lambda: run_detail(db, run_id)["status"] == "succeeded",
        timeout=60,
        what="the run to succeed on the second worker",
    )

    key = f"{run_id}:s3:1-1"
    per_key = target.per_key()
    assert per_key == {k: 2 if k == key else 1 for k in keys_for(run_id)}
    assert [c.idempotency_key for c in target.calls("/s3")] == [key, key]
    assert target.calls("/s3")[0].body == target.calls("/s3")[1].body

    shown = run_detail(db, run_id)
    s3 = next(s for s in shown["steps"] if s["step_id"] == "s3")
    assert s3["status"] == "succeeded"
    assert s3["output"] == {"ok": 3}
    log = s3["attempt_log"]
    assert [a["number"] for a in log] == [1, 2]
    assert {a["idempotency_key"] for a in log} == {key}
    assert log[1]["status"] == "succeeded"
    assert log[1]["response"]["status_code"] == 200
    assert [s["attempts"] for s in shown["steps"]] == [1, 1, 2, 1, 1]
    started = [
        e["attempt"]
        for e in events(db, run_id)
        if e["kind"] == "step_started" and e["step_id"] == "s3"
    ]
    assert started == [1, 2]
    assert rescuer.process.poll() is None


def test_sigterm_finishes_the_in_flight_step_and_hands_the_run_back(
    db: Database, target: Target, spawn: Callable[..., WorkerProcess]
) -> None:
    """SIGTERM during /s3: the call completes, the run is handed back, exit 0; another finishes."""
    gate = threading.Event()
    for i in range(1, STEPS + 1):
        target.on(f"/s{i}", Reply(200, {"ok": i}))
    target.on("/s3", Reply(200, {"ok": 3}, hold=gate))
    wf = http_chain(db, target, "terminated")
    run_id = start(db, wf, {"n": 1})

    try:
        leaving = spawn("--concurrency", "1", "--lease-seconds", "30")
        target.wait_for_calls("/s3", 1, timeout=60)
        leaving.process.terminate()
        leaving.wait_for_log("worker.signal", timeout=10)
        assert leaving.process.poll() is None, "exited with a step in flight"
    finally:
        gate.set()
    assert leaving.process.wait(timeout=15) == 0
    assert leaving.wait_for_log("worker.stopped", timeout=1)

    # Handed back: s3 recorded as succeeded, nothing running, the run free for any worker now
    # (not after the 30 s lease).
    steps = step_runs(db, run_id)
    assert steps["s3"].status == "succeeded"
    assert [s.step_id for s in steps.values() if s.status == "running"] == []
    with db.transaction() as session:
        item = session.get(QueueItem, run_id)
        assert item is not None
        assert item.lease_owner is None

    spawn("--concurrency", "1")
    poll(
        lambda: run_detail(db, run_id)["status"] == "succeeded",
        timeout=60,
        what="the handed-back run to succeed on another worker",
    )
    assert target.per_key() == dict.fromkeys(keys_for(run_id), 1)
    assert {s.attempts for s in step_runs(db, run_id).values()} == {1}


def test_a_worker_frozen_past_its_lease_rewrites_nothing_its_successor_recorded(
    db: Database, target: Target, spawn: Callable[..., WorkerProcess]
) -> None:
    """SIGSTOP a worker mid-call past its lease; another takes the run over and finishes it;
    SIGCONT and answer the frozen call: the successor's outputs and attempts stand (one
    succeeded attempt per step), and the woken worker logs run.lease.lost."""
    answered = threading.Event()
    target.on("/call", Reply(200, {"by": "frozen"}, hold=answered), Reply(200, {"by": "successor"}))
    wf = publish(
        db,
        {
            "name": "frozen",
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "call",
                    "type": "http",
                    "next": "after",
                    "config": {"method": "POST", "url": f"{target.url}/call"},
                },
                {"id": "after", "type": "set", "config": {"values": {"done": True}}},
            ],
        },
    )
    run_id = start(db, wf, {})
    try:
        frozen = spawn("--concurrency", "1", "--lease-seconds", "2")
        frozen_id = frozen.worker_id()
        target.wait_for_calls("/call", 1, timeout=60)
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            successor = spawn("--concurrency", "1", "--lease-seconds", "30")
            successor_id = successor.worker_id()
            # it can take the run only once the frozen worker's lease has expired
            poll(
                lambda: run_detail(db, run_id)["status"] == "succeeded",
                timeout=120,
                what="the successor to take the run over and finish it",
            )
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        answered.set()  # the frozen worker's call returns now
        lost = frozen.wait_for_log("run.lease.lost", timeout=120)
    finally:
        answered.set()
    assert lost["run_id"] == run_id
    assert lost["worker"] == frozen_id

    shown = run_detail(db, run_id)
    assert shown["status"] == "succeeded"
    call, after = shown["steps"]
    assert call["output"] == {"by": "successor"}
    assert after["output"] == {"done": True}
    assert [a["status"] for a in call["attempt_log"]] == ["abandoned", "succeeded"]
    key = f"{run_id}:call:1-1"
    assert [c.idempotency_key for c in target.calls("/call")] == [key, key]
    succeeded = [e["step_id"] for e in events(db, run_id) if e["kind"] == "step_succeeded"]
    assert succeeded == ["call", "after"]
    assert successor_id != frozen_id
    assert frozen.process.poll() is None, "the woken worker died"


@BOTH_TRANSPORTS
def test_a_sigkilled_worker_is_shown_lost_once_its_lease_runs_out(
    db: Database, target: Target, spawn: Callable[..., WorkerProcess], transport: str
) -> None:
    """A worker holding a run mid-call is live with that run in its hand; SIGKILLed, it is
    shown lost (not live) once its 2 s lease has run out, and no longer counts as a worker a
    stuck run could wait for."""
    gate = threading.Event()
    target.on("/s1", Reply(200, {"first": True}, hold=gate), Reply(200, {"ok": 1}))
    for i in range(2, STEPS + 1):
        target.on(f"/s{i}", Reply(200, {"ok": i}))
    run_id = start(db, http_chain(db, target, "held"), {"n": 1})
    queue = engine_queue(db)
    try:
        doomed = spawn("--concurrency", "1", "--lease-seconds", "2")
        worker_id = doomed.worker_id()
        target.wait_for_calls("/s1", 1, timeout=60)
        [live] = [w for w in queue.workers() if w.id == worker_id]
        assert (live.live, live.pid, live.runs_in_hand) == (True, doomed.pid, 1)
        assert live.transport == transport
        doomed.process.kill()
        assert doomed.process.wait(timeout=10) == -9
        lost = poll(
            lambda: next((w for w in queue.workers() if w.id == worker_id and not w.live), None),
            timeout=60,
            what="the killed worker to be shown lost",
        )
        assert lost.pid == doomed.pid
        # its run's lease runs out with it (at most a heartbeat later: the run may have been
        # claimed after the worker's last heartbeat renewed its own lease)
        poll(
            lambda: [w.runs_in_hand for w in queue.workers() if w.id == worker_id] == [0],
            timeout=30,
            what="the killed worker's run to leave its hand",
        )
        with db.transaction() as session:
            assert worker_id not in workers.live_ids(session, utcnow())
    finally:
        gate.set()
    assert run_detail(db, run_id)["status"] in ("queued", "running")
