"""Scheduler benchmark: 1,000 workflow jobs (one `set` step each) due at the same minute on
PostgreSQL; a Scheduler on the real clock fires them. Prints ONE JSON object on stdout; progress
goes to stderr.

    .venv/bin/python bench/scheduler.py                 # 1,000 jobs
    .venv/bin/python bench/scheduler.py --jobs 200      # fewer

PostgreSQL: GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script
creates its own database there and drops it at the end.

Figures, per occurrence of that minute:
- lag_p50_ms / lag_p99_ms / lag_max_ms: scheduled_for -> the run's created_at (the database row
  written by the scheduler's transaction);
- visible_p50_ms / visible_p99_ms: scheduled_for -> when a reader polling every 5 ms first saw
  the run committed (what a worker could see);
- handle_seconds: the first to the last run's created_at.
No worker runs: the runs stay queued (their execution is bench/engine.py's subject).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from grantflow.auth.actor import Actor
from grantflow.definitions import workflows
from grantflow.engine.models import Run
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import jobs
from grantflow.schedules.models import Job, Occurrence
from grantflow.schedules.scheduler import Scheduler
from grantflow.store.base import utcnow
from grantflow.store.database import Database

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine import DEFAULT_POSTGRES, log, percentile, postgres_database

ACTOR = Actor.system("bench")


def publish_jobs(db: Database, count: int) -> None:
    """`count` workflows firing every minute, one `set` step each, and their jobs."""
    for start in range(0, count, 100):
        with db.transaction() as session:
            for n in range(start, min(count, start + 100)):
                document = {
                    "name": f"bench-{n:05}",
                    "trigger": {"type": "schedule", "cron": "* * * * *", "timezone": "UTC"},
                    "steps": [{"id": "only", "type": "set", "config": {"values": {"n": n}}}],
                }
                workflows.apply_document(session, ACTOR, document, publish_it=True)
        log(f"published {min(count, start + 100)} workflows")
    with db.transaction() as session:
        jobs.sync_workflow_jobs(session)


class Watcher:
    """Polls for committed runs every 5 ms on a plain psycopg connection (cheap: it takes
    little of the scheduler's CPU); remembers when each run was first seen."""

    def __init__(self, db: Database) -> None:
        self.params = db.url.translate_connect_args(username="user", database="dbname")
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        with psycopg.connect(autocommit=True, **self.params) as conn:
            while not self.stop.is_set():
                ids = conn.execute("SELECT id FROM runs").fetchall()
                now = time.time()
                if len(ids) != len(self.seen):
                    for (run_id,) in ids:
                        self.seen.setdefault(run_id, now)
                self.stop.wait(0.005)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def measure(db: Database, count: int, tick_seconds: float) -> dict[str, Any]:
    with db.transaction() as session:
        due = session.execute(select(Job.next_fire_at).limit(1)).scalar_one()
    assert due is not None
    if (due - utcnow()).total_seconds() < 3:  # too close to start cleanly: the next minute
        due += dt.timedelta(minutes=1)
        with db.transaction() as session:
            session.execute(update(Job).values(next_fire_at=due))
    log(f"{count} jobs due at {due:%H:%M:%S}Z; waiting {(due - utcnow()).total_seconds():.1f}s")
    queue = DatabaseQueue(db)
    scheduler = Scheduler(db, queue, tick_seconds=tick_seconds)
    with Watcher(db) as watcher:
        scheduler.start()
        deadline = due + dt.timedelta(seconds=50)
        while len(watcher.seen) < count and utcnow() < deadline:
            time.sleep(0.05)
        scheduler.stop()
    queue.close()
    with db.transaction() as session:
        rows = session.execute(
            select(Occurrence.scheduled_for, Occurrence.status, Run.created_at, Run.id)
            .outerjoin(Run, Run.id == Occurrence.run_id)
            .where(Occurrence.scheduled_for == due)
        ).all()
    fired = [r for r in rows if r.status == "fired" and r.created_at is not None]
    if len(fired) != count:
        raise RuntimeError(f"{len(fired)} of {count} occurrences fired: {rows[:3]}")
    lags = [(r.created_at - r.scheduled_for).total_seconds() * 1000 for r in fired]
    visible = [(watcher.seen[r.id] - r.scheduled_for.timestamp()) * 1000 for r in fired]
    created = sorted(r.created_at for r in fired)
    return {
        "jobs": count,
        "database": "postgresql",
        "lag_min_ms": round(min(lags), 1),
        "lag_p50_ms": round(percentile(lags, 0.5), 1),
        "lag_p99_ms": round(percentile(lags, 0.99), 1),
        "lag_max_ms": round(max(lags), 1),
        "visible_p50_ms": round(percentile(visible, 0.5), 1),
        "visible_p99_ms": round(percentile(visible, 0.99), 1),
        "handle_seconds": round((created[-1] - created[0]).total_seconds(), 3),
        "batch_size": scheduler.batch_size,
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--tick-seconds", type=float, default=1.0)
    args = parser.parse_args()
    configure_logging("warning", "json")
    admin = make_url(os.environ.get("GRANTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    if admin.get_backend_name() == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    with postgres_database(admin) as db:
        publish_jobs(db, args.jobs)
        result = measure(db, args.jobs, args.tick_seconds)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
