"""A page of runs with stuck ones: each gets its cause, and the page's cost does not grow with
the number of stuck runs (the queue's statistics and live workers are read once per page)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select

from grantflow.engine import detail
from grantflow.engine.models import Run
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.engine import publish, start, wait_for, workflow

STEP = {"id": "a", "type": "set", "config": {"values": {"done": True}}}


@contextmanager
def counting(database: Database) -> Iterator[list[str]]:
    """The SQL statements the database's engine sends while the block runs."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def reports_of(database: Database) -> tuple[dict[str, Any], int]:
    """The stuck reports of the newest page of runs, and the statements that made them."""
    with database.transaction() as session:
        runs = list(session.execute(select(Run).order_by(Run.id.desc()).limit(50)).scalars())
        with counting(database) as sent:
            reports = detail.stuck_reports(session, runs, DatabaseQueue(database))
    return reports, len(sent)


def test_a_page_of_stuck_runs_costs_the_same_for_two_or_ten(database: Database) -> None:
    """Two and ten queued runs, stuck with no worker: every one is reported `no_worker` with
    the queue's depth, and ten cost no more statements than two."""
    flow = publish(database, workflow("stalled", STEP, settings={"stuck_after": "100ms"}))
    first = [start(database, flow) for _ in range(2)]
    for run_id in first:
        wait_for(database, run_id, lambda shown: shown["stuck"] is not None)
    two, statements_for_two = reports_of(database)
    assert {run_id: two[run_id]["cause"] for run_id in first} == dict.fromkeys(first, "no_worker")
    assert all(two[run_id]["queue_depth"] == 2 for run_id in first)

    more = [start(database, flow) for _ in range(8)]
    for run_id in more:
        wait_for(database, run_id, lambda shown: shown["stuck"] is not None)
    ten, statements_for_ten = reports_of(database)
    assert len(ten) == 10
    assert {report["cause"] for report in ten.values() if report} == {"no_worker"}
    assert all(report["queue_depth"] == 10 for report in ten.values() if report)
    assert statements_for_ten == statements_for_two
