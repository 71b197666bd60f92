"""The hot path between steps (engine/checkpoint.py), on both databases: a chain of steps records
exactly what the general path records; a checkpoint whose guard no longer holds writes nothing;
an operator's pause or cancel during a call on the hot path is still honoured at the boundary."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError

from grantflow.engine import hot_path, operations
from grantflow.engine.checkpoint import (
    Guard,
    Started,
    record_started,
    record_succeeded,
)
from grantflow.engine.interpreter import Interpreter
from grantflow.engine.models import Run, RunEvent, StepAttempt, StepRun
from grantflow.engine.turns import call_step
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.models import QueueItem
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database
from tests.support.databases import kill_connections
from tests.support.engine import (
    ACTOR,
    boundary_success,
    events,
    leased_run,
    publish,
    run_detail,
    running_worker,
    start,
    wait_for,
    wait_status,
    workflow,
)
from tests.support.target import Reply, running_target


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values}}


def http_step(step_id: str, url: str, method: str = "GET", **config: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": method, "url": url, **config}}


def step(shown: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in shown["steps"] if s["step_id"] == step_id)


# --- a chain of steps ------------------------------------------------------------------------


def test_a_chain_of_steps_records_every_boundary(database: Database) -> None:
    """Pure steps and calls alternate; outputs flow between them; every step run, attempt and
    timeline event is what an admin reads for a run taken step by step."""
    with running_target() as target:
        target.on("/users", Reply(201, {"id": "u-7"}))
        target.on("/users/u-7", Reply(200, {"active": True}))
        target.on("/audit", Reply(202, {"logged": True}))
        wf = publish(
            database,
            workflow(
                "chain",
                set_step("a", n=2),
                set_step("b", n="{{ steps.a.output.n * 10 }}"),
                http_step(
                    "create", f"{target.url}/users", "POST", body={"n": "{{ steps.b.output.n }}"}
                ),
                set_step("c", uid="{{ steps.create.output.id }}"),
                http_step("read", f"{target.url}/users/{{{{ steps.c.output.uid }}}}"),
                # a call right after a call: its intent commits with the previous success
                http_step(
                    "audit", f"{target.url}/audit", "POST", body={"a": "{{ steps.read.output }}"}
                ),
                set_step("d", active="{{ steps.read.output.active }}"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded", shown["failure"]
    assert [s["step_id"] for s in shown["steps"]] == [
        "a",
        "b",
        "create",
        "c",
        "read",
        "audit",
        "d",
    ]
    assert [s["sequence"] for s in shown["steps"]] == [1, 2, 3, 4, 5, 6, 7]
    for shown_step in shown["steps"]:
        assert shown_step["status"] == "succeeded"
        assert shown_step["attempts"] == 1
        assert shown_step["started_at"] is not None
        assert shown_step["finished_at"] is not None
        assert shown_step["started_at"] <= shown_step["finished_at"]
    assert [s["next_step"] for s in shown["steps"]] == [
        "b",
        "create",
        "c",
        "read",
        "audit",
        "d",
        None,
    ]
    assert step(shown, "b")["output"] == {"n": 20}
    assert step(shown, "d")["output"] == {"active": True}
    assert target.calls("/users")[0].body == {"n": 20}
    assert target.calls("/users")[0].idempotency_key == f"{run_id}:create:1-1"
    assert target.calls("/users/u-7")[0].idempotency_key == f"{run_id}:read:1-1"
    assert target.calls("/audit")[0].body == {"a": {"active": True}}
    assert target.calls("/audit")[0].idempotency_key == f"{run_id}:audit:1-1"
    for call_id in ("create", "read", "audit"):
        (attempt,) = step(shown, call_id)["attempt_log"]
        assert attempt["number"] == 1
        assert attempt["status"] == "succeeded"
        assert attempt["idempotency_key"] == f"{run_id}:{call_id}:1-1"
        assert attempt["request"]["request"]["method"] == ("GET" if call_id == "read" else "POST")
        assert attempt["response"]["status_code"] in (200, 201, 202)
        assert attempt["duration_ms"] is not None
        assert attempt["finished_at"] is not None
    for pure in ("a", "b", "c", "d"):
        assert step(shown, pure)["attempt_log"] == []  # local steps keep no attempt log
    timeline = events(database, run_id)
    assert [(e["kind"], e["step_id"]) for e in timeline] == [
        ("queued", None),
        ("started", "a"),
        ("step_succeeded", "a"),
        ("step_succeeded", "b"),
        ("step_started", "create"),
        ("step_succeeded", "create"),
        ("step_succeeded", "c"),
        ("step_started", "read"),
        ("step_succeeded", "read"),
        ("step_started", "audit"),
        ("step_succeeded", "audit"),
        ("step_succeeded", "d"),
        ("succeeded", "d"),
    ]
    for event in timeline[2:-1]:
        assert event["attempt"] == 1
    assert timeline[4]["data"] == {"type": "http"}
    assert all("duration_ms" in e["data"] for e in timeline if e["kind"] == "step_succeeded")
    with database.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert run.last_progress_at >= run.started_at  # type: ignore[operator]
        assert run.stuck_at == run.last_progress_at + dt.timedelta(seconds=run.stuck_after_seconds)


def test_a_failing_call_on_the_hot_path_is_classified_and_the_run_fails(
    database: Database,
) -> None:
    """A 400 after a pure step: the general path records the failure, no retry."""
    with running_target() as target:
        target.on("/users", Reply(400, {"error": "bad email"}))
        wf = publish(
            database,
            workflow("bad", set_step("a", x=1), http_step("create", f"{target.url}/users", "POST")),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "failed"
    assert shown["failure"]["class"] == "permanent"
    assert shown["failure"]["step_id"] == "create"
    created = step(shown, "create")
    assert created["status"] == "failed"
    assert [a["status"] for a in created["attempt_log"]] == ["failed"]
    assert len(target.calls("/users")) == 1


# --- operators during a call on the hot path --------------------------------------------------


def _held_call(database: Database, act: Callable[[str], None]) -> tuple[dict[str, Any], list[Any]]:
    """Run set → held POST → set; `act(run_id)` while the POST is held; the run detail once
    it settles, and the calls the next step made."""
    release = threading.Event()
    with running_target() as target:
        target.on("/slow", Reply(200, {"ok": True}, hold=release))
        target.on("/next", Reply(200, {"ok": True}))
        wf = publish(
            database,
            workflow(
                "held",
                set_step("first", x=1),
                http_step("slow", f"{target.url}/slow", "POST"),
                http_step("next", f"{target.url}/next", "POST"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            try:
                target.wait_for_calls("/slow", 1)
                act(run_id)
                release.set()
                # settled: the run stopped and the held call's outcome is recorded
                shown = wait_for(
                    database,
                    run_id,
                    lambda d: (
                        d["status"] in ("paused", "cancelled", "succeeded", "failed")
                        and step(d, "slow")["status"] != "running"
                    ),
                )
            finally:
                release.set()
        return shown, target.calls("/next")


def test_a_pause_during_a_call_on_the_hot_path_stops_at_the_boundary(database: Database) -> None:
    def pause(run_id: str) -> None:
        with database.transaction() as session:
            operations.pause(session, ACTOR, DatabaseQueue(database), run_id)

    shown, next_calls = _held_call(database, pause)
    assert shown["status"] == "paused"
    assert step(shown, "slow")["status"] == "succeeded"
    assert step(shown, "slow")["attempt_log"][0]["status"] == "succeeded"
    assert step(shown, "next")["status"] == "pending"
    assert next_calls == []


def test_a_forced_cancel_during_a_call_on_the_hot_path_records_the_call(
    database: Database,
) -> None:
    def cancel(run_id: str) -> None:
        with database.transaction() as session:
            operations.cancel(session, ACTOR, DatabaseQueue(database), run_id, force=True)

    shown, next_calls = _held_call(database, cancel)
    assert shown["status"] == "cancelled"
    slow = step(shown, "slow")
    assert slow["status"] == "succeeded"  # it acted: the record says so
    assert slow["attempt_log"][0]["status"] == "succeeded"
    assert next_calls == []
    assert "next" not in [s["step_id"] for s in shown["steps"]]


# --- the guard -------------------------------------------------------------------------------


def _snapshot(database: Database, run_id: str) -> tuple[Any, ...]:
    with database.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return (
            run.current_step,
            run.last_progress_at,
            tuple(
                session.execute(
                    select(StepRun.status, StepRun.attempts)
                    .where(StepRun.run_id == run_id)
                    .order_by(StepRun.sequence)
                ).all()
            ),
            session.execute(
                select(func.count()).select_from(RunEvent).where(RunEvent.run_id == run_id)
            ).scalar_one(),
            session.execute(select(func.count()).select_from(StepAttempt)).scalar_one(),
        )


BREAKS: dict[str, Callable[[Database, str], None]] = {}


def _breaks(name: str) -> Callable[[Callable[[Database, str], None]], Callable[..., None]]:
    def register(change: Callable[[Database, str], None]) -> Callable[..., None]:
        BREAKS[name] = change
        return change

    return register


def _set_run(database: Database, run_id: str, **values: Any) -> None:
    with database.transaction() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


@_breaks("pause requested")
def _pause(database: Database, run_id: str) -> None:
    _set_run(database, run_id, pause_requested=True)


@_breaks("cancelled")
def _cancel(database: Database, run_id: str) -> None:
    _set_run(database, run_id, status="cancelled")


@_breaks("deadline passed")
def _deadline(database: Database, run_id: str) -> None:
    _set_run(database, run_id, deadline_at=utcnow() - dt.timedelta(seconds=1))


@_breaks("at another step")
def _elsewhere(database: Database, run_id: str) -> None:
    _set_run(database, run_id, current_step="b")


@_breaks("lease lost")
def _lease(database: Database, run_id: str) -> None:
    with database.transaction() as session:
        session.execute(
            update(QueueItem).where(QueueItem.run_id == run_id).values(lease_owner="w2")
        )


@_breaks("taken over by another worker's turn")
def _taken_over(database: Database, run_id: str) -> None:
    _set_run(database, run_id, lease_token="t2")


@_breaks("lease expired")
def _expired(database: Database, run_id: str) -> None:
    with database.transaction() as session:
        session.execute(
            update(QueueItem)
            .where(QueueItem.run_id == run_id)
            .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
        )


@_breaks("step moved on")
def _step(database: Database, run_id: str) -> None:
    with database.transaction() as session:
        session.execute(update(StepRun).where(StepRun.run_id == run_id).values(status="cancelled"))


@pytest.mark.parametrize("change", sorted(BREAKS))
def test_a_checkpoint_whose_guard_fails_writes_nothing(database: Database, change: str) -> None:
    """Each way the run can change under the worker: neither checkpoint writes anything."""

    def succeeded(guard: Guard, now: dt.datetime) -> bool:
        return record_succeeded(database, guard, boundary_success(now))

    def started(guard: Guard, now: dt.datetime) -> bool:
        intent = Started(new_id(), "k", {"method": "POST"}, now, {"type": "http"})
        return record_started(database, guard, intent)

    for record in (succeeded, started):
        run_id, step_run_id = leased_run(database, "pending")
        BREAKS[change](database, run_id)
        before = _snapshot(database, run_id)
        now = utcnow()
        assert record(Guard(run_id, "w1", "t1", "a", step_run_id, "pending", now), now) is False
        assert _snapshot(database, run_id) == before


def test_a_checkpoint_whose_guard_holds_writes_the_boundary(database: Database) -> None:
    run_id, step_run_id = leased_run(database, "pending")
    now = utcnow()
    guard = Guard(run_id, "w1", "t1", "a", step_run_id, "pending", now)
    assert record_succeeded(database, guard, boundary_success(now)) is True
    shown = run_detail(database, run_id)
    assert shown["current_step"] == "b"
    assert [(s["step_id"], s["status"]) for s in shown["steps"]] == [
        ("a", "succeeded"),
        ("b", "pending"),
    ]
    assert step(shown, "a")["output"] == {"x": 1}
    assert events(database, run_id)[-1]["kind"] == "step_succeeded"
    # the same boundary again: the step is no longer pending, so nothing more is written
    before = _snapshot(database, run_id)
    assert record_succeeded(database, guard, boundary_success(now)) is False
    assert _snapshot(database, run_id) == before


# --- the hot path and the general path write the same ----------------------------------------


def _normalised(database: Database, run_id: str) -> dict[str, Any]:
    """Everything a run wrote, without ids and times; JSON columns read raw (JSON null is not
    SQL NULL)."""
    shown = run_detail(database, run_id)
    steps = [
        {
            **{
                k: v
                for k, v in s.items()
                if k not in ("started_at", "finished_at", "next_attempt_at", "attempt_log")
            },
            "attempt_log": [
                {
                    "number": a["number"],
                    "status": a["status"],
                    "key": a["idempotency_key"].replace(run_id, "RUN"),
                    # (the logged Idempotency-Key header names the run)
                    "request": json.loads(json.dumps(a["request"]).replace(run_id, "RUN")),
                    "status_code": (a["response"] or {}).get("status_code"),
                    "timed": a["duration_ms"] is not None,
                }
                for a in s["attempt_log"]
            ],
        }
        for s in shown["steps"]
    ]
    timeline = [
        (e["kind"], e["step_id"], e["attempt"], sorted(e.get("data", {})))
        for e in events(database, run_id)
    ]
    with database.engine.connect() as conn:
        nulls = conn.execute(
            text(
                "SELECT output IS NULL, error IS NULL FROM step_runs WHERE run_id = :r "
                "ORDER BY sequence"
            ),
            {"r": run_id},
        ).all()
        # what the safety gate counted: each step start once (its step run's mark), in the
        # workflow's counters per kind and period (minute, day, month: told apart by the key's
        # length)
        marks = conn.execute(
            text(
                "SELECT step_id || ':' || iteration FROM step_runs WHERE run_id = :r "
                "AND counted_at IS NOT NULL ORDER BY 1"
            ),
            {"r": run_id},
        ).scalars()
        counters = conn.execute(
            text("SELECT kind, period_key, count FROM usage_counters WHERE scope_id = :w"),
            {"w": shown["workflow_id"]},
        ).all()
    usage: dict[str, int] = {}
    for kind, period, count in counters:
        usage[f"{kind}/{len(period)}"] = usage.get(f"{kind}/{len(period)}", 0) + count
    run = {k: shown[k] for k in ("status", "current_step", "failure", "acted_steps")}
    run["counted"] = {"marks": list(marks), "usage": usage}
    if run["failure"] and run["failure"].get("action"):  # its path and command name the run
        action = run["failure"]["action"]
        run["failure"]["action"] = {k: str(v).replace(run_id, "RUN") for k, v in action.items()}
    return {"run": run, "steps": steps, "timeline": timeline, "nulls": [tuple(n) for n in nulls]}


def _calls(name: str, url: str) -> dict[str, Any]:
    return workflow(
        name,
        set_step("a", n=1),
        http_step("one", f"{url}/one", "POST"),
        http_step("two", f"{url}/two", "POST"),
        set_step("b", m="{{ steps.two.output.ok }}"),
        http_step("three", f"{url}/three", "POST"),
    )


def _fail_after_call(name: str, url: str) -> dict[str, Any]:
    return workflow(
        name,
        set_step("a", n=1),
        http_step("one", f"{url}/one", "POST"),
        http_step("bad", f"{url}/bad", "POST"),
    )


def _retry_then_ok(name: str, url: str) -> dict[str, Any]:
    document = workflow(
        name,
        set_step("a", n=1),
        http_step("one", f"{url}/one", "POST"),
        http_step("flaky", f"{url}/flaky", "POST"),
        set_step("b", m=1),
    )
    document["steps"][2]["retry"] = {"max_attempts": 3, "initial_backoff": "50ms", "jitter": "none"}
    return document


def _loop(name: str, url: str) -> dict[str, Any]:
    document = workflow(
        name,
        set_step("a", n=1),
        http_step("one", f"{url}/one", "POST"),
        {
            "id": "again",
            "type": "condition",
            "config": {},
            "branches": [{"when": "steps.one.output.more", "next": "one"}],
            "next": "end",
        },
        set_step("end", done=True),
    )
    document["steps"][1]["max_iterations"] = 3
    return document


def _continue_after_failure(name: str, url: str) -> dict[str, Any]:
    document = _fail_after_call(name, url)
    document["steps"][2]["on_failure"] = "continue"
    document["steps"][2]["next"] = "b"
    document["steps"].append(set_step("b", skipped="{{ steps.bad.output.skipped }}"))
    return document


def _call_first(name: str, url: str) -> dict[str, Any]:
    return workflow(
        name,
        http_step("one", f"{url}/one", "POST"),
        set_step("b", m="{{ steps.one.output.ok }}"),
        http_step("two", f"{url}/two", "POST"),
    )


def _call_first_fails(name: str, url: str) -> dict[str, Any]:
    return workflow(name, http_step("bad", f"{url}/bad", "POST"), set_step("b", m=1))


def _first_config_unrendered(name: str, url: str) -> dict[str, Any]:
    """The first step's config names a field the input does not have: it fails as it starts."""
    return workflow(
        name,
        http_step("one", f"{url}/one", "POST", body={"n": "{{ input.missing.field }}"}),
        set_step("b", m=1),
    )


