"""A run's creation on PostgreSQL in one statement (engine/creation.py), against the general
path SQLite takes: the same rows, one statement where there were four, and a run object its
caller can go on using in the same transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import SessionTransaction

from grantflow.config import load_settings
from grantflow.definitions.models import Workflow, WorkflowVersion
from grantflow.definitions.workflows import set_enabled
from grantflow.engine import creation, detail
from grantflow.engine.models import Run, RunEvent, StepRun
from grantflow.engine.runs import start_run
from grantflow.engine.states import StepStatus
from grantflow.errors import Conflict
from grantflow.queue.models import QueueItem
from grantflow.safety import breakers
from grantflow.safety import limits as safety_limits
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.engine import ACTOR, events, publish, queue, run_detail, start, workflow
from tests.support.statements import statements_by_thread

# what differs between two runs created one after the other
_OWN = {"id", "run_id", "created_at", "last_progress_at", "deadline_at", "stuck_at", "at"}


def _postgres(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite creates a run on the general path")


def _flow(db: Database) -> str:
    return publish(
        db,
        workflow(
            "created",
            {"id": "greet", "type": "set", "config": {"values": {"hi": "{{ input.name }}"}}},
            {"id": "wait", "type": "delay", "config": {"duration": "1h"}},
        ),
    )


def _rows(db: Database, run_id: str) -> dict[str, Any]:
    """The run's rows as the database holds them, without what differs between two runs."""

    def columns(row: Any) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in _OWN}

    with db.transaction() as session:
        run = session.get(Run, run_id)
        steps = session.execute(select(StepRun).where(StepRun.run_id == run_id)).scalars()
        events = session.execute(select(RunEvent).where(RunEvent.run_id == run_id)).scalars()
        item = session.get(QueueItem, run_id)
        assert run is not None
        assert item is not None
        return {
            "run": columns(run),
            "steps": [columns(s) for s in steps],
            "events": [columns(e) for e in events],
            "item": {**columns(item), "enqueued_at": None, "available_at": None},
        }


