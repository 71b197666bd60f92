"""Human tasks and escalated failures over HTTP with a real worker, on SQLite and PostgreSQL:
a form checked on Submit whose data later steps read, Skip, Fail with a reason, who may act;
and a step that exhausts its retries with on_failure: escalate becoming an operator's task
to Retry (once the target is fixed), Skip or Fail."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker
from tests.support.people import (
    act,
    chain,
    email,
    error,
    get_task,
    inbox,
    ok,
    people,
    publish,
    run,
    set_step,
    start,
    task,
    wait_status,
    waiting_task,
)
from tests.support.target import Reply, Target, running_target

FORM = {
    "type": "object",
    "required": ["ticket"],
    "properties": {
        "ticket": {"type": "string", "pattern": "^INC-[0-9]+$"},
        "seats": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
FAST_RETRY = {
    "max_attempts": 2,
    "initial_backoff": "20ms",
    "multiplier": 2,
    "max_backoff": "100ms",
    "jitter": "none",
}


def form_flow(name: str = "Licence request") -> dict[str, Any]:
    """A person enters a ticket; the next step reads it from steps.enter.output."""
    return chain(
        name,
        task(
            "enter",
            title="Buy the licence and enter the ticket",
            instructions="Order it in the vendor portal.",
            assignees={"users": [email("alice")]},
            form=FORM,
        ),
        set_step("record", ticket="{{ steps.enter.output.ticket }}"),
    )


def step(shown: dict[str, Any], step_id: str) -> dict[str, Any] | None:
    return next((s for s in shown["steps"] if s["step_id"] == step_id), None)


# --- human tasks -------------------------------------------------------------------------------


def test_submit_checks_the_form_and_a_later_step_reads_the_data(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users, running_worker(database):
        wf = publish(admin, form_flow())
        run_id = start(users["ops"], wf)
        waiting = waiting_task(users["ops"], run_id, "task")
        task_id = waiting["task_id"]
        [mine] = inbox(users["alice"])
        assert (mine["id"], mine["kind"], mine["form"]) == (task_id, "task", FORM)
        assert mine["instructions"] == "Order it in the vendor portal."

        bad = error(act(users["alice"], task_id, "submit", data={"ticket": "x", "seats": 0}), 422)
        fields = {d["field"]: d["message"] for d in bad["details"]}
        assert set(fields) == {"data.ticket", "data.seats"}
        assert "does not match" in fields["data.ticket"]
        assert "less than the minimum of 1" in fields["data.seats"]
        missing = error(act(users["alice"], task_id, "submit", data={}), 422)
        assert missing["details"] == [
            {"field": "data.ticket", "message": "'ticket' is a required property"}
        ]
        assert run(users["ops"], run_id)["status"] == "waiting"
        assert get_task(users["alice"], task_id)["decisions"] == []  # refusals leave no trace

        data = {"ticket": "INC-42", "seats": 3}
        submitted = ok(act(users["alice"], task_id, "submit", data=data, comment="bought"))
        assert (submitted["status"], submitted["output"]) == ("submitted", data)
        done = wait_status(users["ops"], run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    assert step(done, "enter")["output"] == data  # type: ignore[index]
    assert step(done, "record")["output"] == {"ticket": "INC-42"}  # type: ignore[index]


def test_skip_skips_the_step_and_the_run_goes_on(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    flow = form_flow("Skippable")
    flow["steps"][1] = set_step("record", done=True)
    with people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users, running_worker(database):
        wf = publish(admin, flow)
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        skipped = ok(act(users["alice"], task_id, "skip", comment="already has one"))
        assert skipped["status"] == "skipped"
        done = wait_status(users["ops"], run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    assert step(done, "enter")["status"] == "skipped"  # type: ignore[index]
    assert step(done, "record")["status"] == "succeeded"  # type: ignore[index]


def test_fail_ends_the_run_failed_with_the_reason(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users, running_worker(database):
        wf = publish(admin, form_flow("Failable"))
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        no_reason = error(act(users["alice"], task_id, "fail"), 422)
        assert no_reason["details"] == [{"field": "comment", "message": "required"}]
        ok(act(users["alice"], task_id, "fail", comment="the vendor has no seats left"))
        failed = wait_status(users["ops"], run_id, "failed", "succeeded")
    assert failed["status"] == "failed"
    failure = failed["failure"]
    assert failure["step_id"] == "enter"
    assert failure["message"] == (
        f"{email('alice')} failed the run at this task: the vendor has no seats left"
    )
    assert failure["code"] == "failed_by_person"
    assert step(failed, "record") is None


def test_only_an_assignee_acts_and_only_with_a_tasks_actions(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with (
        people(api, ops=Role.OPERATOR, alice=Role.APPROVER, bob=Role.APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(admin, form_flow("Assigned"))
        run_id = start(users["ops"], wf)
        task_id = waiting_task(users["ops"], run_id)["task_id"]
        refused = error(act(users["bob"], task_id, "submit", data={"ticket": "INC-1"}), 403)
        assert refused["code"] == "not_assignee"
        assert f"(assigned to: {email('alice')})" in refused["message"]
        assert inbox(users["bob"]) == []
        wrong = error(act(users["alice"], task_id, "approve"), 422)
        assert wrong["message"] == "action: a task takes fail, skip, submit, not approve"
        retry = error(act(users["alice"], task_id, "retry"), 422)
        assert "not retry" in retry["message"]
        assert run(users["ops"], run_id)["status"] == "waiting"


# --- escalated failures ------------------------------------------------------------------------


def escalating_flow(target: Target, name: str) -> dict[str, Any]:
    return chain(
        name,
        {
            "id": "create_account",
            "type": "http",
            "config": {"method": "POST", "url": f"{target.url}/users", "body": {"u": "ada"}},
            "retry": FAST_RETRY,
            "on_failure": "escalate",
        },
        set_step("after", done=True),
    )


def escalated(users: dict[str, httpx.Client], run_id: str) -> dict[str, Any]:
    """The escalation task, as the operator's inbox shows it."""
    waiting_task(users["ops"], run_id, "escalated")
    [item] = inbox(users["ops"], kind="escalation")
    assert item["run_id"] == run_id
    return item