def _delay_first(name: str, url: str) -> dict[str, Any]:
    """A pure first step that waits: the general path parks the run."""
    return workflow(
        name,
        {"id": "pause", "type": "delay", "config": {"duration": "50ms"}},
        http_step("one", f"{url}/one", "POST"),
    )


CASES: dict[str, tuple[Callable[[str, str], dict[str, Any]], dict[str, list[Reply]]]] = {
    "calls": (
        _calls,
        {
            "/one": [Reply(200, {"ok": 1})],
            "/two": [Reply(201, {"ok": 2})],
            "/three": [Reply(200, {"ok": 3})],
        },
    ),
    "a call first": (
        _call_first,
        {"/one": [Reply(200, {"ok": 1})], "/two": [Reply(200, {"ok": 2})]},
    ),
    "a delay first": (_delay_first, {"/one": [Reply(200, {"ok": 1})]}),
    "a call first fails": (_call_first_fails, {"/bad": [Reply(404, {"error": "no"})]}),
    "a first config that does not render": (_first_config_unrendered, {}),
    "a call fails after a call": (
        _fail_after_call,
        {"/one": [Reply(200, {"ok": 1})], "/bad": [Reply(404, {"error": "no"})]},
    ),
    "a failure continued after a call": (
        _continue_after_failure,
        {"/one": [Reply(200, {"ok": 1})], "/bad": [Reply(404, {"error": "no"})]},
    ),
    "a retry after a call": (
        _retry_then_ok,
        {"/one": [Reply(200, {"ok": 1})], "/flaky": [Reply(503, {"e": 1}), Reply(200, {"ok": 2})]},
    ),
    "a loop": (
        _loop,
        {
            "/one": [
                Reply(200, {"more": True}),
                Reply(200, {"more": True}),
                Reply(200, {"more": False}),
            ]
        },
    ),
}


