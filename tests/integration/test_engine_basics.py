"""The engine end to end on both databases: runs advance, branch, wait, and say why they stop."""

from __future__ import annotations

import pytest

from grantflow.store.database import Database
from tests.support.engine import events, publish, running_worker, start, wait_status
from tests.support.target import Reply, running_target

# the engine semantics, on each queue transport (tests/conftest.py)
pytestmark = [pytest.mark.transports, pytest.mark.usefixtures("transport")]


def test_sequential_set_steps_run_in_order_and_outputs_flow(database: Database) -> None:
    """A chain of set steps succeeds, each reading the previous step's output."""
    wf = publish(
        database,
        {
            "name": "chain",
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "a",
                    "type": "set",
                    "config": {"values": {"n": "{{ input.n + 1 }}"}},
                    "next": "b",
                },
                {
                    "id": "b",
                    "type": "set",
                    "config": {"values": {"n": "{{ steps.a.output.n * 10 }}"}},
                },
            ],
        },
    )
    run_id = start(database, wf, {"n": 1})
    with running_worker(database):
        shown = wait_status(database, run_id, "succeeded")
    assert [s["step_id"] for s in shown["steps"]] == ["a", "b"]
    assert shown["steps"][1]["output"] == {"n": 20}
    kinds = [e["kind"] for e in events(database, run_id)]
    assert kinds[0] == "queued"
    assert kinds[-1] == "succeeded"


def test_http_step_sends_idempotency_key_and_exposes_json_output(database: Database) -> None:
    """An http step's JSON response becomes its output; the request carries an idempotency key."""
    with running_target() as target:
        target.on("/users", Reply(201, {"id": "u-7"}))
        wf = publish(
            database,
            {
                "name": "http",
                "trigger": {"type": "manual"},
                "steps": [
                    {
                        "id": "create",
                        "type": "http",
                        "config": {
                            "method": "POST",
                            "url": f"{target.url}/users",
                            "body": {"email": "{{ input.email }}"},
                        },
                        "reversible": True,
                        "next": "after",
                    },
                    {
                        "id": "after",
                        "type": "set",
                        "config": {"values": {"uid": "{{ steps.create.output.id }}"}},
                    },
                ],
            },
        )
        run_id = start(database, wf, {"email": "ann@example.com"})
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded")
    call = target.calls("/users")[0]
    assert call.body == {"email": "ann@example.com"}
    assert call.idempotency_key == f"{run_id}:create:1-1"
    assert shown["steps"][1]["output"] == {"uid": "u-7"}
    attempt = shown["steps"][0]["attempt_log"][0]
    assert attempt["request"]["request"]["method"] == "POST"
    assert attempt["response"]["status_code"] == 201


def test_retry_is_refused_when_the_run_failed_choosing_its_next_step(database: Database) -> None:
    """A branch condition that fails at run time ends the run; Retry says to fix and replay."""
    from grantflow.engine import operations
    from grantflow.errors import Conflict
    from tests.support.engine import ACTOR, queue

    wf = publish(
        database,
        {
            "name": "route",
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "a",
                    "type": "set",
                    "config": {"values": {"x": 1}},
                    "branches": [{"when": "input.missing.deeper == 1", "next": "b"}],
                },
                {"id": "b", "type": "set", "config": {"values": {"y": 2}}},
            ],
        },
    )
    run_id = start(database, wf)
    with running_worker(database):
        shown = wait_status(database, run_id, "failed")
    assert shown["failure"]["class"] == "validation"
    with database.transaction() as session, pytest.raises(Conflict) as refused:
        operations.retry(session, ACTOR, queue(database), run_id)
    assert refused.value.next_action == "fix the workflow, publish it, then Replay with latest"


def test_a_cookie_one_call_was_given_is_sent_by_no_other_call(database: Database) -> None:
    """A target that answers one call with a cookie (a session) never gets it back: not on
    the run's next call, nor on another run's. A worker's HTTP client serves every run and
    every connection; a cookie kept in it would carry one run's session, one credential's
    identity, into the calls of another. A Cookie header a step sets itself is sent."""
    with running_target() as target:
        session = {"Set-Cookie": "session=first-run; Path=/"}
        target.on("/login", Reply(200, {"ok": True}, headers=session))
        target.on("/whoami", Reply(200, {"ok": True}))
        target.on("/mine", Reply(200, {"ok": True}))
        steps = [
            {
                "id": "login",
                "type": "http",
                "config": {"method": "POST", "url": f"{target.url}/login"},
                "reversible": True,
                "next": "whoami",
            },
            {
                "id": "whoami",
                "type": "http",
                "config": {"method": "GET", "url": f"{target.url}/whoami"},
                "next": "mine",
            },
            {
                "id": "mine",
                "type": "http",
                "config": {
                    "method": "GET",
                    "url": f"{target.url}/mine",
                    "headers": {"Cookie": "mine=1"},
                },
            },
        ]
        wf = publish(database, {"name": "cookies", "trigger": {"type": "manual"}, "steps": steps})
        runs = [start(database, wf), start(database, wf)]
        with running_worker(database):
            for run_id in runs:
                wait_status(database, run_id, "succeeded")
    sent = sorted((call.path, call.headers.get("cookie") or "") for call in target.calls())
    assert sent == [
        ("/login", ""),
        ("/login", ""),
        ("/mine", "mine=1"),
        ("/mine", "mine=1"),
        ("/whoami", ""),
        ("/whoami", ""),
    ]
