"""Spend caps on both databases: a cap reached mid-run holds the next step (reason spend_cap,
naming the cap, the usage and the roll-over), warns at 80 %, and the run goes on by itself when
the cap is raised or when the period rolls over (on an injected clock, in the configured
timezone); usage is counted once per step across retries and two workers."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.config import load_settings
from grantflow.people.notifications import Notification
from grantflow.safety import config as safety_config
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import publish, run_detail, running_worker, start, workflow
from tests.support.target import Reply, running_target

API = "/api/v1"


def settle(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def set_steps(name: str, count: int) -> dict[str, Any]:
    steps = [{"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}} for i in range(count)]
    return workflow(name, *steps)


def cap(admin: httpx.Client, **body: Any) -> dict[str, Any]:
    response = admin.put(f"{API}/spend-caps", json=body)
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


def usage_of(admin: httpx.Client, workflow_id: str | None) -> dict[tuple[str, str], int]:
    shown = admin.get(f"{API}/usage").json()
    if workflow_id is None:
        rows = shown["workspace"]["usage"]
    else:
        rows = next(w for w in shown["workflows"] if w["workflow_id"] == workflow_id)["usage"]
    return {(r["kind"], r["period"]): r["used"] for r in rows}


def notes(db: Database, kind: str) -> list[str]:
    with db.transaction() as session:
        return list(
            session.execute(select(Notification.title).where(Notification.kind == kind)).scalars()
        )


class FakeClock:
    """The safety clock, moved on by the test."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now

    def set(self, when: dt.datetime) -> None:
        with self.lock:
            self.now = when


@pytest.fixture
def berlin_clock() -> Iterator[FakeClock]:
    """The safety clock at 23:59 on 31 March 2031 in Europe/Berlin (21:59 UTC), spend caps
    counted in Berlin's calendar; both restored afterwards."""
    clock = FakeClock(dt.datetime(2031, 3, 31, 21, 59, tzinfo=dt.UTC))
    safety_config.configure(load_settings(spend_cap_timezone="Europe/Berlin"))
    safety_config.use_clock(clock)
    try:
        yield clock
    finally:
        safety_config.use_clock(None)
        safety_config.configure(load_settings())


def test_a_cap_reached_mid_run_waits_at_a_step_and_raising_it_resumes(
    api: Api, admin: httpx.Client
) -> None:
    """A workflow capped at 5 executed steps a day: a 7-step run does 5, warns once at 80 %,
    notes the cap reached, and waits before s5 (reason spend_cap, the cap, 5 used, when the
    day rolls over); raising the cap to 10 lets it finish by itself."""
    db = api.database
    wf = publish(db, set_steps("Capped", 7))
    cap(admin, workflow=wf, kind="steps", period="day", cap=5)
    run_id = start(db, wf)
    with running_worker(db):
        held = settle(
            lambda: (d := run_detail(db, run_id))["waiting_reason"] == "spend_cap" and d, "cap"
        )
        assert held["status"] == "waiting"
        assert held["current_step"] == "s5"
        assert [s["status"] for s in held["steps"]][-1] == "pending"
        assert len([s for s in held["steps"] if s["status"] == "succeeded"]) == 5
        failure = held["failure"]
        assert failure["class"] == "safety"
        assert failure["code"] == "spend_cap"
        assert failure["cap"] == {
            "scope": "workflow",
            "workflow_id": wf,
            "kind": "steps",
            "period": "day",
            "cap": 5,
            "used": 5,
        }
        assert "cap of 5 executed steps per day is reached (5 used)" in failure["message"]
        assert held["held"]["kind"] == "spend_cap"
        assert held["held"]["resets_at"] == failure["resets_at"]
        assert held["next"]["operation"] == "spend_cap.set"
        assert len(notes(db, "spend_cap_warning")) == 1
        assert len(notes(db, "spend_cap_reached")) == 1
        assert usage_of(admin, wf)[("steps", "day")] == 5

        raised = cap(admin, workflow=wf, kind="steps", period="day", cap=10)
        assert raised["woken"] == 1
        done = settle(
            lambda: (d := run_detail(db, run_id))["status"] == "succeeded" and d, "the run done"
        )
    assert [s["step_id"] for s in done["steps"]] == [f"s{i}" for i in range(7)]
    assert usage_of(admin, wf)[("steps", "day")] == 7