def general_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step boundary through the general path (lock, read, act), the run's first step
    included (no fast take of a fresh run)."""

    def record_generally(self: Interpreter, turn: Any, _chain: Any, pending: Any) -> bool:
        return self._finish(turn, pending, call_step(pending))

    monkeypatch.setattr(Interpreter, "_take_fresh", lambda *_args: False)
    monkeypatch.setattr(Interpreter, "_advance_chain", lambda *_args: None)
    monkeypatch.setattr(Interpreter, "_call_and_record", record_generally)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_hot_path_writes_what_the_general_path_writes(
    database: Database, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """The same workflow run with the hot path, then with the general path alone: every step
    run, attempt, timeline event and JSON column reads the same."""
    document_for, script = CASES[case]
    results = []
    with running_target() as target:
        for mode in ("hot", "general"):
            for path, replies in script.items():
                target.on(path, *replies)
            run_id = start(database, publish(database, document_for(f"{case}-{mode}", target.url)))
            with running_worker(database):
                wait_status(database, run_id, "succeeded", "failed")
            results.append(_normalised(database, run_id))
            general_path_only(monkeypatch)
    hot, general = results
    assert hot == general


def test_step_times_and_the_timeline_never_run_backwards(database: Database) -> None:
    with running_target() as target:
        target.on("/one", Reply(200, {"ok": 1}))
        target.on("/two", Reply(200, {"ok": 2}))
        run_id = start(database, publish(database, _calls("times", target.url)))
        target.on("/three", Reply(200, {"ok": 3}))
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    for before, after in itertools.pairwise(shown["steps"]):
        assert after["started_at"] >= before["finished_at"], (before["step_id"], after["step_id"])
    timeline = events(database, run_id)
    for earlier, later in itertools.pairwise(timeline):
        assert later["at"] >= earlier["at"], (earlier, later)


def test_a_next_call_that_cannot_be_recorded_keeps_the_previous_success(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses the write that carries `one`'s success with `bad`'s intent:
    `one`'s success is recorded alone (it is never sent again) and the general path goes on.
    (Templates cannot cause this any more: a rendered config is always storable data.)"""
    original = hot_path.record_succeeded
    original_admitting = hot_path.record_succeeded_admitting  # (PostgreSQL: the gate folded in)
    refused = threading.Event()

    def refuse(done: Any) -> None:
        if done.next_started is not None and done.next.step_id == "bad" and not refused.is_set():
            refused.set()
            raise ValueError("the database refused the write")

    def refuse_combined(db: Database, guard: Any, done: Any) -> bool:
        refuse(done)
        return original(db, guard, done)

    def refuse_combined_admitting(db: Database, guard: Any, done: Any, admit: Any) -> Any:
        refuse(done)
        return original_admitting(db, guard, done, admit)

    monkeypatch.setattr(hot_path, "record_succeeded", refuse_combined)
    monkeypatch.setattr(hot_path, "record_succeeded_admitting", refuse_combined_admitting)
    with running_target() as target:
        target.on("/one", Reply(200, {"ok": 1}))
        target.on("/two", Reply(200, {"ok": 2}))
        document = _fail_after_call("not-recorded", target.url)
        document["steps"][2]["config"]["url"] = f"{target.url}/two"
        run_id = start(database, publish(database, document))
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert refused.is_set()
    assert shown["status"] == "succeeded"
    assert step(shown, "one")["status"] == "succeeded"
    assert len(target.calls("/one")) == 1
    assert len(target.calls("/two")) == 1


