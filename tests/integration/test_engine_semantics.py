"""Engine semantics on both databases: retries and their classification, Retry-After, timeouts,
stuck detection, durable delays across a restart, and a corrupt plan at run time."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from typing import Any

import pytest
from sqlalchemy import select, update

from grantflow.definitions.models import WorkflowVersion
from grantflow.engine.models import Run
from grantflow.queue.models import QueueItem
from grantflow.store.database import Database, open_database
from tests.support.engine import (
    events,
    publish,
    run_detail,
    running_worker,
    start,
    wait_for,
    wait_status,
)
from tests.support.target import Reply, running_target

# the engine semantics, on each queue transport (tests/conftest.py)
pytestmark = [pytest.mark.transports, pytest.mark.usefixtures("transport")]

FAST_RETRY = {"initial_backoff": "50ms", "multiplier": 2, "max_backoff": "1s", "jitter": "none"}


def http_step(step_id: str, url: str, method: str = "GET", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": method, "url": url}, **fields}


def workflow(name: str, *steps: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A manual workflow running `steps` in order."""
    chained = [dict(s) for s in steps]
    for step, following in itertools.pairwise(chained):
        step.setdefault("next", following["id"])
    document: dict[str, Any] = {"name": name, "trigger": {"type": "manual"}, "steps": chained}
    if settings:
        document["settings"] = settings
    return document


def step(shown: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in shown["steps"] if s["step_id"] == step_id)


