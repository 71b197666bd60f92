"""Safety breakers on both databases: a burst of runs, too many external calls and too many
failed runs each pause the workflow for safety; runs are held (never lost) and one notification
goes out; resuming the workflow releases the held runs in order. The run and workflow details
tell an operator's pause of one run apart from a workflow paused for safety."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from grantflow.definitions.models import Workflow
from grantflow.engine import hooks
from grantflow.people.notifications import Notification
from grantflow.safety import breakers, periods
from grantflow.safety import config as safety_config
from grantflow.safety import listeners as safety_listeners
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import publish, run_detail, running_worker, start, workflow
from tests.support.target import Reply, running_target

API = "/api/v1"


def settle(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll `check` until it returns something truthy (a loaded machine answers late)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def statuses(db: Database, run_ids: list[str]) -> list[tuple[str, str | None]]:
    shown = [run_detail(db, r) for r in run_ids]
    return [(d["status"], d["waiting_reason"]) for d in shown]


def notifications(db: Database, kind: str) -> list[Notification]:
    with db.transaction() as session:
        rows = session.execute(select(Notification).where(Notification.kind == kind)).scalars()
        found = list(rows)
        session.expunge_all()
        return found


def test_a_burst_trips_the_breaker_holds_every_run_and_resume_releases_them(
    api: Api, admin: httpx.Client
) -> None:
    """10 runs started at once against max 3 runs per minute: 3 succeed, the workflow turns
    paused_safety naming the breaker and its figures, 7 are held (queued, reason safety; none
    lost), one notification goes out; Resume workflow releases the 7, which start oldest
    first and succeed."""
    db = api.database
    doc = workflow("Bursty", {"id": "only", "type": "set", "config": {"values": {"x": 1}}})
    wf = publish(db, {**doc, "safety": {"max_runs_per_minute": 3}})
    run_ids = [start(db, wf, {"n": n}) for n in range(10)]
    with running_worker(db, concurrency=1):
        settle(
            lambda: (
                sorted(statuses(db, run_ids), key=str)
                == [("queued", "safety")] * 7 + [("succeeded", None)] * 3
            ),
            "3 runs done and 7 held",
        )
        shown = admin.get(f"{API}/workflows/{wf}").json()
        assert shown["status"] == "paused_safety"
        pause = shown["paused_for_safety"]
        assert pause["breaker"] == "runs_per_minute"
        assert pause["figures"]["limit"] == 3
        assert pause["tripped_at"]
        assert pause["held_runs"] == 7
        assert pause["action"]["path"] == f"{API}/workflows/{wf}/resume-safety"
        assert shown["dispatching"] is False
        assert any("paused for safety" in r for r in shown["not_dispatching_because"])
        held = [r for r in run_ids if run_detail(db, r)["status"] == "queued"]
        detail = admin.get(f"{API}/runs/{held[0]}").json()
        assert detail["paused"] is None  # not an operator's pause of this run
        assert detail["held"]["kind"] == "workflow_paused_for_safety"
        assert detail["held"]["breaker"] == "runs_per_minute"
        assert "Resume workflow" in detail["held"]["resumed_by"]
        assert detail["next"]["operation"] == "workflow.resume_safety"
        assert detail["next"]["action"]["path"] == f"{API}/workflows/{wf}/resume-safety"
        assert detail["waiting_for"]["reason"] == "safety"
        assert len(notifications(db, "workflow_paused_safety")) == 1

        # held on purpose (no stuck deadline): among the runs that are not stuck, never stuck
        def listed(stuck: bool) -> set[str]:
            page = admin.get(f"{API}/runs", params={"stuck": stuck, "workflow_id": wf}).json()
            return {r["id"] for r in page["items"]}

        assert set(held) <= listed(stuck=False)
        assert listed(stuck=True) == set()

        resumed = admin.post(f"{API}/workflows/{wf}/resume-safety")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "published"
        settle(lambda: all(s == "succeeded" for s, _ in statuses(db, run_ids)), "all succeed")
    timelines = [admin.get(f"{API}/runs/{r}/timeline").json()["events"] for r in held]
    released = [next(e for e in t if e["kind"] == "released") for t in timelines]
    assert all(e["actor"] == "admin@example.com" for e in released)
    # each held run's first start after its release, in the order the runs were created
    starts = [
        next(e["at"] for e in t[t.index(r) :] if e["kind"] in ("started", "resumed"))
        for t, r in zip(timelines, released, strict=True)
    ]
    assert starts == sorted(starts), "released oldest first"
    note = notifications(db, "workflow_paused_safety")
    assert len(note) == 1
    assert note[0].resolved_at is not None


def test_a_breaker_counts_every_shard_of_its_counter(api: Api) -> None:
    """The runs counted this minute are kept in shards (each connection bumps its own): 1 and
    2 runs in two shards are 3 against a limit of 3, so the next run trips the breaker and is
    held; the larger shard alone (2) would have let it through."""
    db = api.database
    doc = workflow("Sharded", {"id": "only", "type": "set", "config": {"values": {"x": 1}}})
    wf = publish(db, {**doc, "safety": {"max_runs_per_minute": 3}})
    minute = periods.minute_key(safety_config.now())
    with db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO usage_counters (scope_id, kind, period_key, shard, count) "
                "VALUES (:wf, 'runs', :minute, 0, 1), (:wf, 'runs', :minute, 3, 2)"
            ),
            {"wf": wf, "minute": minute},
        )
    run_id = start(db, wf, {})
    with running_worker(db, concurrency=1):
        settle(lambda: statuses(db, [run_id]) == [("queued", "safety")], "the run held")
    with db.transaction() as session:
        paused = session.get(Workflow, wf)
        assert paused is not None
        assert paused.safety_pause is not None
        assert paused.safety_pause["breaker"] == "runs_per_minute"


def test_the_timer_forgets_minute_counters_no_breaker_reads(api: Api) -> None:
    """Minute counters before the previous minute are deleted by the workers' timer (once a
    minute per process); this minute's, the previous one's, and every day and month stay."""
    db = api.database
    now = dt.datetime(2031, 5, 6, 10, 30, 15, tzinfo=dt.UTC)
    keys = [periods.minute_key(now - dt.timedelta(minutes=m)) for m in (0, 1, 2, 3, 90)]
    keys += [periods.day_key(now - dt.timedelta(days=40)), periods.month_key(now)]
    with db.transaction() as session:
        for shard, key in enumerate(keys):
            session.execute(
                text(
                    "INSERT INTO usage_counters (scope_id, kind, period_key, shard, count) "
                    "VALUES ('*', 'runs', :key, :shard, 1)"
                ),
                {"key": key, "shard": shard},
            )
    assert safety_listeners.forget_old_minutes in hooks.tick_listeners()
    with db.transaction() as session:
        assert breakers.forget_old_minutes(session, now) == 2
    with db.transaction() as session:
        kept = session.execute(text("SELECT period_key FROM usage_counters")).scalars()
        minutes = ["M:2031-05-06T10:30", "M:2031-05-06T10:29", "M:2031-05-06T10:28"]
        assert sorted(kept) == sorted([*minutes, "d:2031-03-27", "m:2031-05"])


def test_forgetting_minutes_keeps_a_month_that_sorts_among_them(api: Api) -> None:
    """In a linguistic collation (a PostgreSQL database created en_US.UTF-8) this month's key
    "m:2031-05" sorts between "M:" and this minute's key; it is a month, and stays."""
    db = api.database
    if db.dialect != "postgresql":
        pytest.skip("SQLite compares keys byte by byte")
    with db.transaction() as session:
        if (
            session.execute(text("SELECT 1 FROM pg_collation WHERE collname = 'en-x-icu'")).first()
            is None
        ):
            pytest.skip("this PostgreSQL has no ICU collations")
        session.execute(
            text(
                "ALTER TABLE usage_counters ALTER COLUMN period_key "
                'TYPE varchar(20) COLLATE "en-x-icu"'
            )
        )
        session.execute(
            text(
                "INSERT INTO usage_counters (scope_id, kind, period_key, shard, count) VALUES "
                "('*', 'steps', 'm:2031-05', 0, 1), ('*', 'runs', 'M:2031-05-06T10:00', 0, 1)"
            )
        )
        # (the case this test is for: both keys inside the minutes' range in this collation)
        in_range = session.execute(
            text(
                "SELECT count(*) FROM usage_counters "
                "WHERE period_key >= 'M:' AND period_key < 'M:2031-05-06T10:28'"
            )
        ).scalar_one()
        assert in_range == 2
    now = dt.datetime(2031, 5, 6, 10, 30, tzinfo=dt.UTC)
    with db.transaction() as session:
        assert breakers.forget_old_minutes(session, now) == 1
        kept = session.execute(text("SELECT period_key FROM usage_counters")).scalars().all()
    assert kept == ["m:2031-05"]


