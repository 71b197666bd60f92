"""The fast path for a run's first step (engine/first_step.py, engine/take.py): on PostgreSQL a
freshly claimed run is taken and its first step started without the general path, in two
round trips; a worker whose lease was lost between its read and its write takes nothing; each
way the run can differ from what was read leaves it to the general path with nothing written.
(The hot-and-general comparison of tests/integration/test_checkpoints.py covers what it writes.)"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select, text, update

from grantflow.connections.outbound import OutboundPolicy
from grantflow.engine import concurrency, first_step, hooks, operations, take
from grantflow.engine.hooks import RunEnd
from grantflow.engine.interpreter import Interpreter
from grantflow.engine.models import Run, RunEvent, StepAttempt, StepRun
from grantflow.engine.plans import plan_for, plan_of_text
from grantflow.engine.states import RunStatus
from grantflow.engine.turns import Turn
from grantflow.engine.worker import Worker
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.models import QueueItem
from grantflow.schedules.models import STARTER_LABEL
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.engine import (
    ACTOR,
    events,
    publish,
    run_detail,
    running_worker,
    start,
    wait_status,
    workflow,
)
from tests.support.statements import statements_by_thread
from tests.support.target import Reply, running_target


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values}}


def http_step(step_id: str, url: str) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": "POST", "url": url}}


@contextmanager
def prepared_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The runs the general path's first look (`_prepare`) saw, in order."""
    seen: list[str] = []
    original = Interpreter._prepare

    def prepare(self: Interpreter, turn: Turn) -> Any:
        seen.append(turn.run_id)
        return original(self, turn)

    monkeypatch.setattr(Interpreter, "_prepare", prepare)
    yield seen


