"""A job's history at scale: a five-minute job with N past occurrences (default 100,000, about
a year), each with the run it started, on PostgreSQL. Prints ONE JSON object on stdout; progress
goes to stderr.

    .venv/bin/python bench/jobs_history.py --occurrences 20000    # a quick look
    .venv/bin/python bench/jobs_history.py                        # a year of a five-minute job

The job is made by a real scheduler tick; its occurrences and their runs are copied in bulk
(`INSERT … SELECT … generate_series`) from a run Grantflow created, every run succeeded, next to
40 other jobs with one occurrence each. The API runs in this process under uvicorn on
127.0.0.1; requests go over HTTP with one keep-alive client (an admin's token, and a console
session). Figures are p50 / p95 ms of `--requests` requests after 3 warm-ups:
- jobs_api: `GET /api/v1/jobs` (each job with its last occurrence);
- job_api: `GET /api/v1/jobs/{id}` of the busy job;
- jobs_console: the console's `/jobs`;
- batch_facts: what a scheduler batch reads of its jobs before firing them
  (`scheduler.Facts.load` over the 41 jobs), in this process.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from common import (
    ACTOR,
    ADMIN_URL,
    admin_token,
    console_client,
    log,
    percentiles,
    postgres_database,
    served,
)
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from grantflow.auth.permissions import Role
from grantflow.definitions import workflows
from grantflow.engine.runs import start_run
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules.models import Job
from grantflow.schedules.scheduler import Facts, Scheduler
from grantflow.store.database import Database

OTHER_JOBS = 40


def publish(db: Database, name: str, cron: str | None) -> str:
    trigger = {"type": "schedule", "cron": cron, "timezone": "UTC"} if cron else {"type": "manual"}
    document = {
        "name": name,
        "trigger": trigger,
        "steps": [{"id": "only", "type": "set", "config": {"values": {"x": 1}}}],
    }
    with db.transaction() as session:
        return workflows.apply_document(session, ACTOR, document, publish_it=True).workflow.id


def fill(db: Database, job_id: str, workflow_id: str, seed: str, count: int) -> None:
    """`count` occurrences of the job five minutes apart up to now, each with a copy of the
    seed run (succeeded), then the seed run removed."""
    with db.engine.begin() as conn:
        columns = conn.execute(
            text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'runs' AND table_schema = current_schema() "
                "ORDER BY ordinal_position"
            )
        ).scalars()
        rest = [c for c in columns if c not in ("id", "workflow_id", "status")]
        listed = ", ".join(f'"{c}"' for c in rest)
        picked = ", ".join(f'r."{c}"' for c in rest)
        conn.execute(
            text(
                "INSERT INTO runs (id, workflow_id, status, " + listed + ") "
                "SELECT 'copy-' || g, :workflow_id, 'succeeded', " + picked + " "
                "FROM generate_series(1, :count) AS g, runs AS r WHERE r.id = :seed"
            ),
            {"count": count, "workflow_id": workflow_id, "seed": seed},
        )
        conn.execute(
            text(
                "INSERT INTO job_occurrences (id, job_id, scheduled_for, manual, status, run_id, "
                "outcome, created_by, created_at) SELECT 'occurrence-' || g, :job_id, "
                "now() - g * interval '5 minutes', false, 'fired', 'copy-' || g, 'succeeded', "
                "'scheduler', now() - g * interval '5 minutes' "
                "FROM generate_series(1, :count) AS g"
            ),
            {"count": count, "job_id": job_id},
        )
        conn.execute(text("DELETE FROM queue_items"))
        conn.execute(text("DELETE FROM runs WHERE id = :seed"), {"seed": seed})
        conn.execute(text("ANALYZE runs"))
        conn.execute(text("ANALYZE job_occurrences"))


def timed(call: Callable[[], Any], requests: int) -> dict[str, float]:
    return percentiles(call, requests)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occurrences", type=int, default=100_000, help="the busy job's")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per reading")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        busy = publish(db, "bench-sweep", "*/5 * * * *")
        for i in range(OTHER_JOBS):
            publish(db, f"bench-nightly-{i}", f"{i % 60} 2 * * *")
        queue = DatabaseQueue(db)
        assert Scheduler(db, queue, holder="bench").tick().leader
        with db.transaction() as session:
            seed = start_run(session, ACTOR, queue, publish(db, "bench-seed", None), {}).id
            job_id = session.execute(select(Job.id).where(Job.workflow_id == busy)).scalar_one()
        queue.close()
        log(f"copying {options.occurrences} occurrences and their runs")
        began = time.monotonic()
        fill(db, job_id, busy, seed, options.occurrences)
        log(f"copied in {time.monotonic() - began:.0f}s")
        token = admin_token(db)

        def facts() -> None:
            with db.transaction() as session:
                Facts.load(session, list(session.execute(select(Job)).scalars()))

        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as client,
            console_client(db, url, "console@example.com", Role.ADMIN) as console,
        ):
            figures = {
                "jobs_api": timed(
                    lambda: client.get("/api/v1/jobs").raise_for_status(), options.requests
                ),
                "job_api": timed(
                    lambda: client.get(f"/api/v1/jobs/{job_id}").raise_for_status(),
                    options.requests,
                ),
                "jobs_console": timed(
                    lambda: console.get("/jobs").raise_for_status(), options.requests
                ),
                "batch_facts": timed(facts, options.requests),
            }
    print(json.dumps({"database": "postgresql", "occurrences": options.occurrences, **figures}))


if __name__ == "__main__":
    main()