def test_too_many_external_calls_stop_a_running_run_at_its_next_step(
    api: Api, admin: httpx.Client
) -> None:
    """With max 3 external calls per minute, a run of 5 calls stops before its 4th call
    (held: queued, reason safety, at step c4; the target saw 3 calls), and after Resume
    workflow it goes on from c4: every call made exactly once."""
    db = api.database
    with running_target() as target:
        target.on("/c", Reply(200, {"ok": True}))
        steps = [
            {"id": f"c{i}", "type": "http", "config": {"method": "POST", "url": f"{target.url}/c"}}
            for i in range(1, 6)
        ]
        doc = {**workflow("Chatty", *steps), "safety": {"max_external_calls_per_minute": 3}}
        wf = publish(db, doc)
        run_id = start(db, wf)
        with running_worker(db):
            held = settle(
                lambda: (d := run_detail(db, run_id))["waiting_reason"] == "safety" and d,
                "the run held",
            )
            assert held["status"] == "queued"
            assert held["current_step"] == "c4"
            assert len(target.calls("/c")) == 3
            assert held["held"]["breaker"] == "external_calls_per_minute"
            response = admin.post(f"{API}/workflows/{wf}/resume-safety")
            assert response.status_code == 200, response.text
            done = settle(
                lambda: (d := run_detail(db, run_id))["status"] == "succeeded" and d, "done"
            )
        assert len(target.calls("/c")) == 5
        assert set(target.per_key().values()) == {1}
        assert [s["step_id"] for s in done["steps"]] == ["c1", "c2", "c3", "c4", "c5"]


