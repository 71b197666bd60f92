"""Abuse limits on both databases: each refuses with class safety, naming the limit, its value
and the setting that raises it — executed steps per run (loop passes included), the size of a
response read from a target, concurrent runs of one workflow — and one event's runs (a CSV
import, many runs started at once) are made ready in bounded batches. (Template, step-output
and run-context limits: tests/integration/test_hostile_templates.py; request body and
document size: test_workflows_api.py and test_hostile_templates.py.)"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.config import load_settings
from grantflow.engine.runs import start_run
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.models import QueueItem
from grantflow.safety import config as safety_config
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import ACTOR, publish, running_worker, start, wait_status, workflow
from tests.support.target import Reply, running_target


@pytest.fixture
def limits(request: pytest.FixtureRequest) -> Iterator[None]:
    """Safety limits from settings for one test (`request.param`), the defaults after."""
    safety_config.configure(load_settings(**getattr(request, "param", {})))
    yield
    safety_config.configure(load_settings())


def failed(database: Database, document: dict[str, Any]) -> dict[str, Any]:
    run_id = start(database, publish(database, document))
    with running_worker(database):
        shown = wait_status(database, run_id, "failed", "succeeded", "timed_out", timeout=120)
    assert shown["status"] == "failed", shown
    return shown


@pytest.mark.parametrize("limits", [{"max_steps_per_run": 10}], indirect=True)
def test_a_run_over_its_executed_steps_limit_fails_naming_it(
    database: Database, limits: None
) -> None:
    """A loop allowed 100 passes stops at the run's 10th executed step: the run fails with
    class safety, code limit_exceeded, limit steps_per_run, value 10, setting
    GRANTFLOW_MAX_STEPS_PER_RUN."""
    document = {
        "name": "Looping",
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "work", "type": "set", "config": {"values": {"x": 1}}, "next": "again"},
            {
                "id": "again",
                "type": "condition",
                "branches": [{"when": "true", "next": "work"}],
                "max_iterations": 100,
            },
        ],
    }
    shown = failed(database, document)
    failure = shown["failure"]
    assert (failure["class"], failure["code"]) == ("safety", "limit_exceeded")
    assert (failure["limit"], failure["limit_value"]) == ("steps_per_run", 10)
    assert failure["setting"] == "GRANTFLOW_MAX_STEPS_PER_RUN"
    assert "the run's 11th executed step" in failure["message"]
    assert "GRANTFLOW_MAX_STEPS_PER_RUN" in failure["next_action"]
    assert len(shown["steps"]) == 11  # ten ran; the eleventh never started
    assert shown["steps"][-1]["status"] == "pending"


@pytest.mark.parametrize("limits", [{"response_max_bytes": 2048}], indirect=True)
def test_a_response_over_the_limit_fails_naming_it(database: Database, limits: None) -> None:
    """A 5,000-byte answer against a 2,048-byte response limit: class safety, limit
    response_size, value 2048, setting GRANTFLOW_RESPONSE_MAX_BYTES; not retried."""
    with running_target() as target:
        target.on("/big", Reply(200, "x" * 5000))
        step = {
            "id": "get",
            "type": "http",
            "config": {"method": "GET", "url": f"{target.url}/big"},
            "retry": {"max_attempts": 3, "initial_backoff": "PT0.05S"},
        }
        shown = failed(database, workflow("Big answer", step))
        assert len(target.calls("/big")) == 1
    failure = shown["failure"]
    assert (failure["class"], failure["code"]) == ("safety", "limit_exceeded")
    assert (failure["limit"], failure["limit_value"]) == ("response_size", 2048)
    assert failure["setting"] == "GRANTFLOW_RESPONSE_MAX_BYTES"
    assert "larger than 2048 bytes" in failure["message"]


@pytest.mark.parametrize("limits", [{"max_concurrent_runs_per_workflow": 1}], indirect=True)
def test_concurrent_runs_of_a_workflow_are_held_to_the_limit(
    database: Database, limits: None
) -> None:
    """With GRANTFLOW_MAX_CONCURRENT_RUNS_PER_WORKFLOW 1, three runs whose call the target
    holds never overlap at the target (one call at a time); all three succeed."""
    with running_target() as target:
        release = threading.Event()
        target.on("/slow", Reply(200, {"ok": True}, hold=release))
        step = {
            "id": "call",
            "type": "http",
            "config": {"method": "GET", "url": f"{target.url}/slow"},
        }
        wf = publish(database, workflow("One at a time", step))
        run_ids = [start(database, wf) for _ in range(3)]
        with running_worker(database, concurrency=3):
            target.wait_for_calls("/slow", 1)
            release.set()
            for run_id in run_ids:
                assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
        assert target.peak == 1
        assert len(target.calls("/slow")) == 3


def available_at(database: Database, run_ids: list[str]) -> Counter[Any]:
    with database.transaction() as session:
        rows = session.execute(
            select(QueueItem.available_at).where(QueueItem.run_id.in_(run_ids))
        ).scalars()
        return Counter(rows)


@pytest.mark.parametrize(
    "limits", [{"fanout_batch": 100, "fanout_interval_seconds": 60}], indirect=True
)
def test_many_runs_started_at_once_are_made_ready_in_batches(
    database: Database, limits: None
) -> None:
    """250 runs started in one transaction are ready in batches of 100, a minute apart: 100
    now, 100 a minute later, 50 a minute after that."""
    wf = publish(
        database, workflow("Fanned", {"id": "s", "type": "set", "config": {"values": {"x": 1}}})
    )
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        run_ids = [start_run(session, ACTOR, queue, wf, {}).id for _ in range(250)]
    slots = available_at(database, run_ids)
    times = sorted(slots)
    assert [slots[t] for t in times] == [100, 100, 50]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [60, 60]


@pytest.mark.parametrize(
    "limits", [{"fanout_batch": 100, "fanout_interval_seconds": 60}], indirect=True
)
def test_a_csv_import_starts_its_runs_in_batches(
    api: Api, admin: httpx.Client, limits: None
) -> None:
    """Importing 250 new identities (an identity_joined workflow each) makes their 250 runs
    ready in batches of at most 100, a minute apart, across the import's transactions."""
    publish(
        api.database,
        {
            "name": "Welcome",
            "trigger": {"type": "identity_joined"},
            "steps": [{"id": "s", "type": "set", "config": {"values": {"x": 1}}}],
        },
    )
    rows = "".join(f"p{n}@example.com,Person {n}\n" for n in range(250))
    response = admin.post(
        "/api/v1/identities/import",
        files={"file": ("people.csv", f"email,display_name\n{rows}".encode())},
    )
    assert response.status_code == 200, response.text
    assert response.json()["counts"]["created"] == 250
    with api.database.transaction() as session:
        slots = Counter(session.execute(select(QueueItem.available_at)).scalars())
    times = sorted(slots)
    assert sum(slots.values()) == 250
    assert [slots[t] for t in times] == [100, 100, 50]
