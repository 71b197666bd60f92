"""Loops and skipped steps on both databases: a loop bounded by `max_iterations` on one step runs
every pass the bound allows (and stops with a readable message after), and a skipped step's
output says it was skipped, can be tested for, and is named in the error of a step reading it."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support import people as p
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


# --- skipped steps -----------------------------------------------------------------------------


def _task_then(name: str, **values: str) -> dict[str, Any]:
    return p.chain(
        name,
        p.task("enter", title="Enter the ticket", assignees={"users": [p.email("alice")]}),
        p.set_step("record", **values),
    )


def test_a_skipped_task_says_so_and_a_later_step_can_test_for_it(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A person skips a task: its output is {skipped, skipped_by, reason}, and a later step
    that tests `steps.enter.output.skipped` goes on with its own value."""
    flow = _task_then(
        "Skip tested",
        ticket="{{ 'none' if steps.enter.output.skipped else steps.enter.output.ticket }}",
        by="{{ steps.enter.output.skipped_by }}",
    )
    with p.people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users, running_worker(database):
        run_id = p.start(users["ops"], p.publish(admin, flow))
        task_id = p.waiting_task(users["ops"], run_id)["task_id"]
        p.ok(p.act(users["alice"], task_id, "skip", comment="already has one"))
        done = p.wait_status(users["ops"], run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    assert step(done, "enter")["output"] == {
        "skipped": True,
        "skipped_by": p.email("alice"),
        "reason": "already has one",
    }
    assert step(done, "record")["output"] == {"ticket": "none", "by": p.email("alice")}


def test_a_step_reading_a_field_of_a_skipped_task_fails_naming_the_skip(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """A later step reading a field the skipped task never produced fails, and its message
    says the task was skipped, by whom and why, and which field is missing."""
    flow = _task_then("Skip unguarded", ticket="{{ steps.enter.output.ticket }}")
    with p.people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users, running_worker(database):
        run_id = p.start(users["ops"], p.publish(admin, flow))
        task_id = p.waiting_task(users["ops"], run_id)["task_id"]
        p.ok(p.act(users["alice"], task_id, "skip", comment="already has one"))
        failed = p.wait_status(users["ops"], run_id, "failed", "succeeded")
    assert failed["status"] == "failed"
    failure = failed["failure"]
    assert failure["step_id"] == "record"
    assert (
        f"steps.enter was skipped by {p.email('alice')} (already has one); its output has no "
        "field 'ticket'"
    ) in failure["message"]


def test_a_skipped_escalation_says_who_skipped_it(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """An operator skips an escalated failure: the step's output names them and their
    comment, and a later step reads it."""
    with running_target() as target:
        target.on("/users", Reply(500))
        flow = p.chain(
            "Skip escalated",
            {
                "id": "create_account",
                "type": "http",
                "config": {"method": "POST", "url": f"{target.url}/users"},
                "retry": {"max_attempts": 1},
                "on_failure": "escalate",
            },
            p.set_step("after", by="{{ steps.create_account.output.skipped_by }}"),
        )
        with p.people(api, ops=Role.OPERATOR) as users, running_worker(database):
            run_id = p.start(users["ops"], p.publish(admin, flow))
            p.waiting_task(users["ops"], run_id, "escalated")
            [item] = p.inbox(users["ops"], kind="escalation")
            p.ok(p.act(users["ops"], item["id"], "skip", comment="created by hand"))
            done = p.wait_status(users["ops"], run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    assert step(done, "create_account")["output"] == {
        "skipped": True,
        "skipped_by": p.email("ops"),
        "reason": "created by hand",
    }
    assert step(done, "after")["output"] == {"by": p.email("ops")}


def test_a_step_failed_with_on_failure_continue_reads_as_skipped(database: Database) -> None:
    """A 404 with on_failure: continue: the step's output says it was skipped by its
    on_failure and why; a later step reading its `id` fails naming that."""
    with running_target() as target:
        target.on("/users", Reply(404, {"error": "no such user"}))
        wf = publish(
            database,
            workflow(
                "continue",
                {
                    "id": "lookup",
                    "type": "http",
                    "config": {"method": "GET", "url": f"{target.url}/users"},
                    "on_failure": "continue",
                },
                {
                    "id": "note",
                    "type": "set",
                    "config": {"values": {"skipped": "{{ steps.lookup.output.skipped }}"}},
                },
                {
                    "id": "use",
                    "type": "set",
                    "config": {"values": {"id": "{{ steps.lookup.output.id }}"}},
                },
            ),
        )
        run_id = start(database, wf)
        with running_worker(database):
            shown = wait_status(database, run_id, "succeeded", "failed")
    assert shown["status"] == "failed"
    lookup = step(shown, "lookup")
    assert lookup["status"] == "failed"
    assert lookup["output"]["skipped"] is True
    assert lookup["output"]["skipped_by"] == "on_failure: continue"
    assert "HTTP 404" in lookup["output"]["reason"]
    assert step(shown, "note")["output"] == {"skipped": True}
    assert shown["failure"]["step_id"] == "use"
    assert (
        "steps.lookup was skipped by on_failure: continue (HTTP 404" in shown["failure"]["message"]
    )
    assert "its output has no field 'id'" in shown["failure"]["message"]
