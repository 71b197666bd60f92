"""A turn that resumes a run (a poll's timer, a decision) reads where the run is — its current
step run, its template context, its passes per step — without reading its whole history, and
finds what the whole history gives: on both databases, for a run that looped with a failure it
went on without, and now waits on a timer."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from grantflow.engine.context import build_context, load_progress
from grantflow.engine.models import Run, StepRun
from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, start, wait_status, workflow
from tests.support.target import Reply, running_target


def test_a_resumed_runs_progress_is_what_its_whole_history_gives(database: Database) -> None:
    """first -> lookup -> again (back while the answer says more) -> hold (a one-day timer);
    the fourth lookup's 404 is gone on without (on_failure: continue). The progress read for
    the waiting run — current step run, context (the same steps in the same order, each its
    last pass's output: the lookup's says it was skipped), passes per step — equals what every
    step run gives, from at most one step run per step."""
    with running_target() as target:
        target.on(
            "/lookup",
            Reply(200, {"more": True, "n": 1}),
            Reply(200, {"more": True, "n": 2}),
            Reply(200, {"more": True, "n": 3}),
            Reply(404, {"error": "gone"}),
        )
        document = workflow(
            "progress",
            {"id": "first", "type": "set", "config": {"values": {"a": 1}}},
            {
                "id": "lookup",
                "type": "http",
                "config": {"method": "GET", "url": f"{target.url}/lookup"},
                "on_failure": "continue",
            },
            {
                "id": "again",
                "type": "condition",
                "branches": [{"when": "steps.lookup.output.get('more', false)", "next": "lookup"}],
                "max_iterations": 6,
            },
            {"id": "hold", "type": "delay", "config": {"duration": "P1D"}},
        )
        run_id = start(database, publish(database, document))
        with running_worker(database):
            wait_status(database, run_id, "waiting")

    with database.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        current, context, passes = load_progress(session, run)
        loaded = sum(isinstance(row, StepRun) for row in session.identity_map.values())
        history = list(
            session.execute(
                select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.sequence)
            ).scalars()
        )
        whole = build_context(run, history)

    assert [s.step_id for s in history] == ["first", *["lookup", "again"] * 4, "hold"]
    assert loaded <= 4  # one step run per step, the current one among them
    assert (current.id, current.step_id, current.status) == (history[-1].id, "hold", "waiting")
    assert list(context["steps"]) == list(whole["steps"]) == ["first", "lookup", "again"]
    assert context == whole
    assert context["steps"]["lookup"]["output"]["skipped"] is True
    assert context["steps"]["lookup"]["status"] == "failed"
    assert context["steps"].total_bytes == whole["steps"].total_bytes
    assert (
        passes
        == Counter(s.step_id for s in history)
        == {
            "first": 1,
            "lookup": 4,
            "again": 4,
            "hold": 1,
        }
    )