def test_too_many_failed_runs_pause_the_workflow_and_hold_new_runs(
    api: Api, admin: httpx.Client
) -> None:
    """With max 2 failed runs in 10 minutes, the second failure pauses the workflow (breaker
    failed_runs); a run started afterwards is accepted and held at once; one notification."""
    db = api.database
    with running_target() as target:
        target.on("/gone", Reply(404, {"error": "no such thing"}))
        step = {
            "id": "get",
            "type": "http",
            "config": {"method": "GET", "url": f"{target.url}/gone"},
        }
        doc = {
            **workflow("Failing", step),
            "safety": {"max_failed_runs": 2, "failed_runs_window": "10m"},
        }
        wf = publish(db, doc)
        first, second = start(db, wf), start(db, wf)
        with running_worker(db):
            settle(lambda: [s for s, _ in statuses(db, [first, second])] == ["failed"] * 2, "2")
            shown = settle(
                lambda: (
                    (w := admin.get(f"{API}/workflows/{wf}").json())["status"] == "paused_safety"
                    and w
                ),
                "paused",
            )
            assert shown["paused_for_safety"]["breaker"] == "failed_runs"
            assert shown["paused_for_safety"]["figures"]["failed"] == 2
            third = start(db, wf)
            after = run_detail(db, third)
            assert (after["status"], after["waiting_reason"]) == ("queued", "safety")
            assert after["held"]["breaker"] == "failed_runs"
        assert len(target.calls("/gone")) == 2  # the held run called nothing
        assert len(notifications(db, "workflow_paused_safety")) == 1


