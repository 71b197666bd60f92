"""Run operations on both databases: retry from the failed step, replay (as-is and with the
latest version, and its refusal), cancel before and after side effects, pause and resume."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from grantflow.engine import operations
from grantflow.engine.models import Run
from grantflow.errors import Conflict
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.models import QueueItem
from grantflow.store.database import Database
from tests.support.engine import (
    ACTOR,
    events,
    publish,
    run_detail,
    running_worker,
    start,
    wait_for,
    wait_status,
    workflow,
)
from tests.support.target import Reply, running_target

FAST_RETRY = {"initial_backoff": "50ms", "multiplier": 2, "max_backoff": "1s", "jitter": "none"}


def http_step(step_id: str, url: str, method: str = "GET", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": method, "url": url}, **fields}


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values or {"done": True}}}


def delay_step(step_id: str, duration: str) -> dict[str, Any]:
    return {"id": step_id, "type": "delay", "config": {"duration": duration}}


def step(shown: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in shown["steps"] if s["step_id"] == step_id)


def operate(database: Database, name: str, run_id: str, **options: Any) -> str:
    """Call a run operation as the test actor; the id of the run it returns."""
    with database.transaction() as session:
        run = getattr(operations, name)(session, ACTOR, DatabaseQueue(database), run_id, **options)
        return str(run.id)


def refused(database: Database, name: str, run_id: str, **options: Any) -> Conflict:
    with pytest.raises(Conflict) as caught:
        operate(database, name, run_id, **options)
    return caught.value


# --- retry ---------------------------------------------------------------------------------


def test_retry_resumes_the_same_run_from_the_failed_step(database: Database) -> None:
    """After exhaustion, retry re-runs only the failed step, on the same version, with a new key."""
    with running_target() as target:
        target.on("/users", Reply(201, {"id": "u-1"}))
        target.on("/licenses", Reply(503), Reply(503), Reply(200, {"license": "e5"}))
        first = workflow(
            "onboard",
            http_step("create", f"{target.url}/users", "POST"),
            http_step(
                "license",
                f"{target.url}/licenses",
                "POST",
                retry={"max_attempts": 2, **FAST_RETRY},
            ),
            set_step("done", user="{{ steps.create.output.id }}"),
        )
        wf = publish(database, first)
        run_id = start(database, wf, {"email": "ann@example.com"})
        with running_worker(database):
            failed = wait_status(database, run_id, "failed", "succeeded")
            assert failed["status"] == "failed"
            assert "Retry" in failed["failure"]["next_action"]
            # A newer version is published meanwhile: the retry must stay on version 1.
            second = workflow(
                "onboard",
                http_step("create", f"{target.url}/users-v2", "POST"),
                http_step("license", f"{target.url}/licenses-v2", "POST"),
                set_step("done"),
            )
            publish(database, second)
            assert operate(database, "retry", run_id) == run_id
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert shown["version"] == 1
    assert shown["retry_count"] == 1
    assert shown["failure"] is None
    assert len(target.calls("/users")) == 1
    assert target.calls("/users-v2") == []
    assert target.calls("/licenses-v2") == []
    keys = [c.idempotency_key for c in target.calls("/licenses")]
    assert keys == [f"{run_id}:license:1-1", f"{run_id}:license:1-1", f"{run_id}:license:1-2"]
    assert step(shown, "create")["attempts"] == 1
    license_step = step(shown, "license")
    assert license_step["status"] == "succeeded"
    assert [(a["number"], a["idempotency_key"][-3:]) for a in license_step["attempt_log"]] == [
        (1, "1-1"),
        (2, "1-1"),
        (3, "1-2"),
    ]
    assert step(shown, "done")["output"] == {"user": "u-1"}
    kinds = [e["kind"] for e in events(database, run_id)]
    assert kinds.count("failed") == 1
    requeued = [
        e for e in events(database, run_id) if e.get("data", {}).get("operation") == "retry"
    ]
    assert requeued[0]["kind"] == "queued"
    assert requeued[0]["actor"] == ACTOR.label


def test_escalated_step_waits_for_a_person_and_retry_resumes_it(database: Database) -> None:
    """on_failure: escalate parks the run (waiting, escalated) with a next action; retry resumes."""
    with running_target() as target:
        target.on("/grant", Reply(503), Reply(200, {"ok": True}))
        wf = publish(
            database,
            workflow(
                "escalates",
                http_step("grant", f"{target.url}/grant", "POST", on_failure="escalate"),
                set_step("after"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            parked = wait_for(database, run_id, lambda d: d["waiting_reason"] == "escalated")
            assert parked["status"] == "waiting"
            assert parked["failure"]["class"] == "transient"
            assert "a person must decide" in parked["failure"]["next_action"]
            assert step(parked, "grant")["status"] == "failed"
            operate(database, "retry", run_id)
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert shown["failure"] is None
    assert [c.idempotency_key for c in target.calls("/grant")] == [
        f"{run_id}:grant:1-1",
        f"{run_id}:grant:1-2",
    ]


def test_on_failure_continue_marks_the_step_failed_and_goes_on(database: Database) -> None:
    """on_failure: continue records the failed step and runs the next one; the run succeeds."""
    with running_target() as target:
        target.on("/optional", Reply(400, {"error": "nope"}))
        wf = publish(
            database,
            workflow(
                "tolerant",
                http_step("optional", f"{target.url}/optional", "POST", on_failure="continue"),
                set_step("after", saw="{{ steps.optional.status }}"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert step(shown, "optional")["status"] == "failed"
    assert step(shown, "optional")["error"]["class"] == "permanent"
    assert step(shown, "after")["output"] == {"saw": "failed"}


# --- replay --------------------------------------------------------------------------------


def test_replay_with_latest_runs_the_same_input_on_the_active_version(database: Database) -> None:
    """A run of v1 failed; after v2 is published, replay with latest runs v2 with the same input."""
    with running_target() as target:
        target.on("/v2/users", Reply(200, {"found": True}))
        wf = publish(database, workflow("lookup", http_step("find", f"{target.url}/v1/users")))
        original = start(database, wf, {"email": "bob@example.com"})
        with running_worker(database):
            failed = wait_status(database, original, "failed", "succeeded")
            assert failed["failure"]["status_code"] == 404
            publish(
                database,
                workflow(
                    "lookup",
                    http_step("find", f"{target.url}/v2/users?email={{{{ input.email }}}}"),
                ),
            )
            new = operate(database, "replay", original, latest=True)
            shown = wait_status(database, new, "succeeded", "failed")
    assert new != original
    assert shown["status"] == "succeeded"
    assert shown["version"] == 2
    assert shown["replay_of"] == original
    assert shown["replay_mode"] == "latest"
    assert shown["input"] == {"email": "bob@example.com"}
    query = parse_qs(urlsplit(target.calls("/v2/users")[0].path).query)
    assert query == {"email": ["bob@example.com"]}
    old = run_detail(database, original)
    assert old["status"] == "failed"
    assert old["replays"] == [new]
    replayed = [e for e in events(database, original) if e["kind"] == "replayed"]
    assert replayed[0]["data"]["new_run"] == new


def test_replay_with_latest_is_refused_after_a_non_reversible_step(database: Database) -> None:
    """A run that already succeeded an irreversible POST is not replayed with latest."""
    with running_target() as target:
        target.on("/accounts", Reply(201, {"id": "acc-1"}))
        target.on("/groups", Reply(404))
        wf = publish(
            database,
            workflow(
                "provision",
                http_step("create_account", f"{target.url}/accounts", "POST"),
                http_step("add_group", f"{target.url}/groups", "POST"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            wait_status(database, run_id, "failed", "succeeded")
            publish(
                database,
                workflow("provision", http_step("create_account", f"{target.url}/v2", "POST")),
            )
            error = refused(database, "replay", run_id, latest=True)
            assert error.code == "replay_refused"
            assert error.http_status == 409
            assert "'create_account'" in error.message
            assert "'add_group'" not in error.message
            assert error.extra["steps"] == ["create_account"]
            assert error.next_action is not None
            # a run of no grant: no single action can work, so words only
            assert "by hand" in error.next_action
            assert error.extra["action"] is None
            with database.transaction() as session:
                assert session.scalars(select(Run.id)).all() == [run_id]

            # Replay as-is is still possible: a new run of the old version.
            new = operate(database, "replay", run_id, latest=False)
            shown = wait_status(database, new, "failed", "succeeded")
    assert shown["version"] == 1
    assert shown["replay_of"] == run_id
    assert shown["replay_mode"] == "as_is"
    assert len(target.calls("/accounts")) == 2
    assert target.calls("/v2") == []


def test_a_reversible_step_does_not_block_replay_with_latest(database: Database) -> None:
    """A succeeded step marked reversible: true lets replay with latest go ahead."""
    with running_target() as target:
        target.on("/accounts", Reply(201, {"id": "acc-1"}))
        target.on("/groups", Reply(400))
        wf = publish(
            database,
            workflow(
                "provision",
                http_step("create_account", f"{target.url}/accounts", "POST", reversible=True),
                http_step("add_group", f"{target.url}/groups", "POST"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            wait_status(database, run_id, "failed", "succeeded")
            new = operate(database, "replay", run_id, latest=True)
            wait_status(database, new, "failed", "succeeded")
    assert len(target.calls("/accounts")) == 2


def test_replay_as_is_runs_the_old_version_after_a_new_one_is_published(
    database: Database,
) -> None:
    """Replay as-is of a succeeded v1 run starts a new run on v1 with the same input."""
    wf = publish(database, workflow("greet", set_step("hello", who="{{ input.who }} v1")))
    original = start(database, wf, {"who": "ann"})
    with running_worker(database):
        wait_status(database, original, "succeeded")
        publish(database, workflow("greet", set_step("hello", who="{{ input.who }} v2")))
        new = operate(database, "replay", original, latest=False)
        shown = wait_status(database, new, "succeeded", "failed")
        latest = wait_status(
            database, operate(database, "replay", original, latest=True), "succeeded", "failed"
        )
    assert shown["version"] == 1
    assert step(shown, "hello")["output"] == {"who": "ann v1"}
    assert shown["replay_of"] == original
    assert latest["version"] == 2
    assert step(latest, "hello")["output"] == {"who": "ann v2"}


# --- cancel --------------------------------------------------------------------------------


def test_cancel_a_run_waiting_on_a_delay_is_immediate(database: Database) -> None:
    """A run waiting on a delay, with no side effects yet, is cancelled at once."""
    wf = publish(database, workflow("waits", delay_step("wait", "1h"), set_step("after")))
    run_id = start(database, wf)
    with running_worker(database):
        wait_status(database, run_id, "waiting")
        operate(database, "cancel", run_id)
        shown = run_detail(database, run_id)
    assert shown["status"] == "cancelled"
    assert shown["failure"]["class"] == "cancelled"
    assert shown["failure"]["forced"] is False
    assert shown["failure"]["next_action"]
    assert shown["acted_steps"] == []
    assert step(shown, "wait")["status"] == "cancelled"
    assert [s["step_id"] for s in shown["steps"]] == ["wait"]
    with database.transaction() as session:
        assert session.get(QueueItem, run_id) is None
    cancelled = events(database, run_id)[-1]
    assert cancelled["kind"] == "cancelled"
    assert cancelled["actor"] == ACTOR.label


def test_cancel_a_run_parked_on_a_get_retry_is_immediate(database: Database) -> None:
    """A GET has no side effects: a run waiting to retry it is cancelled without force."""
    with running_target() as target:
        target.on("/status", Reply(503))
        wf = publish(
            database,
            workflow(
                "polls",
                http_step(
                    "poll",
                    f"{target.url}/status",
                    retry={"max_attempts": 5, "initial_backoff": "1h", "jitter": "none"},
                ),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            wait_for(database, run_id, lambda d: d["steps"][0]["status"] == "retrying")
            operate(database, "cancel", run_id)
            shown = run_detail(database, run_id)
    assert shown["status"] == "cancelled"
    assert shown["failure"]["class"] == "cancelled"
    assert step(shown, "poll")["status"] == "cancelled"
    assert len(target.calls("/status")) == 1


def test_cancel_after_a_post_succeeded_needs_force(database: Database) -> None:
    """After a POST acted, cancel is a 409 listing it; with force it cancels and records it."""
    with running_target() as target:
        target.on("/accounts", Reply(201, {"id": "acc-1"}))
        wf = publish(
            database,
            workflow(
                "acts",
                http_step("create_account", f"{target.url}/accounts", "POST"),
                delay_step("cool_off", "1h"),
                set_step("after"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            wait_status(database, run_id, "waiting")
            error = refused(database, "cancel", run_id)
            assert error.code == "cancel_needs_force"
            assert error.http_status == 409
            assert error.extra["acted_steps"] == ["create_account"]
            assert "create_account" in error.message
            assert run_detail(database, run_id)["status"] == "waiting"
            operate(database, "cancel", run_id, force=True)
            shown = run_detail(database, run_id)
    assert shown["status"] == "cancelled"
    assert shown["acted_steps"] == ["create_account"]
    failure = shown["failure"]
    assert failure["class"] == "cancelled"
    assert failure["forced"] is True
    assert failure["acted_steps"] == ["create_account"]
    assert "create_account" in failure["next_action"]
    assert len(target.calls("/accounts")) == 1


# --- pause and resume ----------------------------------------------------------------------


def test_pause_a_waiting_run_then_resume_it(database: Database) -> None:
    """A run waiting on a delay pauses at once; resumed, it finishes after the delay."""
    wf = publish(database, workflow("pausable", delay_step("wait", "1s"), set_step("after")))
    run_id = start(database, wf)
    with running_worker(database):
        wait_status(database, run_id, "waiting")
        operate(database, "pause", run_id)
        paused = run_detail(database, run_id)
        assert paused["status"] == "paused"
        assert operate(database, "pause", run_id) == run_id  # pausing twice is harmless
        operate(database, "resume", run_id)
        assert run_detail(database, run_id)["status"] in ("waiting", "running", "succeeded")
        shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "succeeded"
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "succeeded"]
    kinds = [e["kind"] for e in events(database, run_id)]
    assert kinds.index("paused") < kinds.index("succeeded")


def test_pause_a_running_run_stops_at_the_next_step_boundary(database: Database) -> None:
    """Pause during a call marks pause_requested; the run stops after that step; resume ends it."""
    release = threading.Event()
    with running_target() as target:
        target.on("/slow", Reply(200, {"ok": True}, hold=release))
        target.on("/next", Reply(200, {"ok": True}))
        wf = publish(
            database,
            workflow(
                "slow",
                http_step("first", f"{target.url}/slow"),
                http_step("second", f"{target.url}/next"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            try:
                target.wait_for_calls("/slow", 1)
                operate(database, "pause", run_id)
                requested = run_detail(database, run_id)
                assert requested["status"] == "running"
                assert requested["pause_requested"] is True
                release.set()
                paused = wait_status(database, run_id, "paused", "succeeded", "failed")
                assert paused["status"] == "paused"
                assert paused["pause_requested"] is False
                assert step(paused, "first")["status"] == "succeeded"
                assert step(paused, "second")["status"] == "pending"
                assert target.calls("/next") == []
                operate(database, "resume", run_id)
                shown = wait_status(database, run_id, "succeeded", "failed")
            finally:
                release.set()
    assert shown["status"] == "succeeded"
    assert len(target.calls("/slow")) == 1
    assert len(target.calls("/next")) == 1
    kinds = [e["kind"] for e in events(database, run_id)]
    assert "pause_requested" in kinds
    assert kinds.index("pause_requested") < kinds.index("paused") < kinds.index("succeeded")


# --- refusals ------------------------------------------------------------------------------


def test_operations_refuse_runs_in_the_wrong_state(database: Database) -> None:
    """Replay and resume need an ended or paused run; retry and cancel refuse a succeeded one."""
    wf = publish(database, workflow("states", set_step("a")))
    run_id = start(database, wf)
    assert refused(database, "replay", run_id, latest=False).code == "not_ended"
    assert refused(database, "resume", run_id).code == "not_paused"
    with running_worker(database):
        wait_status(database, run_id, "succeeded")
    error = refused(database, "retry", run_id)
    assert error.code == "not_retryable"
    assert "Replay" in error.message
    assert refused(database, "cancel", run_id).code == "already_ended"
    assert refused(database, "pause", run_id).code == "already_ended"
    assert run_detail(database, run_id)["status"] == "succeeded"
