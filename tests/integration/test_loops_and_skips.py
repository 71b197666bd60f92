"""Loops and skipped steps on both databases: a loop bounded by `max_iterations` on one step runs
every pass the bound allows (and stops with a readable message after), and a skipped step's
output says it was skipped, can be tested for, and is named in the error of a step reading it."""

from __future__ import annotations

from typing import Any

from grantflow.store.database import Database
from tests.support.engine import publish, run_detail, running_worker, start, wait_status, workflow
from tests.support.target import Reply, running_target


def step(shown: dict[str, Any], step_id: str, iteration: int = 1) -> dict[str, Any]:
    return next(
        s for s in shown["steps"] if s["step_id"] == step_id and s["iteration"] == iteration
    )


def _polling(name: str, url: str, bound_on: str) -> dict[str, Any]:
    """poll -> again (back to poll while the answer says more) -> done; one step bounded."""
    document = workflow(
        name,
        {"id": "poll", "type": "http", "config": {"method": "GET", "url": f"{url}/status"}},
        {
            "id": "again",
            "type": "condition",
            "branches": [{"when": "steps.poll.output.more", "next": "poll"}],
            "next": "done",
        },
        {"id": "done", "type": "set", "config": {"values": {"ok": True}}},
    )
    next(s for s in document["steps"] if s["id"] == bound_on)["max_iterations"] = 3
    return document


def test_a_loop_bounded_on_one_step_runs_every_pass_the_bound_allows(database: Database) -> None:
    """max_iterations: 3 on the call bounds its condition step too: three passes succeed."""
    with running_target() as target:
        target.on(
            "/status",
            Reply(200, {"more": True}),
            Reply(200, {"more": True}),
            Reply(200, {"more": False}),
        )
        for bound_on in ("poll", "again"):
            wf = publish(database, _polling(f"poll-{bound_on}", target.url, bound_on))
            run_id = start(database, wf)
            with running_worker(database):
                shown = wait_status(database, run_id, "succeeded", "failed")
            assert shown["status"] == "succeeded", shown["failure"]
            assert [s["step_id"] for s in shown["steps"]] == [
                *["poll", "again"] * 3,
                "done",
            ]
            assert step(shown, "again", 3)["next_step"] == "done"
            target.on(
                "/status",
                Reply(200, {"more": True}),
                Reply(200, {"more": True}),
                Reply(200, {"more": False}),
            )


def test_a_loop_over_its_bound_fails_naming_the_pass_and_the_bound(database: Database) -> None:
    """A loop that never exits stops at the bound: 'would run a 4th time', where it is declared."""
    with running_target() as target:
        target.on("/status", Reply(200, {"more": True}))
        wf = publish(database, _polling("endless", target.url, "again"))
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "failed"
    failure = shown["failure"]
    assert failure["code"] == "loop_bound_exceeded"
    assert failure["step_id"] == "poll"
    assert failure["message"] == (
        "step 'poll' would run a 4th time, over its loop's bound of 3 "
        "(max_iterations on step 'again')"
    )
    assert len(target.calls("/status")) == 3
    assert run_detail(database, run_id)["steps"][-1]["step_id"] == "again"
