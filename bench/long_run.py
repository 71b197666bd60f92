"""Long runs on PostgreSQL: a run that loops until its bound (a poll that never gets its
answer) holds N step runs (default 6,000: 3,000 passes of a step and its condition), and what
reading it costs; a poll that waits on a timer between passes, and what each pass costs as the
run grows. Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/long_run.py                  # 6,000 step runs, 1,000 timed passes
    .venv/bin/python bench/long_run.py --steps 1000 --passes 200

For each read, the median time over `--requests` requests (after one warm-up) and the size of
the answer, over HTTP with one keep-alive client per kind of caller (the API with an admin's
token; the console with a viewer's session cookie), the app under uvicorn in this process:
- api_detail (`GET /api/v1/runs/{id}`: every step run) and api_detail_latest (`?steps_limit=50`);
- api_steps_page (`GET /api/v1/runs/{id}/steps?limit=100`);
- api_timeline (every event) and api_timeline_latest (`?limit=100`); api_events_page
  (`GET /api/v1/runs/{id}/events?limit=100`);
- console_run_page (`/runs/{id}`), console_live (`/runs/{id}/live`: what the page re-reads every
  two seconds while the run moves), console_steps_page (`/runs/{id}/steps`) and
  console_timeline_page (`/runs/{id}/timeline`: its newest 200 events; before 2026-12-07,
  every event).

The timed poll (`poll`): set -> a 10 ms delay -> the condition that goes round again, `--passes`
times, run by a worker in this process. Each pass resumes the run from its timer (a worker's
turn reads where the run is: its current step, its context, its passes per step).
first_passes_ms / last_passes_ms: the median pass (one poll start to the next) over the first
and the last 50; cpu_ms_per_pass: this process's CPU over the whole run, per pass.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from typing import Any

import httpx
from common import (
    ACTOR,
    ADMIN_URL,
    admin_token,
    console_client,
    log,
    postgres_database,
    served,
    timed_reads,
)
from sqlalchemy import text
from sqlalchemy.engine import make_url

from grantflow.auth.permissions import Role
from grantflow.definitions import workflows
from grantflow.engine.runs import start_run
from grantflow.engine.worker import Worker
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database


def long_run(db: Database, name: str, passes: int, delay: str | None = None) -> str:
    """A run of a loop bounded at `passes` (poll, an optional delay, the condition that goes
    round again), run by a worker until it fails on the pass over its bound."""
    steps: list[dict[str, Any]] = [
        {"id": "poll", "type": "set", "config": {"values": {"answer": "pending"}}}
    ]
    if delay:
        steps.append({"id": "wait", "type": "delay", "config": {"duration": delay}})
    steps.append(
        {
            "id": "again",
            "type": "condition",
            "branches": [{"when": "true", "next": "poll"}],
            "max_iterations": passes,
        }
    )
    for step, following in itertools.pairwise(steps):
        step["next"] = following["id"]
    document = {
        "name": name,
        "trigger": {"type": "manual"},
        "safety": {"max_runs_per_minute": 1_000_000},
        "steps": steps,
    }
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        workflow = workflows.apply_document(session, ACTOR, document, publish_it=True).workflow
        run_id = start_run(session, ACTOR, queue, workflow.id, {}).id
    worker = Worker(db, queue, concurrency=1, poll_seconds=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with db.engine.connect() as conn:
                status = conn.execute(
                    text("SELECT status FROM runs WHERE id = :id"), {"id": run_id}
                ).scalar_one()
            if status == "failed":
                return run_id
            time.sleep(0.1)
        raise RuntimeError("the long run did not end")
    finally:
        worker.stop(grace_seconds=10)
        queue.close()


def poll_passes(db: Database, passes: int) -> dict[str, Any]:
    """The timed poll: each pass's time, as the run grows, and the CPU per pass."""
    cpu = time.process_time()
    run_id = long_run(db, "bench-poll", passes, delay="PT0.01S")
    cpu = time.process_time() - cpu
    with db.engine.connect() as conn:
        starts = list(
            conn.execute(
                text(
                    "SELECT started_at FROM step_runs WHERE run_id = :id AND step_id = 'poll' "
                    "ORDER BY sequence"
                ),
                {"id": run_id},
            ).scalars()
        )
    gaps = [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(starts)]
    return {
        "passes": len(starts),
        "first_passes_ms": round(statistics.median(gaps[:50]), 1),
        "last_passes_ms": round(statistics.median(gaps[-50:]), 1),
        "cpu_ms_per_pass": round(cpu * 1000 / len(starts), 1),
    }


def timed(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    first = client.get(path)
    if first.status_code == 404:  # (a commit before the read existed: for a before/after)
        return {"absent": True}
    first.raise_for_status()
    return timed_reads(client, path, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6000, help="step runs in the run")
    parser.add_argument("--requests", type=int, default=7, help="timed requests per read")
    parser.add_argument("--passes", type=int, default=1000, help="passes of the timed poll")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        log(f"running a loop to {options.steps} step runs")
        run_id = long_run(db, "bench-long-run", options.steps // 2)
        token = admin_token(db)
        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as api,
            console_client(db, url, "viewer@example.com", Role.VIEWER) as console,
        ):
            run = f"/api/v1/runs/{run_id}"
            reads = {
                "api_detail": (api, run),
                "api_detail_latest": (api, f"{run}?steps_limit=50"),
                "api_steps_page": (api, f"{run}/steps?limit=100"),
                "api_timeline": (api, f"{run}/timeline"),
                "api_timeline_latest": (api, f"{run}/timeline?limit=100"),
                "api_events_page": (api, f"{run}/events?limit=100"),
                "console_run_page": (console, f"/runs/{run_id}"),
                "console_live": (console, f"/runs/{run_id}/live"),
                "console_steps_page": (console, f"/runs/{run_id}/steps"),
                "console_timeline_page": (console, f"/runs/{run_id}/timeline"),
            }
            figures = {}
            for name, (client, path) in reads.items():
                log(f"timing {name}")
                figures[name] = timed(client, path, options.requests)
            steps = api.get(run, params={"steps_limit": 1}).json().get("steps_total")
        log(f"a poll of {options.passes} passes with a 10 ms timer")
        poll = poll_passes(db, options.passes)
    shown = {"database": "postgresql", "step_runs": steps, "reads": figures, "poll": poll}
    print(json.dumps(shown))


if __name__ == "__main__":
    main()