def test_an_escalated_failure_is_an_operators_task_and_retry_resumes_the_run(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Retry while the target is still down escalates again (the same operator may retry
    again); once it is fixed, Retry resumes from the failed step and the run succeeds."""
    with (
        running_target() as target,
        people(api, ops=Role.OPERATOR, alice=Role.APPROVER, starter=Role.OPERATOR) as users,
        running_worker(database),
    ):
        target.on("/users", Reply(503, {"error": "maintenance"}))
        wf = publish(admin, escalating_flow(target, "Escalating"))
        run_id = start(users["starter"], wf)
        item = escalated(users, run_id)
        assert item["kind"] == "escalation"
        assert item["step_id"] == "create_account"
        assert item["failure"]["class"] == "transient"
        assert item["failure"]["attempts"] == 2
        assert "503" in item["failure"]["message"]
        assert "Retry" in item["failure"]["next_action"]
        shown = run(users["ops"], run_id)
        assert shown["waiting_reason"] == "escalated"
        assert shown["waiting_for"]["task_id"] == item["id"]
        assert inbox(users["alice"]) == []  # an approver does not operate runs
        refused = error(act(users["alice"], item["id"], "retry"), 403)
        assert refused["missing_permission"] == "run:operate"
        assert len(target.calls("/users")) == 2

        ok(act(users["ops"], item["id"], "retry", comment="still down?"))
        again = escalated(users, run_id)
        assert again["id"] == item["id"]  # the same task, reopened
        assert len(target.calls("/users")) == 4

        target.on("/users", Reply(201, {"id": "u-1"}))
        retried = ok(act(users["ops"], item["id"], "retry", comment="vendor is back"))
        assert retried["status"] == "retried"
        done = wait_status(users["ops"], run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    assert step(done, "create_account")["output"] == {"id": "u-1"}  # type: ignore[index]
    assert step(done, "after")["status"] == "succeeded"  # type: ignore[index]
    assert len(target.calls("/users")) == 5
    assert [d["decision"] for d in get_task(admin, item["id"])["decisions"]] == [
        "retry",
        "retry",
    ]


def test_an_escalated_failure_can_be_skipped_and_the_run_goes_on(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with (
        running_target() as target,
        people(api, ops=Role.OPERATOR) as users,
        running_worker(database),
    ):
        target.on("/users", Reply(500))
        wf = publish(admin, escalating_flow(target, "Skip escalation"))
        run_id = start(users["ops"], wf)
        item = escalated(users, run_id)
        ok(act(users["ops"], item["id"], "skip", comment="created by hand"))
        done = wait_status(users["ops"], run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    assert step(done, "create_account")["status"] == "skipped"  # type: ignore[index]
    assert step(done, "after")["status"] == "succeeded"  # type: ignore[index]
    assert get_task(admin, item["id"])["status"] == "skipped"


def test_an_escalated_failure_can_fail_the_run_with_a_reason(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    with (
        running_target() as target,
        people(api, ops=Role.OPERATOR) as users,
        running_worker(database),
    ):
        target.on("/users", Reply(502))
        wf = publish(admin, escalating_flow(target, "Fail escalation"))
        run_id = start(users["ops"], wf)
        item = escalated(users, run_id)
        ok(act(users["ops"], item["id"], "fail", comment="vendor account closed"))
        failed = wait_status(users["ops"], run_id, "failed", "succeeded")
        assert inbox(users["ops"]) == []
    assert failed["status"] == "failed"
    assert failed["failure"]["code"] == "failed_by_person"
    assert failed["failure"]["step_id"] == "create_account"
    assert "vendor account closed" in failed["failure"]["message"]
    assert email("ops") in failed["failure"]["message"]
    assert step(failed, "after") is None
