"""A worker's dispatcher claims while runs may be ready, and otherwise waits: one claim when a
run is announced (on PostgreSQL the claim also answers when the next parked run is due), no
claim because a finishing run freed a slot, again at once after a claim that filled every
slot, and a timer set in its own process wakes it for that timer. The workers here poll once
an hour, so only these rules can move the runs."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, start, wait_status, workflow
from tests.support.statements import statements_by_thread

HOURLY = 3600.0


def set_step(step_id: str) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "config": {"values": {step_id: 1}}}


def _wait_until_idle(database: Database) -> None:
    """Until the worker's queue listener waits for notifications (it has listened, and woken the
    dispatcher once for what was announced before) and its dispatcher waits with no wake-up
    pending: from here only a new announcement moves it."""
    for _ in range(3000):
        stacks = {t.name: _functions(t) for t in threading.enumerate()}
        listening = "notifies" in stacks.get("queue-listener", ())
        waiting = "wait" in stacks.get("worker-dispatcher", ())
        if listening and waiting and not database.queue_wakeup.is_set():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the worker's dispatcher never settled into waiting")


def _functions(thread: threading.Thread) -> set[str]:
    """The names of the functions on `thread`'s stack."""
    frame = sys._current_frames().get(thread.ident or -1)
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_an_idle_dispatcher_sends_one_statement_per_run(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs, one after the other, to an idle worker: the dispatcher sends one statement
    for each (its claim), none when a run ends."""
    if database.dialect != "postgresql":
        pytest.skip("the claim answers the next due time on PostgreSQL")
    wf = publish(database, workflow("dispatched", set_step("a"), set_step("b")))
    with running_worker(database, poll_seconds=HOURLY) as worker:
        _wait_until_idle(database)
        with statements_by_thread(monkeypatch) as counted:
            for _ in range(2):
                run_id = start(database, wf)
                assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
                assert worker.queue.claim("probe", 1, 1) == []  # (the queue is empty)
    assert counted["worker-dispatcher"] == 2


def test_a_full_claim_claims_again_as_slots_free(database: Database) -> None:
    """Five runs queued before a worker of two slots starts: its first claim fills both slots,
    and each slot freed claims again, with no announcement and no poll, until all five ran."""
    wf = publish(database, workflow("queued up", set_step("a")))
    run_ids = [start(database, wf) for _ in range(5)]
    with running_worker(database, concurrency=2, poll_seconds=HOURLY):
        for run_id in run_ids:
            assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"


def test_a_timer_set_in_the_worker_s_process_wakes_its_idle_dispatcher(
    database: Database,
) -> None:
    """A run parks on a one-second delay while the dispatcher waits for an hour: the timer,
    set in the worker's process, wakes the dispatcher, which waits for it and resumes the run."""
    document = workflow(
        "napping",
        {"id": "nap", "type": "delay", "config": {"duration": "1s"}},
        set_step("after"),
    )
    run_id = start(database, publish(database, document))
    with running_worker(database, poll_seconds=HOURLY):
        assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
