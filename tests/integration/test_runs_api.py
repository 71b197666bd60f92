"""The runs API over real HTTP on both databases: starting runs (input validation, refusals),
reading and filtering them, the timeline, audited operations, permissions, the queue, metrics."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import delete, select, update

from grantflow.audit.models import AuditEntry
from grantflow.auth.permissions import Role
from grantflow.engine.models import Run
from grantflow.queue.models import QueueItem
from grantflow.queue.models import Worker as WorkerRow
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import publish, running_worker, start, wait_status, workflow
from tests.support.target import Reply, running_target

RUNS = "/api/v1/runs"


def set_step(step_id: str, **values: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": values or {"done": True}}}


def delay_step(step_id: str, duration: str) -> dict[str, Any]:
    return {"id": step_id, "type": "delay", "config": {"duration": duration}}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def poll(client: httpx.Client, run_id: str, check: Callable[[dict[str, Any]], bool]) -> Any:
    """GET the run until `check` holds (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        shown = ok(client.get(f"{RUNS}/{run_id}"))
        if check(shown):
            return shown
        assert time.monotonic() < deadline, f"the run never got there: {shown}"
        time.sleep(0.02)


def audit_entries(database: Database, action: str) -> list[AuditEntry]:
    with database.transaction() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).all()
        session.expunge_all()
        return list(rows)


# --- starting runs -------------------------------------------------------------------------


def test_start_a_run_over_http_and_read_it_and_its_timeline(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """POST .../runs creates a queued run of the active version; a worker finishes it."""
    wf = publish(database, workflow("hello", set_step("greet", text="hi {{ input.name }}")))
    created = ok(admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {"name": "ann"}}), 201)
    assert created["status"] == "queued"
    assert created["version"] == 1
    assert created["workflow"] == "hello"
    assert created["input"] == {"name": "ann"}
    assert created["created_by"] == "admin@example.com"
    assert [(s["step_id"], s["status"]) for s in created["steps"]] == [("greet", "pending")]
    with running_worker(database):
        shown = poll(admin, created["id"], lambda d: d["status"] == "succeeded")
    assert shown["steps"][0]["output"] == {"text": "hi ann"}
    assert shown["finished_at"] is not None
    timeline = ok(admin.get(f"{RUNS}/{created['id']}/timeline"))
    assert timeline["status"] == "succeeded"
    kinds = [e["kind"] for e in timeline["events"]]
    milestones = ["queued", "started", "step_succeeded", "succeeded"]
    assert [k for k in kinds if k in milestones] == milestones
    assert (
        next(e for e in timeline["events"] if e["kind"] == "step_succeeded")["step_id"] == "greet"
    )
    assert timeline["events"][0]["actor"] == "admin@example.com"
    assert all(e["at"] for e in timeline["events"])
    assert error(admin.get(f"{RUNS}/no-such-run"), 404)["code"] == "not_found"


def test_run_input_is_validated_against_the_input_schema(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Input that breaks the manual trigger's input_schema is a 422 naming the fields."""
    schema = {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    }
    wf = publish(
        database,
        workflow(
            "checked",
            set_step("a"),
            trigger={"type": "manual", "input_schema": schema},
        ),
    )
    body = error(admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {"days": "ten"}}), 422)
    assert body["code"] == "input_invalid"
    assert body["failure_class"] == "validation"
    fields = {d["field"]: d["message"] for d in body["details"]}
    assert "'email' is a required property" in fields["input"]
    assert "integer" in fields["input.days"]
    assert "input.days" in body["message"]
    assert body["next_action"]
    body = error(
        admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {"email": "x", "days": 0}}), 422
    )
    assert [d["field"] for d in body["details"]] == ["input.days"]
    assert ok(admin.get(RUNS))["items"] == []
    good = ok(admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {"email": "x"}}), 201)
    assert good["status"] == "queued"