def test_the_period_rolling_over_resumes_the_run_by_itself(
    api: Api, admin: httpx.Client, berlin_clock: FakeClock
) -> None:
    """At 23:59 Berlin time a run capped at 2 executed steps a day waits, saying the day rolls
    over at 2031-04-01 00:00 Berlin (22:00 UTC); when the clock passes midnight the run goes
    on with nobody acting, and the new day's usage starts from its own steps."""
    db = api.database
    wf = publish(db, set_steps("Nightly", 4))
    cap(admin, workflow=wf, kind="steps", period="day", cap=2)
    run_id = start(db, wf)
    with running_worker(db, tick_seconds=0.2):
        held = settle(
            lambda: (d := run_detail(db, run_id))["waiting_reason"] == "spend_cap" and d, "cap"
        )
        assert held["failure"]["resets_at"] == "2031-03-31T22:00:00Z"
        assert "2031-04-01 00:00 (Europe/Berlin)" in held["failure"]["message"]
        assert usage_of(admin, wf)[("steps", "day")] == 2
        berlin_clock.set(dt.datetime(2031, 3, 31, 22, 0, 1, tzinfo=dt.UTC))
        settle(lambda: run_detail(db, run_id)["status"] == "succeeded", "the run done")
    shown = admin.get(f"{API}/usage").json()
    assert shown["day"] == "2031-04-01"
    assert usage_of(admin, wf)[("steps", "day")] == 2  # s2 and s3, on the new day
    assert usage_of(admin, wf)[("steps", "month")] == 2  # (April, in Berlin)


def test_a_workspace_cap_holds_every_workflow(api: Api, admin: httpx.Client) -> None:
    """A workspace cap of 1 run a month: the first run of one workflow goes, a run of another
    waits naming the workspace's cap; removing the cap lets it go."""
    db = api.database
    first_wf = publish(db, set_steps("First", 1))
    second_wf = publish(db, set_steps("Second", 1))
    cap(admin, kind="runs", period="month", cap=1)
    first = start(db, first_wf)
    with running_worker(db):
        settle(lambda: run_detail(db, first)["status"] == "succeeded", "the first run")
        second = start(db, second_wf)
        held = settle(
            lambda: (d := run_detail(db, second))["waiting_reason"] == "spend_cap" and d, "cap"
        )
        assert "the workspace's cap of 1 runs per month is reached" in held["failure"]["message"]
        assert held["failure"]["cap"]["scope"] == "workspace"
        cap(admin, kind="runs", period="month", cap=None)
        settle(lambda: run_detail(db, second)["status"] == "succeeded", "the second run")
    assert usage_of(admin, None)[("runs", "month")] == 2


def test_usage_is_counted_once_per_step_across_retries_and_two_workers(
    api: Api, admin: httpx.Client
) -> None:
    """12 runs of 3 http calls, each call answered 503 once before 200 (every step retried),
    taken by two workers at once: usage says 12 runs, 36 executed steps, 36 external calls."""
    db = api.database
    with running_target() as target:
        seen: set[str] = set()
        lock = threading.Lock()

        def flaky(request: Any) -> Reply:
            with lock:
                first = request.idempotency_key not in seen
                seen.add(request.idempotency_key)
            return Reply(503, {"error": "try again"}) if first else Reply(200, {"ok": True})

        target.respond("/call", flaky)
        retry = {"max_attempts": 3, "initial_backoff": "PT0.05S", "jitter": "none"}
        steps = [
            {
                "id": f"c{i}",
                "type": "http",
                "config": {"method": "POST", "url": f"{target.url}/call"},
                "retry": retry,
                "reversible": True,
            }
            for i in range(3)
        ]
        wf = publish(db, workflow("Retried", *steps))
        run_ids = [start(db, wf) for _ in range(12)]
        with running_worker(db), running_worker(db):
            settle(
                lambda: all(run_detail(db, r)["status"] == "succeeded" for r in run_ids),
                "all runs done",
            )
        assert len(target.calls("/call")) == 72  # every step called twice
    used = usage_of(admin, wf)
    assert (used[("runs", "day")], used[("steps", "day")], used[("external_calls", "day")]) == (
        12,
        36,
        36,
    )
    assert used[("steps", "month")] == 36


def test_caps_are_validated_and_need_workflow_publish(api: Api, admin: httpx.Client) -> None:
    """An unknown kind is 422 naming `kind`; an unknown workflow 404; a viewer is 403 naming
    workflow:publish but may read the usage."""
    bad = admin.put(f"{API}/spend-caps", json={"kind": "dollars", "period": "day", "cap": 1})
    assert bad.status_code == 422
    assert [d["field"] for d in bad.json()["error"]["details"]] == ["body.kind"]
    missing = admin.put(
        f"{API}/spend-caps", json={"workflow": "nope", "kind": "runs", "period": "day", "cap": 1}
    )
    assert missing.status_code == 404
    with api.as_role("viewer", "v@example.com") as viewer:  # type: ignore[arg-type]
        denied = viewer.put(f"{API}/spend-caps", json={"kind": "runs", "period": "day", "cap": 1})
        assert denied.status_code == 403
        assert denied.json()["error"]["missing_permission"] == "workflow:publish"
        assert viewer.get(f"{API}/usage").status_code == 200