def test_one_statement_writes_what_the_general_path_writes(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = database
    _postgres(db)
    flow = _flow(db)
    me = threading.current_thread().name
    with statements_by_thread(monkeypatch) as counted:
        made = start(db, flow, {"name": "ada"})
        one = counted[me]
    monkeypatch.setattr(creation, "applies", lambda *_: False)
    with statements_by_thread(monkeypatch) as counted:
        general = start(db, flow, {"name": "ada"})
        other = counted[me]
    assert _rows(db, made) == _rows(db, general)
    assert _rows(db, made)["events"][0]["kind"] == "queued"
    # the workflow's read, then the run, its step run, its event and its queue item: one
    # statement where the general path sends four
    assert (one, other) == (2, 5)
    # ready at once, and shown as the general path's run is
    shown = run_detail(db, made)
    assert shown["status"] == "queued"
    assert shown["steps"][0]["status"] == StepStatus.PENDING


def test_the_run_made_in_one_statement_is_the_callers_to_go_on_with(database: Database) -> None:
    """Attached as if read: a change is an update at commit, nothing is inserted twice, and
    nothing is read again to show it."""
    db = database
    _postgres(db)
    flow = _flow(db)
    with db.transaction() as session:
        run = start_run(session, ACTOR, queue(db), flow, {"name": "ada"})
        assert run in session
        assert not session.new
        assert not session.dirty
        assert run.step_runs[0].step_id == "greet"
        assert run.acted_steps == []
        run.subject = {"identity": "ada@example.com"}
        run_id = run.id
    with db.transaction() as session:
        assert session.get(Run, run_id).subject == {"identity": "ada@example.com"}  # type: ignore[union-attr]
        counted = session.execute(select(StepRun.id).where(StepRun.run_id == run_id)).all()
        assert len(counted) == 1


def test_a_start_after_the_first_reads_no_workflow(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start reads the workflow; the next writes from what it read, in one statement
    that also checks the workflow is still so, and the same rows; its detail names the
    workflow without reading it."""
    db = database
    _postgres(db)
    flow = _flow(db)
    first = start(db, flow, {"name": "ada"})
    me = threading.current_thread().name
    with statements_by_thread(monkeypatch) as counted, db.transaction() as session:
        run = start_run(session, ACTOR, queue(db), flow, {"name": "ada"})
        sent = counted[me]
        shown = detail.run_detail(session, run, queue(db), new=True)
        second = run.id
    assert sent == 1
    assert shown["workflow"] == "created"
    assert _rows(db, second) == _rows(db, first)


def _runs(db: Database) -> int:
    with db.transaction() as session:
        return len(session.execute(select(Run.id)).all())


def _changed(db: Database, flow: str, change: str) -> None:
    """The workflow changed as another process would change it (this process keeps what its
    last start read)."""
    with db.transaction() as session:
        if change == "disabled":
            set_enabled(session, ACTOR, flow, False)
        elif change == "paused for safety":
            breakers.trip(session, flow, "failure_rate", {"failed": 5}, utcnow())
        elif change == "plan lost":
            session.execute(update(WorkflowVersion).values(plan=None))
        elif change == "renamed":
            session.execute(update(Workflow).values(name="renamed", name_key="renamed"))


@pytest.mark.parametrize("change", ["disabled", "paused for safety", "plan lost", "renamed"])
def test_a_workflow_changed_since_the_last_start_is_read_again(
    database: Database, change: str
) -> None:
    """What the last start read is only used while the workflow is still so: a change made
    elsewhere is found, and the start does what the general path does with it."""
    db = database
    _postgres(db)
    flow = _flow(db)
    start(db, flow, {"name": "ada"})
    _changed(db, flow, change)
    before = _runs(db)
    if change == "disabled":
        with pytest.raises(Conflict) as refused:
            start(db, flow, {"name": "ada"})
        assert refused.value.code == "workflow_disabled"
        assert _runs(db) == before  # nothing half-written
        return
    shown = run_detail(db, start(db, flow, {"name": "ada"}))
    assert _runs(db) == before + 1
    if change == "paused for safety":
        assert shown["held"] is not None
        assert [e["kind"] for e in events(db, shown["id"])] == ["queued", "held"]
    elif change == "plan lost":
        assert shown["status"] == "failed"
        assert shown["failure"]["code"] == "plan_integrity_failed"
    else:
        assert (shown["status"], shown["workflow"]) == ("queued", "renamed")


def test_a_new_version_and_its_input_are_taken_from_the_workflow_as_it_is_now(
    database: Database,
) -> None:
    """A version published elsewhere since the last start: the run is of the new version, and
    input only the new version accepts is accepted."""
    db = database
    _postgres(db)
    document = workflow(
        "versions",
        {"id": "greet", "type": "set", "config": {"values": {"hi": "{{ input.name }}"}}},
    )
    document["trigger"]["input_schema"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    flow = publish(db, document)
    start(db, flow, {"name": "ada"})
    document["trigger"]["input_schema"] = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
    }
    document["steps"][0]["id"] = "hello"
    assert publish(db, document) == flow
    shown = run_detail(db, start(db, flow, {"n": 1}))
    assert (shown["version"], shown["steps"][0]["step_id"]) == (2, "hello")


def test_a_run_held_after_the_guard_takes_no_fanout_slot(database: Database) -> None:
    """The guarded start took a fanout slot for a run it did not write; the general path then
    held the run (the workflow was paused elsewhere), and a held run takes no slot: the slot
    is given back, so the runs after it in the same event keep their batches."""
    db = database
    _postgres(db)
    flow = _flow(db)
    start(db, flow, {"name": "ada"})
    _changed(db, flow, "paused for safety")
    with db.transaction() as session:
        run = start_run(session, ACTOR, queue(db), flow, {"name": "ada"})
        assert run.waiting_reason == "safety"
        assert session.info["fanout"].started == 0


def _undone_in(savepoint: SessionTransaction, work: Callable[[], None]) -> None:
    with savepoint:
        work()
        raise RuntimeError("undone")


def test_runs_undone_with_their_savepoint_give_their_fanout_slots_back(database: Database) -> None:
    """Runs started in a savepoint that rolls back take no place in their event's fanout: the
    run started after them in the same transaction is ready at once, not a batch later."""
    safety_limits.configure(load_settings(fanout_batch=2, fanout_interval_seconds=60))
    try:
        flow = _flow(database)
        with database.transaction() as session:

            def three() -> None:
                for _ in range(3):
                    start_run(session, ACTOR, queue(database), flow, {"name": "ada"})

            with pytest.raises(RuntimeError, match="undone"):
                _undone_in(session.begin_nested(), three)
            assert session.info["fanout"].started == 0
            run = start_run(session, ACTOR, queue(database), flow, {"name": "ada"})
            origin = session.info["fanout"].origin
        with database.transaction() as session:
            item = session.execute(select(QueueItem).where(QueueItem.run_id == run.id)).scalar_one()
            assert item.available_at == origin
            assert session.execute(select(Run.id)).scalars().all() == [run.id]
    finally:
        safety_limits.configure(load_settings())
