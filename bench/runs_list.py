"""Runs list at scale: `GET /api/v1/runs?limit=50` on PostgreSQL holding N runs (default
1,000,000), whose newest page is 50 stuck runs. Prints ONE JSON object on stdout; progress goes
to stderr.

    .venv/bin/python bench/runs_list.py --runs 100000      # a quick look
    .venv/bin/python bench/runs_list.py                    # the target's data set

The data set is made of rows the engine really wrote: a workflow's runs, 20 run by a worker to
`succeeded`, then copied in bulk (`INSERT … SELECT … generate_series`, every column but the id
and the creation time): one a minute back from the first real run, over a year at a million
(each id minted, as Grantflow mints it, at its run's creation: a UUIDv7 of that millisecond).
The oldest 2 % failed and belong to a second, retired workflow (an outage, a workflow no longer
used). Last, 50 runs queued with no worker and a stuck-after of 1 ms, so the newest page is all
stuck runs (each with its cause: no live worker). The API runs in this process under uvicorn
on 127.0.0.1; requests go over HTTP with one keep-alive client and an admin's token. Figures,
per listing, are p50 and p95 of `--requests` requests after 5 warm-ups:
- all: no filter (the page of 50 stuck runs);
- queued: `status=queued` (the same page, through the status filter);
- stuck: `stuck=true`;
- succeeded: `status=succeeded` (a page of the copied rows: no stuck run in it);
- failed: `status=failed` (the old failures, the console home page's list);
- retired: `workflow_id=` the retired workflow (all its runs are old);
- old_version: `workflow_id=` the listed workflow and `version=1` (behind the newer half of
  the copies, on version 2);
- a_month: `since` and `until` a day of a month ago.
Target (issue 18): p95 at most 25 ms at 1,000,000 runs, with and without a status filter.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

import httpx
from common import ACTOR, ADMIN_URL, admin_token, log, percentiles, postgres_database, served
from sqlalchemy import text
from sqlalchemy.engine import make_url

from grantflow.definitions import workflows
from grantflow.engine.runs import start_run
from grantflow.engine.worker import Worker
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database

STUCK = 50
RUN_BY_WORKER = 20
COPIED_AS = ("id", "created_at", "status", "workflow_id", "version")  # a copy's own values


def publish(db: Database, name: str, stuck_after: str | None = None) -> str:
    document: dict[str, Any] = {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [{"id": "only", "type": "set", "config": {"values": {"x": 1}}}],
    }
    if stuck_after:
        document["settings"] = {"stuck_after": stuck_after}
    with db.transaction() as session:
        return workflows.apply_document(session, ACTOR, document, publish_it=True).workflow.id


def start(db: Database, workflow_id: str, count: int) -> list[str]:
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        return [start_run(session, ACTOR, queue, workflow_id, {}).id for _ in range(count)]


def run_to_the_end(db: Database, run_ids: list[str]) -> None:
    queue = DatabaseQueue(db)
    worker = Worker(db, queue, concurrency=2, poll_seconds=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with db.engine.connect() as conn:
                done = conn.execute(
                    text("SELECT count(*) FROM runs WHERE status = 'succeeded'")
                ).scalar_one()
            if done >= len(run_ids):
                return
            time.sleep(0.05)
        raise RuntimeError("the worker did not finish the seed runs")
    finally:
        worker.stop(grace_seconds=10)
        queue.close()


def copy_runs(db: Database, total: int, retired: str) -> None:
    """Copies of the succeeded runs up to `total` rows, one a minute back from the oldest real
    one, each id minted at its creation time; the oldest 2 % failed, of `retired`; the newer
    half on the workflow's version 2 (the real runs and the older half: version 1)."""
    with db.engine.begin() as conn:
        columns = [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'runs' AND table_schema = current_schema() "
                    "ORDER BY ordinal_position"
                )
            )
        ]
        rest = [c for c in columns if c not in COPIED_AS]
        listed = ", ".join(f'"{c}"' for c in rest)
        picked = ", ".join(f'r."{c}"' for c in rest)
        # a UUIDv7 text of the creation's millisecond (as store/base.py new_id), random after
        conn.execute(
            text(
                "WITH seeds AS (SELECT row_number() OVER (ORDER BY id) - 1 AS n, * FROM runs "
                "WHERE status = 'succeeded'), "
                "base AS (SELECT min(created_at) AS first FROM runs), "
                "copies AS (SELECT g, base.first - g * interval '1 minute' AS at, "
                "g > :total - :old AS old, md5(g::text) AS noise "
                "FROM generate_series(1, :total) AS g, base), "
                "minted AS (SELECT *, lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), "
                "12, '0') AS ms FROM copies) "
                f"INSERT INTO runs (id, created_at, status, workflow_id, version, {listed}) SELECT "
                "substr(ms, 1, 8) || '-' || substr(ms, 9, 4) || '-7' || substr(noise, 1, 3) "
                "|| '-8' || substr(noise, 4, 3) || '-' || substr(noise, 7, 12), at, "
                "CASE WHEN old THEN 'failed' ELSE r.status END, "
                "CASE WHEN old THEN :retired ELSE r.workflow_id END, "
                "CASE WHEN g <= :total / 2 THEN r.version + 1 ELSE r.version END, "
                f"{picked} FROM minted JOIN seeds AS r ON r.n = minted.g % :seeds"
            ),
            {"total": total, "old": total // 50, "retired": retired, "seeds": RUN_BY_WORKER},
        )
        conn.execute(text("ANALYZE runs"))


def timed(client: httpx.Client, params: dict[str, Any], requests: int) -> dict[str, Any]:
    figures, answer = percentiles(
        lambda: client.get("/api/v1/runs", params=params).raise_for_status(), requests, 5
    )
    items = answer.json()["items"]
    return {
        **figures,
        "items": len(items),
        "stuck_in_page": sum(1 for item in items if item.get("stuck")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs in the database")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per listing")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        log(f"seeding: {RUN_BY_WORKER} runs through a worker")
        listed = publish(db, "bench-list")
        run_to_the_end(db, start(db, listed, RUN_BY_WORKER))
        copies = max(0, options.runs - RUN_BY_WORKER - STUCK)
        log(f"copying {copies} runs")
        began = time.monotonic()
        retired = publish(db, "bench-retired")
        copy_runs(db, copies, retired)
        log(f"copied in {time.monotonic() - began:.0f}s; {STUCK} stuck runs")
        start(db, publish(db, "bench-stuck", stuck_after="1ms"), STUCK)
        time.sleep(0.05)  # (past their 1 ms stuck-after: the data set, not a measurement)
        token = admin_token(db)
        with db.engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
        day = dt.timedelta(days=1)
        month_ago = dt.datetime.now(dt.UTC) - 30 * day
        listings = {
            "all": {},
            "queued": {"status": "queued"},
            "stuck": {"stuck": "true"},
            "succeeded": {"status": "succeeded"},
            "failed": {"status": "failed"},
            "retired": {"workflow_id": retired},
            "old_version": {"workflow_id": listed, "version": 1},
            "a_month": {"since": month_ago.isoformat(), "until": (month_ago + day).isoformat()},
        }
        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as client,
        ):
            figures = {
                name: timed(client, {"limit": 50, **params}, options.requests)
                for name, params in listings.items()
            }
    print(json.dumps({"database": "postgresql", "runs": total, "listings": figures}))


if __name__ == "__main__":
    main()