def test_a_disabled_workflow_starts_no_run(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Starting a run of a disabled workflow is a 409 workflow_disabled saying who disabled it."""
    wf = publish(database, workflow("off", set_step("a")))
    ok(admin.post(f"/api/v1/workflows/{wf}/disable"))
    body = error(admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {}}), 409)
    assert body["code"] == "workflow_disabled"
    assert "'off'" in body["message"]
    assert "admin@example.com" in body["message"]
    assert "enable" in body["next_action"]
    ok(admin.post(f"/api/v1/workflows/{wf}/enable"))
    ok(admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {}}), 201)


def test_a_workflow_without_an_active_version_starts_no_run(api: Api, admin: httpx.Client) -> None:
    """A workflow that only has a draft is a 409 no_active_version telling to publish."""
    created = ok(admin.post("/api/v1/workflows", json=workflow("drafty", set_step("a"))), 201)
    wf = created["workflow"]["id"]
    body = error(admin.post(f"/api/v1/workflows/{wf}/runs", json={"input": {}}), 409)
    assert body["code"] == "no_active_version"
    assert "'drafty'" in body["message"]
    assert "publish" in body["next_action"]
    assert error(admin.post("/api/v1/workflows/nope/runs", json={"input": {}}), 404)


# --- listing -------------------------------------------------------------------------------


def test_list_runs_filters_and_pages(api: Api, admin: httpx.Client, database: Database) -> None:
    """GET /runs filters by status, workflow, version, time range and stuck, newest first, paged."""
    alpha = publish(database, workflow("alpha", set_step("a")))
    beta = publish(database, workflow("beta", set_step("b"), settings={"stuck_after": "200ms"}))
    first = start(database, alpha)
    second = start(database, alpha)
    with running_worker(database):
        wait_status(database, second, "succeeded")
        wait_status(database, first, "succeeded")
        publish(database, workflow("alpha", set_step("a", v=2)))
        third = start(database, alpha)
        wait_status(database, third, "succeeded")
    fourth = start(database, beta)  # no worker any more: it stays queued

    def ids(**params: Any) -> list[str]:
        return [r["id"] for r in ok(admin.get(RUNS, params=params))["items"]]

    assert ids() == [fourth, third, second, first]
    assert ids(status="queued") == [fourth]
    assert ids(status="succeeded") == [third, second, first]
    assert ids(status="failed") == []
    assert ids(workflow_id=alpha) == [third, second, first]
    assert ids(workflow_id=alpha, version=2) == [third]
    assert ids(workflow_id=alpha, version=1) == [second, first]
    created = {r["id"]: r["created_at"] for r in ok(admin.get(RUNS))["items"]}
    assert ids(since=created[second]) == [fourth, third, second]
    assert ids(until=created[third]) == [second, first]
    assert ids(since=created[second], until=created[fourth]) == [third, second]
    assert error(admin.get(RUNS, params={"status": "sleeping"}), 422)

    stuck = poll(admin, fourth, lambda d: d["stuck"] is not None)["stuck"]
    assert stuck["cause"] == "no_worker"
    assert stuck["last_progress_at"]
    assert ids(stuck=True) == [fourth]
    assert ids(stuck=False) == [third, second, first]
    listed = ok(admin.get(RUNS, params={"stuck": True}))["items"][0]
    assert listed["stuck"]["cause"] == "no_worker"
    assert listed["workflow"] == "beta"

    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = ok(admin.get(RUNS, params=params))
        pages.append([r["id"] for r in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [[fourth, third, second], [first]]
    assert error(admin.get(RUNS, params={"cursor": "garbage"}), 400)["code"] == "bad_request"


# --- operations ----------------------------------------------------------------------------


def test_operations_over_http_are_audited_with_the_actor(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Retry, replay, cancel, pause and resume each answer with the run and leave an audit entry."""
    operator = api.as_role(Role.OPERATOR, "olga@example.com")
    with running_target() as target:
        target.on("/users", Reply(503), Reply(200, {"id": "u-1"}))
        wf = publish(
            database,
            workflow(
                "ops",
                {
                    "id": "call",
                    "type": "http",
                    "config": {"method": "GET", "url": f"{target.url}/users"},
                },
            ),
        )
        waiter = publish(database, workflow("waiter", delay_step("wait", "1h"), set_step("b")))
        run_id = start(database, wf)
        waiting = start(database, waiter)
        with running_worker(database):
            wait_status(database, run_id, "failed")
            wait_status(database, waiting, "waiting")

            retried = ok(operator.post(f"{RUNS}/{run_id}/retry"))
            assert retried["id"] == run_id
            assert retried["status"] in ("queued", "running", "succeeded")
            wait_status(database, run_id, "succeeded")

            replayed = ok(operator.post(f"{RUNS}/{run_id}/replay"), 201)
            assert replayed["replay_of"] == run_id
            assert replayed["replay_mode"] == "as_is"
            latest = ok(operator.post(f"{RUNS}/{run_id}/replay", params={"latest": True}), 201)
            assert latest["replay_mode"] == "latest"

            assert ok(operator.post(f"{RUNS}/{waiting}/pause"))["status"] == "paused"
            resumed = ok(operator.post(f"{RUNS}/{waiting}/resume"))
            assert resumed["status"] == "waiting"
            assert resumed["waiting_reason"] == "delay"
            cancelled = ok(operator.post(f"{RUNS}/{waiting}/cancel", json={}))
            assert cancelled["status"] == "cancelled"
            assert cancelled["failure"]["message"] == "cancelled by olga@example.com"
            refused = error(operator.post(f"{RUNS}/{waiting}/cancel"), 409)
            assert refused["code"] == "already_ended"
            wait_status(database, replayed["id"], "succeeded")
            wait_status(database, latest["id"], "succeeded")
    operator.close()

    for action, target_id, summary in [
        ("run.retried", run_id, {"step": "call"}),
        ("run.replayed", run_id, {"new_run": replayed["id"], "latest": False}),
        ("run.paused", waiting, {"was": "waiting"}),
        ("run.resumed", waiting, {}),
        ("run.cancelled", waiting, {"force": False, "acted_steps": []}),
    ]:
        entries = audit_entries(database, action)
        assert entries, action
        assert entries[0].actor == "olga@example.com"
        assert entries[0].target_type == "run"
        assert entries[0].target_id == target_id
        assert summary.items() <= entries[0].summary.items()
    assert len(audit_entries(database, "run.replayed")) == 2

    timeline = ok(admin.get(f"{RUNS}/{waiting}/timeline"))["events"]
    by_kind = {e["kind"]: e for e in timeline}
    assert by_kind["paused"]["actor"] == "olga@example.com"
    assert by_kind["cancelled"]["actor"] == "olga@example.com"
    retried = ok(admin.get(f"{RUNS}/{run_id}/timeline"))["events"]
    assert any(e["kind"] == "queued" and e["actor"] == "olga@example.com" for e in retried)


def test_refusals_over_http_carry_the_code_and_the_facts(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Cancel after a POST is a 409 listing acted steps; replay-latest after it names the step."""
    with running_target() as target:
        target.on("/accounts", Reply(201, {"id": "a-1"}))
        wf = publish(
            database,
            workflow(
                "acts",
                {
                    "id": "create_account",
                    "type": "http",
                    "config": {"method": "POST", "url": f"{target.url}/accounts"},
                },
                delay_step("cool_off", "1h"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            wait_status(database, run_id, "waiting")
            body = error(admin.post(f"{RUNS}/{run_id}/cancel"), 409)
            assert body["code"] == "cancel_needs_force"
            assert body["acted_steps"] == ["create_account"]
            assert "force" in body["next_action"]
            forced = ok(admin.post(f"{RUNS}/{run_id}/cancel", json={"force": True}))
            assert forced["status"] == "cancelled"
            assert forced["acted_steps"] == ["create_account"]
            body = error(admin.post(f"{RUNS}/{run_id}/replay", params={"latest": True}), 409)
    assert body["code"] == "replay_refused"
    assert body["steps"] == ["create_account"]
    assert "'create_account'" in body["message"]
    assert "by hand" in body["next_action"]
    assert body["action"] is None
    assert audit_entries(database, "run.cancelled")[0].summary == {
        "force": True,
        "acted_steps": ["create_account"],
    }


def test_reading_needs_run_read_and_operating_needs_run_operate(
    api: Api, database: Database
) -> None:
    """A viewer can read runs but gets 403 on start, retry, cancel; no token is a 401."""
    wf = publish(database, workflow("guarded", set_step("a")))
    run_id = start(database, wf)
    with api.as_role(Role.VIEWER) as viewer:
        assert ok(viewer.get(RUNS))["items"][0]["id"] == run_id
        assert ok(viewer.get(f"{RUNS}/{run_id}"))["status"] == "queued"
        ok(viewer.get(f"{RUNS}/{run_id}/timeline"))
        ok(viewer.get("/api/v1/queue"))
        for path in (
            f"{RUNS}/{run_id}/retry",
            f"{RUNS}/{run_id}/replay",
            f"{RUNS}/{run_id}/cancel",
            f"{RUNS}/{run_id}/pause",
            f"{RUNS}/{run_id}/resume",
            f"/api/v1/workflows/{wf}/runs",
        ):
            body = error(viewer.post(path, json={}), 403)
            assert body["code"] == "permission_denied"
            assert body["missing_permission"] == "run:operate"
    with api.client() as anonymous:
        assert error(anonymous.get(RUNS), 401)["code"] == "unauthenticated"
    with api.as_role(Role.OPERATOR) as operator:
        assert ok(operator.post(f"{RUNS}/{run_id}/cancel"))["status"] == "cancelled"
    assert audit_entries(database, "run.retried") == []


# --- the queue and metrics -----------------------------------------------------------------


def test_queue_status_shows_depth_age_and_live_workers(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """GET /queue shows ready runs and the oldest one's age with no worker, then the worker."""
    wf = publish(database, workflow("queued", set_step("a")))
    waits = publish(database, workflow("parked", delay_step("wait", "1h")))
    start(database, wf)
    start(database, wf)
    queue = ok(admin.get("/api/v1/queue"))
    assert queue["ready"] == 2
    assert queue["leased"] == 0
    assert queue["oldest_ready_age_seconds"] >= 0
    assert queue["workers"] == []
    parked = start(database, waits)
    with running_worker(database) as worker:
        wait_status(database, parked, "waiting")
        queue = ok(admin.get("/api/v1/queue"))
        assert queue["ready"] == 0
        assert queue["scheduled"] == 1
        assert queue["oldest_ready_age_seconds"] is None
        [shown] = queue["workers"]
        assert shown["id"] == worker.id
        assert (shown["state"], shown["concurrency"]) == ("live", 2)
        assert shown["heartbeat_at"]
        assert shown["lease_expires_at"]
    after = ok(admin.get("/api/v1/queue"))
    assert (after["workers"], after["lost_workers"]) == ([], [])  # a clean stop: gone


def test_a_worker_whose_lease_ran_out_is_lost_at_once_with_its_runs_in_hand(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A worker is live while its lease holds: one that heartbeat 5 s ago with a 3 s lease is
    lost (it died), shown apart, counted lost in /metrics, and a stuck run's cause says no
    live worker; a live worker's leased runs are in its hand."""
    now = utcnow()
    wf = publish(database, workflow("held", set_step("a")))
    held, stuck = start(database, wf), start(database, wf)
    with database.transaction() as session:
        session.add(
            WorkerRow(
                id="gone:1",
                hostname="h1",
                pid=101,
                concurrency=4,
                started_at=now,
                heartbeat_at=now - dt.timedelta(seconds=5),
                lease_expires_at=now - dt.timedelta(seconds=2),
            )
        )
        session.add(
            WorkerRow(
                id="busy:2",
                hostname="h2",
                pid=202,
                concurrency=2,
                started_at=now,
                heartbeat_at=now,
                lease_expires_at=now + dt.timedelta(seconds=30),
            )
        )
        session.execute(
            update(QueueItem)
            .where(QueueItem.run_id == held)
            .values(lease_owner="busy:2", lease_expires_at=now + dt.timedelta(seconds=30))
        )
        session.execute(
            update(Run).where(Run.id == stuck).values(stuck_at=now - dt.timedelta(seconds=1))
        )
    queue = ok(admin.get("/api/v1/queue"))
    assert [(w["id"], w["state"], w["runs_in_hand"]) for w in queue["workers"]] == [
        ("busy:2", "live", 1)
    ]
    [lost] = queue["lost_workers"]
    assert (lost["id"], lost["state"], lost["hostname"], lost["pid"]) == (
        "gone:1",
        "lost",
        "h1",
        101,
    )
    metrics = admin.get("/metrics").text
    assert 'grantflow_queue_transport_up{transport="database"} 1.0' in metrics
    assert 'grantflow_workers{state="lost"} 1.0' in metrics
    assert 'grantflow_workers{state="live"} 1.0' in metrics
    assert 'grantflow_worker_runs_in_hand{hostname="h2",pid="202",state="live",' in metrics
    # the live one holds a run: the stuck run waits behind it, not on a missing worker
    assert ok(admin.get(f"{RUNS}/{stuck}"))["stuck"]["cause"] == "queue_backlog"
    with database.transaction() as session:
        session.execute(delete(WorkerRow).where(WorkerRow.id == "busy:2"))
    assert ok(admin.get(f"{RUNS}/{stuck}"))["stuck"]["cause"] == "no_worker"


def test_metrics_expose_queue_depth_and_step_outcomes(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """/metrics has the queue depth gauge and the step outcome counter by class."""
    with running_target() as target:
        target.on("/x", Reply(500))
        wf = publish(
            database,
            workflow(
                "measured",
                {"id": "call", "type": "http", "config": {"url": f"{target.url}/x"}},
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            wait_status(database, run_id, "failed")
    start(database, wf)
    with api.client() as anonymous:
        text = anonymous.get("/metrics").text
    assert 'grantflow_queue_depth{state="ready"} 1.0' in text
    assert "grantflow_queue_oldest_ready_age_seconds" in text
    assert (
        'grantflow_step_outcomes_total{failure_class="transient",outcome="failed",type="http"}'
        in text
    )
    assert "grantflow_step_duration_seconds_bucket" in text
