"""Notifications over HTTP, on SQLite and PostgreSQL: each user sees their own and the
broadcast ones, with an unread count; marking read (one, or all); deduplication (the same
cause never notifies twice while open); run_needs_attention once per failed run."""

from __future__ import annotations

from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import running_worker
from tests.support.people import (
    API,
    act,
    approval,
    chain,
    email,
    error,
    notifications,
    ok,
    people,
    poll,
    publish,
    set_step,
    start,
    wait_status,
    waiting_task,
)
from tests.support.target import Reply, Target, running_target


def calling(target: Target, name: str, **step: Any) -> dict[str, Any]:
    return chain(
        name,
        {"id": "call", "type": "http", "config": {"method": "POST", "url": f"{target.url}/x"}}
        | step,
        set_step("after"),
    )


def kinds(shown: dict[str, Any]) -> list[str]:
    return [n["kind"] for n in shown["items"]]


def attention(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    shown = notifications(client, kind="run_needs_attention")
    return [n for n in shown["items"] if n["target_id"] == run_id]


def test_each_user_sees_their_own_and_the_broadcasts_with_an_unread_count(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """An approval notifies its approver only; a failed run is broadcast to everyone who may
    read runs; reading one, then all, brings the count down; another's is a 404."""
    with (
        running_target() as target,
        people(api, ops=Role.OPERATOR, alice=Role.APPROVER, bob=Role.APPROVER) as users,
        running_worker(database),
    ):
        target.on("/x", Reply(400, {"error": "bad request"}))
        asks = publish(admin, chain("Ask alice", approval(approvers={"users": [email("alice")]})))
        fails = publish(admin, calling(target, "Breaks"))
        task_id = waiting_task(users["ops"], start(users["ops"], asks))["task_id"]
        failed_run = start(users["ops"], fails)
        wait_status(users["ops"], failed_run, "failed")

        alice, bob = users["alice"], users["bob"]
        mine = notifications(alice)
        assert kinds(mine) == ["run_needs_attention", "approval_pending"]  # newest first
        assert mine["unread"] == 2
        pending = mine["items"][1]
        assert (pending["target_type"], pending["target_id"]) == ("task", task_id)
        assert pending["recipient_id"] is not None
        assert pending["broadcast"] is False
        assert pending["title"] == "Grant access?"
        broadcast = mine["items"][0]
        assert (broadcast["broadcast"], broadcast["recipient_id"]) == (True, None)

        theirs = notifications(bob)
        assert kinds(theirs) == ["run_needs_attention"]
        assert theirs["unread"] == 1
        assert kinds(notifications(alice, kind="approval_pending")) == ["approval_pending"]
        assert error(alice.get(f"{API}/notifications", params={"kind": "nope"}), 422)

        # bob may not even see alice's approval notification
        assert error(bob.post(f"{API}/notifications/{pending['id']}/read"), 404)
        read = ok(alice.post(f"{API}/notifications/{pending['id']}/read"))
        assert read["read"] is True
        assert read["read_at"] is not None
        after = notifications(alice)
        assert after["unread"] == 1
        assert kinds(notifications(alice, unread="true")) == ["run_needs_attention"]
        assert kinds(notifications(alice, unread="false")) == ["approval_pending"]
        # reading it twice changes nothing
        assert (
            ok(alice.post(f"{API}/notifications/{pending['id']}/read"))["read_at"]
            == (read["read_at"])
        )

        everything = ok(alice.post(f"{API}/notifications/read-all"))
        assert everything == {"marked": 1, "unread": 0}
        assert notifications(alice)["unread"] == 0
        # a broadcast has one read flag, shared by everyone who watches runs
        assert notifications(bob)["unread"] == 0
        assert ok(bob.post(f"{API}/notifications/read-all")) == {"marked": 0, "unread": 0}
        assert error(alice.post(f"{API}/notifications/no-such-id/read"), 404)["code"] == (
            "not_found"
        )


def test_a_reminder_notifies_again_only_once_the_first_notification_was_resolved(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """The reminder resolves the first approval_pending and raises a new one: one open at a
    time. An approver's decision on an `all` stage does not notify the others again."""
    with (
        people(api, ops=Role.OPERATOR, alice=Role.APPROVER, bob=Role.APPROVER) as users,
        running_worker(database),
    ):
        wf = publish(
            admin,
            chain(
                "Remind",
                approval(
                    approvers={"users": [email("alice"), email("bob")]},
                    policy="all",
                    timeout="1h",
                    on_timeout="reject",
                    remind_before="59m59s",
                ),
            ),
        )
        task_id = waiting_task(users["ops"], start(users["ops"], wf))["task_id"]
        reminded = poll(
            lambda: notifications(users["alice"], kind="approval_pending"),
            lambda shown: len(shown["items"]) == 2,
            timeout=60,
            what="the reminder",
        )
        newest, first = reminded["items"]
        assert first["resolved_at"] is not None
        assert newest["resolved_at"] is None
        assert newest["target_id"] == first["target_id"] == task_id
        assert newest["created_at"] >= first["resolved_at"]

        bob_before = notifications(users["bob"], kind="approval_pending")["items"]
        assert len(bob_before) == 2
        ok(act(users["alice"], task_id, "approve"))
        bob_after = notifications(users["bob"], kind="approval_pending")["items"]
        assert [n["id"] for n in bob_after] == [n["id"] for n in bob_before]
        assert bob_after[0]["resolved_at"] is None  # still bob's to decide
        alice_after = notifications(users["alice"], kind="approval_pending")["items"]
        assert alice_after[0]["resolved_at"] is not None  # alice is done
        ok(act(users["bob"], task_id, "approve"))
        closed = notifications(users["bob"], kind="approval_pending")["items"]
        assert all(n["resolved_at"] is not None for n in closed)


def test_a_failed_run_needs_attention_once_until_it_succeeds(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    """Failing again after a retry raises no second notification; the retry that succeeds
    resolves it. A timed-out run raises one too; a rejected approval does not."""
    with (
        running_target() as target,
        people(api, ops=Role.OPERATOR, alice=Role.APPROVER) as users,
        running_worker(database),
    ):
        ops = users["ops"]
        target.on("/x", Reply(403, {"error": "forbidden"}))
        wf = publish(admin, calling(target, "Provision CRM"))
        run_id = start(ops, wf)
        wait_status(ops, run_id, "failed")
        [note] = attention(ops, run_id)
        assert note["broadcast"] is True
        assert note["title"] == "Run of 'Provision CRM' failed at step 'call'"
        assert "403" in note["body"]
        assert "Next:" in note["body"]
        assert note["data"]["failure_class"] == "permanent"
        assert note["data"]["step_id"] == "call"
        assert note["target_type"] == "run"

        ok(ops.post(f"{API}/runs/{run_id}/retry"))
        wait_status(ops, run_id, "failed")
        assert [n["id"] for n in attention(ops, run_id)] == [note["id"]]
        assert attention(ops, run_id)[0]["resolved_at"] is None

        target.on("/x", Reply(200, {"ok": True}))
        ok(ops.post(f"{API}/runs/{run_id}/retry"))
        wait_status(ops, run_id, "succeeded")
        [resolved] = attention(ops, run_id)
        assert resolved["id"] == note["id"]
        assert resolved["resolved_at"] is not None

        target.on("/x", Reply(200, {"ok": True}, delay=1.0))
        slow = publish(admin, calling(target, "Slow", timeout="100ms"))
        slow_run = start(ops, slow)
        wait_status(ops, slow_run, "timed_out")
        [timed_out] = attention(ops, slow_run)
        assert timed_out["title"] == "Run of 'Slow' timed out at step 'call'"
        assert timed_out["data"]["status"] == "timed_out"

        asks = publish(admin, chain("Refused", approval(approvers={"users": [email("alice")]})))
        refused_run = start(ops, asks)
        task_id = waiting_task(ops, refused_run)["task_id"]
        ok(act(users["alice"], task_id, "reject", comment="no"))
        wait_status(ops, refused_run, "failed")
        assert attention(ops, refused_run) == []  # a person said no: nothing to fix
    assert len(notifications(admin, kind="run_needs_attention")["items"]) == 2
