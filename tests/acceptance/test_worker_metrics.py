"""A separate `grantflow worker` serves its own /metrics with --metrics-port: the steps and runs
it executed and the queue, scraped over HTTP; a port already taken is one line naming the
option, and no worker starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grantflow.store.database import Database
from tests.support.engine import publish, start, wait_status, workflow
from tests.support.processes import grantflow_env, poll, run_grantflow, start_worker
from tests.support.services import free_port

pytestmark = pytest.mark.acceptance


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scrape, by name and labels."""
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_worker_serves_its_steps_runs_and_the_queue(database: Database, tmp_path: Path) -> None:
    if database.url.get_backend_name() != "sqlite":
        pytest.skip("a worker process is exercised once, on SQLite")
    steps = [{"id": f"s{n}", "type": "set", "config": {"values": {"n": n}}} for n in range(2)]
    workflow_id = publish(database, workflow("Metered", *steps))
    env = grantflow_env(
        database_url=database.url.render_as_string(hide_password=False),
        secret_key_file=tmp_path / "secret.key",
    )
    port = free_port()
    worker = start_worker(env, tmp_path, "--metrics-port", str(port), "--poll-seconds", "0.1")
    try:
        announced = worker.wait_for_log("worker.metrics")
        assert (announced["address"], announced["port"]) == ("127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/metrics"
        before = samples(url)
        assert before[("grantflow_queue_depth", (("state", "ready"),))] == 0
        runs = [start(database, workflow_id, {"n": n}) for n in range(3)]
        for run_id in runs:
            wait_status(database, run_id, "succeeded")
        succeeded = ("grantflow_step_outcomes_total", ())
        after = poll(
            lambda: (
                found
                if (found := samples(url)).get(
                    ("grantflow_run_duration_seconds_count", (("status", "succeeded"),))
                )
                == 3
                else None
            ),
            timeout=60,
            what="the three runs in the worker's metrics",
        )
        outcomes = {
            labels: value for (name, labels), value in after.items() if name == succeeded[0]
        }
        assert outcomes == {
            (("failure_class", ""), ("outcome", "succeeded"), ("type", "set")): 6.0
        }, outcomes
        assert after[("grantflow_queue_depth", (("state", "ready"),))] == 0

        # the same port again: the error names the option and what to do; nothing started
        taken = run_grantflow("worker", "--metrics-port", str(port), env=env, cwd=tmp_path)
        assert taken.returncode == 2, taken.stderr
        error, advice = taken.stderr.strip().splitlines()
        assert error.startswith(f"error: --metrics-port: cannot listen on 127.0.0.1:{port}")
        assert advice == "  next: choose a free port (or another --metrics-address)"
    finally:
        assert worker.stop() == 0