def test_a_worker_lost_after_a_combined_write_resends_only_the_next_call(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`one` succeeded and `two`'s intent committed in one write; the worker is lost before
    calling `two`. Another worker sends `two` with the same key; `one` is not sent again."""
    original = Interpreter._call_and_record
    lost = threading.Event()

    def lose_the_database(self: Interpreter, turn: Any, chain: Any, pending: Any) -> bool:
        if pending.step.id == "two" and not lost.is_set():
            lost.set()
            raise OperationalError("SELECT 1", {}, Exception("connection lost"))
        return original(self, turn, chain, pending)

    monkeypatch.setattr(Interpreter, "_call_and_record", lose_the_database)
    with running_target() as target:
        target.on("/one", Reply(200, {"ok": 1}))
        target.on("/two", Reply(200, {"ok": 2}))
        target.on("/three", Reply(200, {"ok": 3}))
        run_id = start(database, publish(database, _calls("lost", target.url)))
        with running_worker(database):
            assert lost.wait(10)
        middle = run_detail(database, run_id)
        assert [(s["step_id"], s["status"]) for s in middle["steps"]][1:] == [
            ("one", "succeeded"),
            ("two", "running"),
        ]
        with running_worker(database):  # the first worker handed its lease back on stop
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert len(target.calls("/one")) == 1
    assert [c.idempotency_key for c in target.calls("/two")] == [f"{run_id}:two:1-1"]
    assert [a["status"] for a in step(shown, "two")["attempt_log"]] == ["abandoned", "succeeded"]


def test_a_claim_never_leases_more_than_asked(database: Database) -> None:
    """After many empty polls (a prepared, cached plan), six ready runs and a claim of one."""
    with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            conn.execute(text("ANALYZE queue_items"))
    queue = DatabaseQueue(database)
    for _ in range(12):
        assert queue.claim("idle", 1, 30) == []
    flow = publish(database, workflow("claimed", set_step("a", n=1)))
    runs = [start(database, flow) for _ in range(6)]
    claimed = queue.claim("w1", 1, 30)
    assert len(claimed) == 1
    assert claimed[0] in runs
    with database.transaction() as session:
        leased = session.execute(
            select(func.count()).select_from(QueueItem).where(QueueItem.lease_owner == "w1")
        ).scalar_one()
    assert leased == 1


def test_a_checkpoint_on_a_lost_connection_fails_like_any_write_then_recovers(
    database: Database,
) -> None:
    """The database restarted under a worker: the checkpoint raises the database error the
    interpreter leaves to the lease (nothing written), and the next one uses a fresh
    connection."""
    if database.dialect != "postgresql":
        pytest.skip("connections to SQLite cannot be lost")
    run_id, step_run_id = leased_run(database, "pending")
    with database.autocommit.connect() as conn:  # a pooled connection, then the restart
        conn.execute(text("SELECT 1"))
    before = _snapshot(database, run_id)
    assert kill_connections(database) >= 1
    now = utcnow()
    guard = Guard(run_id, "w1", "t1", "a", step_run_id, "pending", now)
    with pytest.raises(OperationalError):
        record_succeeded(database, guard, boundary_success(now))
    database.engine.dispose()  # (the test's own reads: their pooled connections died too)
    assert _snapshot(database, run_id) == before
    assert record_succeeded(database, guard, boundary_success(now)) is True
    assert run_detail(database, run_id)["current_step"] == "b"


def test_a_step_boundary_rewrites_no_indexed_column_of_its_run(database: Database) -> None:
    """What a checkpoint sets on the run row (its progress) is in none of the run's indexes:
    on PostgreSQL a changed indexed column makes the update write an entry into every index of
    `runs` (no heap-only update), at every step of every run."""
    from sqlalchemy import inspect

    from grantflow.engine import checkpoint

    assignments = checkpoint._PROGRESS.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    rewritten = {part.split("=")[0].strip() for part in assignments.split(",")}
    assert {"last_progress_at", "stuck_at", "current_step"} <= rewritten
    with database.engine.connect() as conn:
        found = inspect(conn)
        indexed = {c for i in found.get_indexes("runs") for c in i["column_names"] if c}
        indexed |= set(found.get_pk_constraint("runs")["constrained_columns"])
    assert indexed, "the runs table has indexes"
    both = rewritten & indexed
    assert both == set(), f"indexed and rewritten at every step: {both}"