def test_a_fresh_run_takes_no_general_path(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """set, call, set: on PostgreSQL the run never goes through the general path, and the
    thread that advances it sends 4 statements (the take, with the workflow's start lock and
    count inside it; then one checkpoint per step boundary: the run was read by its claim); on
    SQLite the first step takes the general path, the reference."""
    with running_target() as target:
        target.on("/call", Reply(200, {"ok": True}))
        wf = publish(
            database,
            workflow(
                "fast",
                set_step("a", n=1),
                http_step("call", f"{target.url}/call"),
                set_step("b", m=2),
            ),
        )
        with (
            prepared_runs(monkeypatch) as prepared,
            running_worker(database),
        ):
            if database.dialect == "postgresql":
                with statements_by_thread(monkeypatch) as counted:
                    run_id = start(database, wf)
                    shown = wait_status(database, run_id, "succeeded", "failed")
            else:
                run_id = start(database, wf)
                shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded", shown["failure"]
    assert [(e["kind"], e["step_id"]) for e in events(database, run_id)][:3] == [
        ("queued", None),
        ("started", "a"),
        ("step_succeeded", "a"),
    ]
    if database.dialect == "postgresql":
        assert prepared == []
        assert sum(n for thread, n in counted.items() if thread.startswith("run")) == 4
    else:
        assert prepared == [run_id]


def test_a_call_first_is_started_by_the_take(database: Database) -> None:
    """A first step that calls out: its intent (attempt 1, running, its key and request) is
    committed with the run's start, before the call; the call is made once."""
    if database.dialect != "postgresql":
        pytest.skip("the fast take is PostgreSQL's")
    seen: dict[str, Any] = {}
    with running_target() as target:
        target.on("/call", Reply(200, {"ok": True}))
        wf = publish(database, workflow("first-call", http_step("call", f"{target.url}/call")))
        run_id = start(database, wf)
        interpreter = _worker(database, "w1").interpreter
        try:
            assert DatabaseQueue(database).claim("w1", 1, 30) == [run_id]
            turn = Turn(run_id)
            assert interpreter._take_fresh(turn) is True
            seen = run_detail(database, run_id)
            assert turn.chain is not None
            assert interpreter._advance_chain(turn, turn.chain) is True  # the call, the end
        finally:
            interpreter.http.close()
    assert len(target.calls("/call")) == 1
    done = run_detail(database, run_id)
    assert done["status"] == "succeeded"
    assert [a["status"] for a in done["steps"][0]["attempt_log"]] == ["succeeded"]
    assert seen["status"] == "running"
    (started,) = seen["steps"]
    assert (started["status"], started["attempts"]) == ("running", 1)
    (attempt,) = started["attempt_log"]
    assert attempt["status"] == "running"
    assert attempt["idempotency_key"] == f"{run_id}:call:1-1"
    assert attempt["request"]["request"]["headers"]["Idempotency-Key"] == f"{run_id}:call:1-1"
    assert [(e["kind"], e["step_id"], e["attempt"]) for e in events(database, run_id)][:3] == [
        ("queued", None, None),
        ("started", "call", None),
        ("step_started", "call", 1),
    ]


@pytest.mark.parametrize(
    ("trigger", "created_by", "replay_of", "people"),
    [
        ("manual", "user:ada", None, False),
        ("identity_joined", "system:lifecycle", None, False),
        ("schedule", STARTER_LABEL, None, False),
        ("manual", "user:ada", "an-earlier-run", False),
        ("manual", "user:ada", None, True),
    ],
    ids=["manual", "lifecycle", "scheduled", "replay", "with people"],
)
def test_no_listener_is_concerned_with_a_fresh_run_s_start(
    trigger: str, created_by: str, replay_of: str | None, people: bool
) -> None:
    """Listeners act on a run's end (and tasks on a retry), never on its start: whatever
    started a run, its first step may take the fast path."""
    start = RunEnd(RunStatus.RUNNING, trigger, created_by, replay_of, 0, people)
    assert hooks.run_end_concerns_a_listener(start) is False


# --- the guard --------------------------------------------------------------------------------


def test_the_claim_reads_a_fresh_run_and_only_a_fresh_one(database: Database) -> None:
    """A worker's claim on PostgreSQL brings each fresh run's row (the read its take needs),
    handed over once; a run that is no longer fresh comes with none, and the general path reads
    it. The claim still answers when the next parked run is due."""
    if database.dialect != "postgresql":
        pytest.skip("the fast take is PostgreSQL's")
    wf = publish(database, workflow("read-by-claim", set_step("a", x=1)))
    fresh, started = start(database, wf), start(database, wf)
    with database.transaction() as session:  # started before: no longer fresh
        session.execute(update(Run).where(Run.id == started).values(started_at=utcnow()))
    later = start(database, wf)
    with database.transaction() as session:  # parked for an hour
        session.execute(
            update(QueueItem)
            .where(QueueItem.run_id == later)
            .values(available_at=utcnow() + dt.timedelta(hours=1))
        )
    worker = _worker(database, "w1")
    try:
        queue = worker.queue
        assert sorted(queue.claim("w1", 5, 30)) == sorted([fresh, started])
        read = take.fresh_of(queue.claimed_row(fresh))
        assert read is not None
        assert (read.run["id"], read.step_run["step_id"], read.workflow_name) == (
            fresh,
            "a",
            "read-by-claim",
        )
        assert queue.claimed_row(fresh) is None  # handed over once
        assert take.fresh_of(queue.claimed_row(started)) is None
        due = queue.next_due()
        assert due is not None
        assert due > utcnow() + dt.timedelta(minutes=59)
    finally:
        worker.interpreter.http.close()


def _worker(database: Database, name: str) -> Worker:
    """A worker whose interpreter the test drives itself (no threads of its own)."""
    return Worker(
        database,
        DatabaseQueue(database),
        worker_id=name,
        lease_seconds=30,
        outbound=OutboundPolicy.parse(["127.0.0.1"]),
    )


def _fresh_run(database: Database, **settings: Any) -> str:
    """A fresh run of set → set, claimed by worker w1."""
    document = workflow("taken", set_step("a", x=1), set_step("b", y=2))
    if settings:
        document["settings"] = settings
    run_id = start(database, publish(database, document))
    assert DatabaseQueue(database).claim("w1", 1, 30) == [run_id]
    return run_id


def _snapshot(database: Database, run_id: str) -> tuple[Any, ...]:
    """Everything a take could write: the run, its step runs, attempts, events, what the gate
    counted."""
    with database.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        with database.engine.connect() as conn:
            usage = conn.execute(
                text(
                    "SELECT kind, period_key, sum(count) FROM usage_counters "
                    "GROUP BY 1, 2 ORDER BY 1, 2"
                )
            ).all()
            marks = conn.execute(
                text("SELECT count(*) FROM step_runs WHERE counted_at IS NOT NULL")
            ).scalar_one()
        return (
            run.status,
            run.lease_token,
            run.started_at,
            run.last_progress_at,
            tuple(
                session.execute(
                    select(StepRun.status, StepRun.attempts).where(StepRun.run_id == run_id)
                ).all()
            ),
            session.execute(select(func.count()).select_from(StepAttempt)).scalar_one(),
            session.execute(
                select(func.count()).select_from(RunEvent).where(RunEvent.run_id == run_id)
            ).scalar_one(),
            tuple(usage),
            marks,
        )


def _set_run(database: Database, run_id: str, **values: Any) -> None:
    with database.transaction() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def _set_item(database: Database, run_id: str, **values: Any) -> None:
    with database.transaction() as session:
        session.execute(update(QueueItem).where(QueueItem.run_id == run_id).values(**values))


BREAKS: dict[str, Callable[[Database, str], None]] = {
    # the lease lost to another worker that claimed the run meanwhile
    "lease lost": lambda db, run_id: _set_item(db, run_id, lease_owner="w2"),
    "lease expired": lambda db, run_id: _set_item(
        db, run_id, lease_expires_at=utcnow() - dt.timedelta(seconds=1)
    ),
    "taken by another worker's turn": lambda db, run_id: _set_run(db, run_id, lease_token="t2"),
    "paused by an operator": lambda db, run_id: _operator(db, run_id, operations.pause),
    "cancelled": lambda db, run_id: _operator(db, run_id, operations.cancel),
    "deadline passed": lambda db, run_id: _set_run(
        db, run_id, deadline_at=utcnow() - dt.timedelta(seconds=1)
    ),
    "step moved on": lambda db, run_id: _set_steps(db, run_id, status="cancelled"),
    "workflow paused for safety": lambda db, run_id: _pause_workflow(db, run_id),
    "concurrency limit reached": lambda db, run_id: _busy(db, run_id),
}


def _operator(database: Database, run_id: str, operation: Callable[..., Any]) -> None:
    with database.transaction() as session:
        operation(session, ACTOR, DatabaseQueue(database), run_id)


def _set_steps(database: Database, run_id: str, **values: Any) -> None:
    with database.transaction() as session:
        session.execute(update(StepRun).where(StepRun.run_id == run_id).values(**values))


def _pause_workflow(database: Database, run_id: str) -> None:
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE workflows SET safety_pause = CAST(:pause AS jsonb) "
                "WHERE id = (SELECT workflow_id FROM runs WHERE id = :r)"
            ),
            {"pause": '{"breaker": "runs_per_minute"}', "r": run_id},
        )


