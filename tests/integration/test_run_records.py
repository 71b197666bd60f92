"""What a run records, on both databases: the Idempotency-Key each attempt sent (hot path and
general path alike), the steps that acted on a run that failed, and one attempt for a task a
person failed."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.logging import REDACTED
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support import people as p
from tests.support.engine import publish, running_worker, start, wait_status, workflow
from tests.support.target import Reply, running_target

FAST_RETRY = {"max_attempts": 2, "initial_backoff": "20ms", "jitter": "none"}


def http_step(step_id: str, url: str, method: str = "POST", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "http", "config": {"method": method, "url": url}, **fields}


def step(shown: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in shown["steps"] if s["step_id"] == step_id)


def test_every_attempt_shows_the_idempotency_key_it_sent(database: Database) -> None:
    """The first call (general path), the next ones (hot path) and a retry each log the
    Idempotency-Key header that the target received."""
    with running_target() as target:
        target.on("/one", Reply(201, {"id": 1}))
        target.on("/two", Reply(201, {"id": 2}))
        target.on("/three", Reply(503, {"busy": True}), Reply(201, {"id": 3}))
        wf = publish(
            database,
            workflow(
                "keys",
                {
                    **http_step("one", f"{target.url}/one"),
                    "config": {
                        "method": "POST",
                        "url": f"{target.url}/one",
                        "headers": {"Authorization": "Bearer sekrit"},
                    },
                },
                http_step("two", f"{target.url}/two"),
                http_step("three", f"{target.url}/three", retry=FAST_RETRY),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
        sent = {c.path: c.idempotency_key for c in target.calls()}
    assert shown["status"] == "succeeded", shown["failure"]
    logged = [
        (s["step_id"], a["number"], a["request"]["request"]["headers"])
        for s in shown["steps"]
        for a in s["attempt_log"]
    ]
    assert logged == [
        ("one", 1, {"Authorization": REDACTED, "Idempotency-Key": f"{run_id}:one:1-1"}),
        ("two", 1, {"Idempotency-Key": f"{run_id}:two:1-1"}),
        ("three", 1, {"Idempotency-Key": f"{run_id}:three:1-1"}),
        ("three", 2, {"Idempotency-Key": f"{run_id}:three:1-1"}),
    ]
    assert sent == {f"/{n}": f"{run_id}:{n}:1-1" for n in ("one", "two", "three")}


def test_a_failed_run_records_the_steps_that_already_acted(database: Database) -> None:
    """A run failing at its third step lists the calls with side effects it had made (not
    the read-only GET) in acted_steps, as a cancelled run does."""
    with running_target() as target:
        target.on("/users", Reply(201, {"id": "u-1"}))
        target.on("/lookup", Reply(200, {"found": True}))
        target.on("/groups", Reply(404, {"error": "no such group"}))
        wf = publish(
            database,
            workflow(
                "acted",
                http_step("create_account", f"{target.url}/users"),
                http_step("lookup", f"{target.url}/lookup", "GET"),
                http_step("add_to_group", f"{target.url}/groups"),
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "failed"
    assert shown["failure"]["step_id"] == "add_to_group"
    assert shown["acted_steps"] == ["create_account", "add_to_group"]


def test_a_task_failed_by_a_person_shows_one_attempt(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A task waits, a person fails it: the step and the run's failure show one attempt, of
    class rejected."""
    flow = p.chain(
        "Fail once",
        p.task("enter", title="Enter the ticket", assignees={"users": [p.email("alice")]}),
        p.set_step("record", done=True),
    )
    with p.people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users, running_worker(database):
        run_id = p.start(users["ops"], p.publish(admin, flow))
        task_id = p.waiting_task(users["ops"], run_id)["task_id"]
        assert step(p.run(users["ops"], run_id), "enter")["attempts"] == 1
        p.ok(p.act(users["alice"], task_id, "fail", comment="no seats"))
        failed = p.wait_status(users["ops"], run_id, "failed", "succeeded")
    assert failed["status"] == "failed"
    assert step(failed, "enter")["attempts"] == 1
    assert failed["failure"]["attempts"] == 1
    assert (failed["failure"]["class"], failed["failure"]["code"]) == (
        "rejected",
        "failed_by_person",
    )