def test_an_operators_pause_is_not_a_safety_pause(api: Api, admin: httpx.Client) -> None:
    """An operator's pause of one run shows under `paused` (kind run_paused, Resume on the run)
    with no `held`, and the workflow stays published."""
    db = api.database
    doc = workflow(
        "Pausable",
        {"id": "nap", "type": "delay", "config": {"duration": "1h"}},
        {"id": "after", "type": "set", "config": {"values": {"x": 1}}},
    )
    wf = publish(db, doc)
    run_id = start(db, wf)
    paused = admin.post(f"{API}/runs/{run_id}/pause")
    assert paused.status_code == 200, paused.text
    detail = admin.get(f"{API}/runs/{run_id}").json()
    assert detail["paused"]["kind"] == "run_paused"
    assert "Resume on this run" in detail["paused"]["resumed_by"]
    assert detail["held"] is None
    assert detail["next"]["operation"] == "run.resume"
    shown = admin.get(f"{API}/workflows/{wf}").json()
    assert shown["status"] == "published"
    assert shown["paused_for_safety"] is None


def test_resuming_needs_a_paused_workflow_and_workflow_publish(
    api: Api, admin: httpx.Client
) -> None:
    """Resume workflow on a workflow that is not paused is 409 not_paused_for_safety; a
    viewer is refused with 403 naming workflow:publish."""
    db = api.database
    wf = publish(
        db, workflow("Calm", {"id": "only", "type": "set", "config": {"values": {"x": 1}}})
    )
    refused = admin.post(f"{API}/workflows/{wf}/resume-safety")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_paused_for_safety"
    with api.as_role("viewer", "v@example.com") as viewer:  # type: ignore[arg-type]
        denied = viewer.post(f"{API}/workflows/{wf}/resume-safety")
    assert denied.status_code == 403
    assert denied.json()["error"]["missing_permission"] == "workflow:publish"


def test_the_gate_says_so_when_a_step_it_counts_has_no_step_run(database: Database) -> None:
    """The gate's mark lives on the step run: a start whose step run was never written is an
    error at once, not a step left uncounted for ever."""
    from grantflow.safety import gate

    doc = workflow("Unwritten", {"id": "only", "type": "set", "config": {"values": {"x": 1}}})
    wf = publish(database, doc)
    start = gate.StepStart("no-such-run", wf, "only", 1, 2, False, None, {})
    refused = pytest.raises(RuntimeError, match="no-such-run:only:1 has none")
    with refused, database.transaction() as session:
        gate.admit(session, start)


def test_counters_stay_exact_when_many_starts_count_at_once(database: Database) -> None:
    """24 threads count 200 step starts at once, in a month nobody counted before: each start
    is counted exactly once, in the day's and the month's counters, by the gate's one statement
    (no spend cap) and by the careful path (a cap in place) alike."""
    from concurrent.futures import ThreadPoolExecutor

    from grantflow.safety import gate

    doc = workflow("Counted", {"id": "only", "type": "set", "config": {"values": {"x": 1}}})
    wf = publish(database, doc)
    run_id = start(database, wf)
    starts = [gate.StepStart(run_id, wf, f"s{n}", 1, n + 2, False, None, {}) for n in range(200)]
    _pending_step_runs(database, starts)
    at = dt.datetime(2033, 7, 15, 12, 0, tzinfo=dt.UTC)
    barrier = threading.Barrier(24)

    def clear(chunk: list[gate.StepStart]) -> None:  # the one statement of the common case
        barrier.wait()
        for one in chunk:
            assert gate.admit_own(database, one) is None

    def careful(chunk: list[gate.StepStart]) -> None:  # the path a spend cap takes
        barrier.wait()
        for one in chunk:
            with database.transaction() as session:
                gate._count(session.connection(), one, one.kinds, at)

    safety_config.use_clock(lambda: at)
    try:
        for path, chunk in ((clear, starts[:100]), (careful, starts[100:])):
            with ThreadPoolExecutor(24) as pool:
                list(pool.map(path, [chunk[n::24] for n in range(24)]))
    finally:
        safety_config.use_clock(None)
    with database.engine.connect() as conn:
        marks = conn.execute(
            text("SELECT count(*) FROM step_runs WHERE run_id = :r AND counted_at IS NOT NULL"),
            {"r": run_id},
        ).scalar_one()
    day, month = periods.day_key(at), periods.month_key(at)
    assert _counted(database, wf) == {("steps", day): 200, ("steps", month): 200}
    assert marks == 200