def _busy(database: Database, run_id: str) -> None:
    """Another run of the workflow running: its max_concurrent_runs (1) is reached."""
    with database.transaction() as session:
        workflow_id = session.execute(select(Run.workflow_id).where(Run.id == run_id)).scalar_one()
    other = start(database, workflow_id)
    _set_run(database, other, status="running", started_at=utcnow())


@pytest.mark.parametrize("change", sorted(BREAKS))
def test_a_take_whose_guard_fails_writes_nothing(
    database: Database, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The run changes between the worker's read and its write (a worker frozen there): the
    take writes nothing, and the turn is left as it was for the general path."""
    if database.dialect != "postgresql":
        pytest.skip("the fast take is PostgreSQL's")
    run_id = _fresh_run(database, max_concurrent_runs=1)
    read = first_step.read_fresh
    before: list[tuple[Any, ...]] = []

    def read_then_change(db: Database, read_id: str) -> Any:
        fresh = read(db, read_id)
        assert fresh is not None  # the run was fresh when read
        BREAKS[change](database, run_id)
        before.append(_snapshot(database, run_id))
        return fresh

    monkeypatch.setattr(first_step, "read_fresh", read_then_change)
    interpreter = _worker(database, "w1").interpreter
    try:
        turn = Turn(run_id)
        assert interpreter._take_fresh(turn) is False
    finally:
        interpreter.http.close()
    assert _snapshot(database, run_id) == before[0]
    assert turn == Turn(run_id)


def test_a_take_whose_guard_holds_writes_the_start(database: Database) -> None:
    """The same take with nothing changed: the run is running under the turn's new token,
    started once; its pure first step ran and its success was recorded with the next step,
    each counted once by the gate; a second take finds the run not fresh."""
    if database.dialect != "postgresql":
        pytest.skip("the fast take is PostgreSQL's")
    run_id = _fresh_run(database, max_concurrent_runs=1)
    interpreter = _worker(database, "w1").interpreter
    try:
        turn = Turn(run_id)
        assert interpreter._take_fresh(turn) is True
        before = _snapshot(database, run_id)
        assert interpreter._take_fresh(Turn(run_id)) is False
    finally:
        interpreter.http.close()
    assert _snapshot(database, run_id) == before
    status, token, started_at, progress, steps, _attempts, _events, usage, marks = before
    assert (status, token) == ("running", turn.token)
    assert sorted(steps) == [("pending", 0), ("succeeded", 1)]
    assert started_at is not None
    assert progress >= started_at
    assert marks == 2  # a (with the run) and b
    assert {kind for kind, _period, _count in usage} == {"runs", "steps"}
    assert [(e["kind"], e["step_id"]) for e in events(database, run_id)] == [
        ("queued", None),
        ("started", "a"),
        ("step_succeeded", "a"),
    ]
    assert turn.chain is not None  # b next, on the hot path


def test_a_worker_fenced_out_before_its_take_writes_nothing(database: Database) -> None:
    """A worker claims a fresh run, freezes past its lease, and another worker claims the run
    and finishes it; the first worker, back, takes nothing on the fast path or the general path
    (it logs run.lease.lost), and the run reads as the second worker left it."""
    if database.dialect != "postgresql":
        pytest.skip("the fast take is PostgreSQL's")
    run_id = _fresh_run(database)
    _set_item(database, run_id, lease_expires_at=utcnow() - dt.timedelta(seconds=1))
    first, second = _worker(database, "w1"), _worker(database, "w2")
    try:
        assert second.queue.claim("w2", 1, 30) == [run_id]
        before = _snapshot(database, run_id)
        assert first.interpreter._take_fresh(Turn(run_id)) is False
        assert _snapshot(database, run_id) == before
        with structlog.testing.capture_logs() as logs:
            first.interpreter.advance(run_id)
        assert _snapshot(database, run_id) == before
        assert [e["worker"] for e in logs if e["event"] == "run.lease.lost"] == ["w1"]
        second.interpreter.advance(run_id)
    finally:
        first.http.close()
        second.http.close()
    shown = run_detail(database, run_id)
    assert shown["status"] == "succeeded"
    kinds = [e["kind"] for e in events(database, run_id)]
    assert kinds.count("started") == 1


@pytest.mark.parametrize("path", ["fast take", "general path"])
def test_a_start_waits_for_another_start_of_the_workflow_and_counts_it(
    database: Database, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """max_concurrent_runs 1: another run of the workflow is being started (its transaction
    holds the workflow's start lock and has made it running, not yet committed). The worker's
    start of this run waits for that transaction, then counts its run and leaves this one
    queued for later: two starts never both see the other not running."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite's single writer lock orders starts already")
    if path == "general path":
        monkeypatch.setattr(first_step, "read_fresh", lambda db, run_id: None)
    run_id = _fresh_run(database, max_concurrent_runs=1)
    with database.transaction() as session:
        workflow_id = session.execute(select(Run.workflow_id).where(Run.id == run_id)).scalar_one()
    other = start(database, workflow_id)
    worker = _worker(database, "w1")
    settled: list[bool] = []
    with database.engine.connect() as starting:
        starting.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": concurrency.lock_key(workflow_id)},
        )
        starting.execute(
            update(Run).where(Run.id == other).values(status="running", started_at=utcnow())
        )
        thread = threading.Thread(target=lambda: settled.append(worker.interpreter.advance(run_id)))
        thread.start()
        try:
            _wait_for_a_lock_wait(database, thread)
        finally:
            starting.commit()
            thread.join()
            worker.http.close()
    assert settled == [True]
    shown = run_detail(database, run_id)
    assert (shown["status"], shown["started_at"]) == ("queued", None)
    with database.transaction() as session:
        item = session.get(QueueItem, run_id)
        assert item is not None
        assert item.lease_owner is None
        assert item.available_at > utcnow()  # looked at again later


def _wait_for_a_lock_wait(database: Database, thread: threading.Thread) -> None:
    """Until a backend waits for an advisory lock (the worker's start, behind the test's), or
    the worker's turn ended without waiting."""
    deadline = utcnow() + dt.timedelta(seconds=30)
    with database.engine.connect() as conn:
        while thread.is_alive() and utcnow() < deadline:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar_one()
            conn.rollback()
            if waiting:
                return
            thread.join(0.01)


def test_a_worker_parses_a_plan_once_whichever_path_reads_it(database: Database) -> None:
    """The fresh read (with the claim) and the general path read a version's plan as the same
    text, the key its parsed plan is cached by: one parse, one plan object, the same key order
    on a run's first turn as on its later ones."""
    if database.dialect != "postgresql":
        pytest.skip("the fast take is PostgreSQL's")
    run_id = _fresh_run(database)
    fresh = take.read_fresh(database, run_id)
    assert fresh is not None
    assert isinstance(fresh.plan, str)
    workflow_id, version = fresh.run["workflow_id"], fresh.run["version"]
    taken = plan_of_text(workflow_id, fresh.workflow_name, version, fresh.plan)
    with database.transaction() as session:
        assert plan_for(session, workflow_id, version) is taken