# --- retries -------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_the_same_idempotency_key(database: Database) -> None:
    """503, 503, 200 with three attempts allowed: the run succeeds on the third attempt."""
    with running_target() as target:
        target.on("/users", Reply(503, "busy"), Reply(503, "busy"), Reply(201, {"id": "u-1"}))
        wf = publish(
            database,
            workflow(
                "flaky",
                http_step(
                    "create",
                    f"{target.url}/users",
                    "POST",
                    retry={"max_attempts": 3, **FAST_RETRY},
                ),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    create = step(shown, "create")
    assert create["attempts"] == 3
    assert create["output"] == {"id": "u-1"}
    assert [a["status"] for a in create["attempt_log"]] == ["failed", "failed", "succeeded"]
    assert create["attempt_log"][0]["error"]["class"] == "transient"
    assert create["attempt_log"][0]["response"]["status_code"] == 503
    calls = target.calls("/users")
    assert len(calls) == 3
    assert {c.idempotency_key for c in calls} == {f"{run_id}:create:1-1"}
    assert {a["idempotency_key"] for a in create["attempt_log"]} == {f"{run_id}:create:1-1"}
    retrying = [e for e in events(database, run_id) if e["kind"] == "step_retrying"]
    assert [e["attempt"] for e in retrying] == [1, 2]
    assert all(e["data"]["class"] == "transient" for e in retrying)
    assert all(e["step_id"] == "create" for e in retrying)
    assert [e["data"]["attempts_left"] for e in retrying] == [2, 1]


def test_a_retrying_step_shows_retrying_with_its_next_attempt_time(database: Database) -> None:
    """Between attempts the step is `retrying` with next_attempt_at; the run waits (retry)."""
    with running_target() as target:
        target.on("/users", Reply(503), Reply(200, {"ok": True}))
        wf = publish(
            database,
            workflow(
                "slow-retry",
                http_step(
                    "fetch",
                    f"{target.url}/users",
                    # (long enough that a loaded machine's polling cannot miss the wait)
                    retry={"max_attempts": 2, "initial_backoff": "2s", "jitter": "none"},
                ),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            waiting = wait_for(database, run_id, lambda d: d["status"] == "waiting")
            fetch = step(waiting, "fetch")
            assert fetch["status"] == "retrying"
            assert waiting["waiting_reason"] == "retry"
            next_at = dt.datetime.fromisoformat(fetch["next_attempt_at"])
            failed_at = dt.datetime.fromisoformat(fetch["attempt_log"][0]["finished_at"])
            assert next_at - failed_at >= dt.timedelta(seconds=1.95)
            assert waiting["wake_at"] == fetch["next_attempt_at"]
            assert fetch["error"]["class"] == "transient"
            assert fetch["error"]["status_code"] == 503
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert len(target.calls("/users")) == 2


def _grant_by_status(database: Database, base_url: str) -> str:
    """A workflow whose one POST goes to /grant/<input.status>, with five attempts allowed."""
    return publish(
        database,
        workflow(
            "by-status",
            http_step(
                "grant",
                base_url + "/grant/{{ input.status }}",
                "POST",
                retry={"max_attempts": 5, **FAST_RETRY},
            ),
        ),
    )


def test_permanent_4xx_is_never_retried(database: Database) -> None:
    """A 400, 403 or 404 fails the run after one call although five attempts are allowed."""
    hints = {400: "mapping", 403: "credential", 404: "path"}
    with running_target() as target:
        for status in hints:
            target.on(f"/grant/{status}", Reply(status, {"error": "no"}))
        wf = _grant_by_status(database, target.url)
        runs = {status: start(database, wf, {"status": status}) for status in hints}
        with running_worker(database, concurrency=3):
            shown = {
                status: wait_status(database, run_id, "succeeded", "failed", "timed_out")
                for status, run_id in runs.items()
            }
    for status, hint in hints.items():
        assert shown[status]["status"] == "failed"
        assert len(target.calls(f"/grant/{status}")) == 1
        failure = shown[status]["failure"]
        assert failure["class"] == "permanent"
        assert failure["status_code"] == status
        assert failure["step_id"] == "grant"
        assert f"HTTP {status}" in failure["message"]
        assert hint in failure["next_action"], (status, failure["next_action"])
        assert step(shown[status], "grant")["attempts"] == 1
        retrying = [e for e in events(database, runs[status]) if e["kind"] == "step_retrying"]
        assert retrying == []


def test_408_and_429_are_retried(database: Database) -> None:
    """A 408 or a 429 (unlike other 4xx) is transient: the step tries again and succeeds."""
    with running_target() as target:
        for status in (408, 429):
            target.on(f"/grant/{status}", Reply(status), Reply(200, {"ok": True}))
        wf = _grant_by_status(database, target.url)
        runs = {status: start(database, wf, {"status": status}) for status in (408, 429)}
        with running_worker(database):
            shown = {
                status: wait_status(database, run_id, "succeeded", "failed")
                for status, run_id in runs.items()
            }
    for status in (408, 429):
        assert shown[status]["status"] == "succeeded"
        assert len(target.calls(f"/grant/{status}")) == 2
        first = step(shown[status], "grant")["attempt_log"][0]
        assert first["error"]["class"] == "transient"
        assert first["response"]["status_code"] == status


def test_retry_after_is_honoured(database: Database) -> None:
    """A 429 with Retry-After: 1 delays the next call by a second or more despite a tiny backoff."""
    with running_target() as target:
        target.on("/sync", Reply(429, headers={"Retry-After": "1"}), Reply(200, {"ok": True}))
        wf = publish(
            database,
            workflow(
                "throttled",
                http_step(
                    "sync",
                    f"{target.url}/sync",
                    "POST",
                    retry={"max_attempts": 3, "initial_backoff": "10ms", "jitter": "none"},
                ),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    first, second = target.calls("/sync")
    assert second.at - first.at >= 0.95
    retrying = next(e for e in events(database, run_id) if e["kind"] == "step_retrying")
    assert retrying["data"]["class"] == "transient"


def test_exhausted_transient_fails_the_run_with_retry_advice(database: Database) -> None:
    """A target that stays at 503 fails the run after max_attempts, telling to Retry."""
    with running_target() as target:
        target.on("/grant", Reply(503, "down"))
        wf = publish(
            database,
            workflow(
                "down",
                http_step(
                    "grant", f"{target.url}/grant", "POST", retry={"max_attempts": 3, **FAST_RETRY}
                ),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "failed"
    assert len(target.calls("/grant")) == 3
    failure = shown["failure"]
    assert failure["class"] == "transient"
    assert failure["status_code"] == 503
    assert failure["step_id"] == "grant"
    assert failure["attempts"] == 3
    assert "Retry the run" in failure["next_action"]
    assert step(shown, "grant")["status"] == "failed"


# --- timeouts ------------------------------------------------------------------------------


def test_execution_timeout_times_the_run_out(database: Database) -> None:
    """A 5 s delay in a workflow with a 1 s execution timeout ends timed_out, naming the step."""
    wf = publish(
        database,
        workflow(
            "too-slow",
            {"id": "pause", "type": "delay", "config": {"duration": "5s"}},
            {"id": "after", "type": "set", "config": {"values": {"x": 1}}},
            execution_timeout="1s",
        ),
    )
    run_id = start(database, wf)
    with running_worker(database):
        shown = wait_status(database, run_id, "timed_out", "succeeded", "failed", timeout=60)
    assert shown["status"] == "timed_out"
    failure = shown["failure"]
    assert failure["class"] == "timeout"
    assert failure["code"] == "execution_timeout"
    assert failure["step_id"] == "pause"
    assert "'pause'" in failure["message"]
    assert failure["next_action"]
    assert [s["step_id"] for s in shown["steps"]] == ["pause"]
    # failed while it waited; cancelled when a loaded machine's worker first took the run up
    # after the deadline, before the step started
    assert step(shown, "pause")["status"] in ("failed", "cancelled")
    finished = dt.datetime.fromisoformat(shown["finished_at"])
    created = dt.datetime.fromisoformat(shown["created_at"])
    assert finished - created >= dt.timedelta(seconds=1)
    assert events(database, run_id)[-1]["kind"] == "timed_out"


def test_step_timeout_fails_the_attempt_and_times_the_run_out(database: Database) -> None:
    """A 0.3 s step timeout against a 2 s answer: each attempt fails as timeout, the run too."""
    with running_target() as target:
        target.on("/slow", Reply(200, {"ok": True}, delay=2))
        wf = publish(
            database,
            workflow(
                "slow-target",
                http_step(
                    "fetch",
                    f"{target.url}/slow",
                    timeout="300ms",
                    retry={"max_attempts": 2, **FAST_RETRY},
                ),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "timed_out", "succeeded", "failed")
    assert shown["status"] == "timed_out"
    fetch = step(shown, "fetch")
    assert fetch["attempts"] == 2
    for attempt in fetch["attempt_log"]:
        assert attempt["status"] == "failed"
        # failed on the step timeout: the slow reply (2 s later) would have succeeded
        assert attempt["error"]["class"] == "timeout"
    assert len(target.calls("/slow")) == 2
    failure = shown["failure"]
    assert failure["class"] == "timeout"
    assert failure["code"] == "step_timeout"
    assert failure["step_id"] == "fetch"


# --- stuck detection -----------------------------------------------------------------------


def test_queued_run_without_a_worker_is_flagged_stuck_no_worker(database: Database) -> None:
    """A queued run that no worker takes is stuck after stuck_after, cause no_worker."""
    wf = publish(
        database,
        workflow(
            "unserved",
            {"id": "a", "type": "set", "config": {"values": {"x": 1}}},
            stuck_after="200ms",
        ),
    )
    run_id = start(database, wf)
    assert run_detail(database, run_id)["stuck"] is None
    shown = wait_for(database, run_id, lambda d: d["stuck"] is not None, timeout=60)
    stuck = shown["stuck"]
    assert shown["status"] == "queued"
    assert stuck["cause"] == "no_worker"
    assert stuck["last_progress_at"] == shown["last_progress_at"]
    assert stuck["no_progress_for_seconds"] >= 0.2
    assert stuck["queue_depth"] == 1
    assert "worker" in stuck["explanation"]
    with running_worker(database):
        shown = wait_status(database, run_id, "succeeded")
    assert shown["stuck"] is None


def test_run_waiting_on_a_delay_is_flagged_stuck_waiting_on_delay(database: Database) -> None:
    """A run parked on a long delay past stuck_after shows cause waiting_on_delay."""
    wf = publish(
        database,
        workflow(
            "long-wait",
            {"id": "hold", "type": "delay", "config": {"duration": "1h"}},
            stuck_after="200ms",
        ),
    )
    run_id = start(database, wf)
    with running_worker(database):
        wait_status(database, run_id, "waiting")
        shown = wait_for(database, run_id, lambda d: d["stuck"] is not None, timeout=60)
    assert shown["status"] == "waiting"
    assert shown["stuck"]["cause"] == "waiting_on_delay"
    assert "'hold'" in shown["stuck"]["explanation"]
    assert shown["stuck"]["last_progress_at"] == shown["last_progress_at"]


def test_run_held_on_a_slow_call_is_flagged_external_call_slow(database: Database) -> None:
    """A run whose call hangs past stuck_after shows cause external_call_slow."""
    with running_target() as target:
        release = threading.Event()
        target.on("/hang", Reply(200, {"ok": True}, hold=release))
        wf = publish(
            database,
            workflow("hanging", http_step("call", f"{target.url}/hang"), stuck_after="200ms"),
        )
        run_id = start(database, wf)
        with running_worker(database):
            try:
                target.wait_for_calls("/hang", 1)
                shown = wait_for(database, run_id, lambda d: d["stuck"] is not None, timeout=60)
                assert shown["status"] == "running"
                assert shown["stuck"]["cause"] == "external_call_slow"
                assert shown["stuck"]["call_started_at"]
                release.set()
                shown = wait_status(database, run_id, "succeeded")
            finally:
                release.set()
    assert shown["stuck"] is None


def test_ready_run_behind_a_busy_worker_is_flagged_queue_backlog(database: Database) -> None:
    """A run waiting for a worker that is busy elsewhere shows cause queue_backlog."""
    release = threading.Event()
    with running_target() as target:
        target.on("/hang", Reply(200, {"ok": True}, hold=release))
        busy = publish(database, workflow("busy", http_step("call", f"{target.url}/hang")))
        behind = publish(
            database,
            workflow(
                "behind",
                {"id": "a", "type": "set", "config": {"values": {"x": 1}}},
                stuck_after="200ms",
            ),
        )
        first = start(database, busy)
        with running_worker(database, concurrency=1):
            try:
                target.wait_for_calls("/hang", 1)
                second = start(database, behind)
                shown = wait_for(database, second, lambda d: d["stuck"] is not None, timeout=60)
                assert shown["status"] == "queued"
                assert shown["stuck"]["cause"] == "queue_backlog"
                assert shown["stuck"]["queue_depth"] == 1
                assert shown["stuck"]["oldest_ready_age_seconds"] > 0
                release.set()
                wait_status(database, first, "succeeded")
                wait_status(database, second, "succeeded")
            finally:
                release.set()


def test_run_of_a_lost_worker_is_flagged_worker_lost_and_resumed(database: Database) -> None:
    """A running run whose worker's lease expired shows worker_lost; a live worker finishes it."""
    wf = publish(
        database,
        workflow(
            "orphaned",
            {"id": "a", "type": "set", "config": {"values": {"x": 1}}},
            {"id": "b", "type": "set", "config": {"values": {"y": 2}}},
        ),
    )
    run_id = start(database, wf)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    with database.transaction() as session:  # what a worker killed mid-run leaves behind
        session.execute(update(Run).where(Run.id == run_id).values(status="running", stuck_at=past))
        session.execute(
            update(QueueItem)
            .where(QueueItem.run_id == run_id)
            .values(lease_owner="ghost:1:dead", lease_expires_at=past)
        )
    stuck = run_detail(database, run_id)["stuck"]
    assert stuck["cause"] == "worker_lost"
    assert stuck["worker"] == "ghost:1:dead"
    assert "lease" in stuck["explanation"]
    with running_worker(database):
        shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert [s["step_id"] for s in shown["steps"]] == ["a", "b"]


# --- a durable delay -----------------------------------------------------------------------


def test_delay_survives_a_restart_and_holds_no_worker(database: Database) -> None:
    """A run waiting on a 1 s delay holds no lease; a fresh process finishes it after the delay."""
    wf = publish(
        database,
        workflow(
            "sleepy",
            {"id": "before", "type": "set", "config": {"values": {"x": 1}}},
            {"id": "nap", "type": "delay", "config": {"duration": "1s"}},
            {"id": "after", "type": "set", "config": {"values": {"y": 2}}},
        ),
    )
    run_id = start(database, wf)
    with running_worker(database):
        waiting = wait_for(
            database, run_id, lambda d: d["status"] == "waiting" and d["waiting_reason"] == "delay"
        )
        with database.transaction() as session:
            item = session.get(QueueItem, run_id)
            assert item is not None
            assert item.lease_owner is None
            assert item.lease_expires_at is None
            assert item.available_at == dt.datetime.fromisoformat(waiting["wake_at"])
    assert step(waiting, "nap")["status"] == "waiting"

    # A process restart: a new Database object on the same URL and a new worker.
    reopened = open_database(database.url)
    reopened.use_master_keys(database.master_keys)  # the same deployment's key
    try:
        assert run_detail(reopened, run_id)["status"] == "waiting"
        with running_worker(reopened):
            shown = wait_status(reopened, run_id, "succeeded", "failed")
    finally:
        reopened.dispose()
    assert shown["status"] == "succeeded"
    nap = step(shown, "nap")
    assert nap["attempts"] == 1
    slept = dt.datetime.fromisoformat(nap["finished_at"]) - dt.datetime.fromisoformat(
        nap["started_at"]
    )
    assert slept >= dt.timedelta(seconds=1)
    assert [s["step_id"] for s in shown["steps"]] == ["before", "nap", "after"]


# --- a corrupt plan ------------------------------------------------------------------------


def _corrupt_entry(database: Database, workflow_id: str) -> None:
    """Remove the entry step from version 1's stored plan, behind the engine's back."""
    with database.transaction() as session:
        plan = session.execute(
            select(WorkflowVersion.plan).where(
                WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.number == 1
            )
        ).scalar_one()
        broken = {**plan, "steps": {k: v for k, v in plan["steps"].items() if k != plan["entry"]}}
        session.execute(
            update(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.number == 1)
            .values(plan=broken)
        )


def test_a_plan_lost_after_start_fails_the_run_naming_the_missing_plan(
    database: Database,
) -> None:
    """A version whose plan was emptied while the run was queued (set to None: JSON null):
    the run fails saying the version has no compiled plan, on the fresh path as elsewhere."""
    wf = publish(
        database,
        workflow("planless", {"id": "only", "type": "set", "config": {"values": {"x": 1}}}),
    )
    run_id = start(database, wf)
    with database.transaction() as session:
        session.execute(
            update(WorkflowVersion).where(WorkflowVersion.workflow_id == wf).values(plan=None)
        )
    with running_worker(database):
        shown = wait_status(database, run_id, "failed", "succeeded", timeout=60)
    assert shown["status"] == "failed"
    failure = shown["failure"]
    assert failure["code"] == "plan_integrity_failed"
    assert "has no compiled plan" in failure["message"]


def test_plan_corrupted_after_start_fails_the_run_as_internal(database: Database) -> None:
    """A plan that loses its entry step while the run is queued fails it (internal), no hang."""
    wf = publish(
        database,
        workflow(
            "fragile",
            {"id": "first", "type": "set", "config": {"values": {"x": 1}}},
            {"id": "second", "type": "set", "config": {"values": {"y": 2}}},
        ),
    )
    run_id = start(database, wf)
    _corrupt_entry(database, wf)
    with running_worker(database):
        shown = wait_status(database, run_id, "failed", "succeeded", timeout=60)
    assert shown["status"] == "failed"
    failure = shown["failure"]
    assert failure["class"] == "internal"
    assert failure["code"] == "plan_integrity_failed"
    assert "'first'" in failure["message"]
    assert failure["next_action"]
    with database.transaction() as session:
        assert session.get(QueueItem, run_id) is None
        assert session.get(Run, run_id).finished_at is not None  # type: ignore[union-attr]


def test_plan_corrupted_before_start_fails_the_new_run_at_once(database: Database) -> None:
    """Starting a run on a corrupt plan creates it already failed (internal), never queued."""
    wf = publish(
        database,
        workflow("fragile-start", {"id": "first", "type": "set", "config": {"values": {"x": 1}}}),
    )
    _corrupt_entry(database, wf)
    run_id = start(database, wf)
    shown = run_detail(database, run_id)
    assert shown["status"] == "failed"
    assert shown["failure"]["class"] == "internal"
    assert shown["failure"]["code"] == "plan_integrity_failed"
    with database.transaction() as session:
        assert session.get(QueueItem, run_id) is None