def test_a_count_that_meets_a_first_count_not_yet_committed_adds_to_it(
    database: Database,
) -> None:
    """Two starts that both find no row for the day in their shard: the one whose insert comes
    second waits for the first to commit, then adds to its row (a count is never dropped)."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite has one writer: no two transactions insert at once")
    from concurrent.futures import ThreadPoolExecutor

    from grantflow.safety import gate

    doc = workflow("Racing", {"id": "only", "type": "set", "config": {"values": {"x": 1}}})
    wf = publish(database, doc)
    run_id = start(database, wf)
    at = dt.datetime(2033, 8, 15, 12, 0, tzinfo=dt.UTC)
    day, month = periods.day_key(at), periods.month_key(at)
    later = gate.StepStart(run_id, wf, "later", 1, 2, False, None, {})
    _pending_step_runs(database, [later])
    with database.engine.connect() as counting, database.engine.connect() as first:
        pid = counting.execute(text("SELECT pg_backend_pid()")).scalar_one()
        first.execute(  # the other start's row, in the counting connection's shard, uncommitted
            text(
                "INSERT INTO usage_counters (scope_id, kind, period_key, shard, count) "
                "VALUES (:wf, 'steps', :day, :shard, 1)"
            ),
            {"wf": wf, "day": day, "shard": pid % gate.SHARDS},
        )

        def count() -> None:
            gate._count(counting, later, later.kinds, at)
            counting.commit()

        with ThreadPoolExecutor(1) as pool:
            counted = pool.submit(count)
            settle(lambda: _waits_for_a_lock(database, pid), "the count waits for the insert")
            first.commit()
            counted.result(timeout=60)
    assert _counted(database, wf) == {("steps", day): 2, ("steps", month): 1}


def _pending_step_runs(database: Database, starts: list[Any]) -> None:
    """A pending step run for each gate.StepStart (the row the gate marks counted)."""
    with database.engine.begin() as conn:
        for one in starts:
            conn.execute(
                text(
                    "INSERT INTO step_runs (id, run_id, step_id, step_type, sequence, "
                    "iteration, attempt_group, status, attempts, side_effects) "
                    "VALUES (:id, :run, :step, 'set', :sequence, 1, 1, 'pending', 0, false)"
                ),
                {
                    "id": f"sr-{one.step_id}",
                    "run": one.run_id,
                    "step": one.step_id,
                    "sequence": one.sequence,
                },
            )


def _counted(database: Database, wf: str) -> dict[tuple[str, str], int]:
    """A workflow's usage counts, (kind, period key) -> the sum of the shards."""
    with database.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT kind, period_key, sum(count) FROM usage_counters WHERE scope_id = :wf "
                "GROUP BY kind, period_key"
            ),
            {"wf": wf},
        ).all()
    return {(kind, key): int(n) for kind, key, n in rows}


def _waits_for_a_lock(database: Database, pid: int) -> bool:
    with database.engine.connect() as conn:
        kind = conn.execute(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).scalar_one_or_none()
    return bool(kind == "Lock")
