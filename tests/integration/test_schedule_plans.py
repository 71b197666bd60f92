"""A job's history does not slow the jobs list or the scheduler (PostgreSQL, 20,000 occurrences).

A five-minute job has 100,000 occurrences a year. The jobs list once ranked every occurrence to
find each job's last (172 ms at 140,000), a job's page walked all of them to find its last Run
now, and each scheduler batch read every run to find a job's unfinished one (100 ms at
200,000). Each now reads about one row per job: the server's own count of the rows it read
(EXPLAIN ANALYZE) is held here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, text

from grantflow.engine.models import Run
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules.models import Job, Occurrence
from grantflow.schedules.scheduler import Facts, Scheduler
from grantflow.store.base import new_id, utcnow
from tests.conftest import Api
from tests.support.engine import publish, start, workflow
from tests.support.ops import set_step
from tests.support.plans import rows_read, selects_on

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
]

OCCURRENCES = 20_000
PAGE_READ = 200


@pytest.fixture
def busy_job(api: Api) -> Iterator[dict[str, Any]]:
    """A five-minute job with OCCURRENCES past occurrences, each with its succeeded run."""
    db = api.database
    queue = DatabaseQueue(db)
    scheduler = Scheduler(db, queue, holder="plans")
    document = {
        "name": "Sweep",
        "trigger": {"type": "schedule", "cron": "*/5 * * * *", "timezone": "UTC"},
        "steps": [set_step("note")],
    }
    workflow_id = publish(db, document)
    assert scheduler.tick().leader
    seed = start(db, publish(db, workflow("Seed", set_step("only"))), {})
    with db.transaction() as session:
        job = session.execute(select(Job).where(Job.workflow_id == workflow_id)).scalar_one()
        template = session.get_one(Run, seed)
        run_row = {c.key: getattr(template, c.key) for c in Run.__table__.columns}
        session.delete(template)
        job_id = job.id
    now = utcnow()
    runs, occurrences = [], []
    for i in range(OCCURRENCES):
        at = now - dt.timedelta(minutes=5 * (OCCURRENCES - i))
        run_id = new_id()
        runs.append({**run_row, "id": run_id, "workflow_id": workflow_id, "status": "succeeded"})
        occurrences.append(
            {
                "id": new_id(),
                "job_id": job_id,
                "scheduled_for": at,
                "manual": False,
                "status": "fired",
                "run_id": run_id,
                "outcome": "succeeded",
                "created_by": "scheduler",
                "created_at": at,
            }
        )
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM queue_items"))
        conn.execute(insert(Run.__table__), runs)
        conn.execute(insert(Occurrence.__table__), occurrences)
        conn.execute(text("ANALYZE runs"))
        conn.execute(text("ANALYZE job_occurrences"))
    yield {"job_id": job_id, "last": occurrences[-1]}
    queue.close()


def test_the_jobs_list_reads_each_jobs_last_occurrence_only(
    api: Api, admin: httpx.Client, busy_job: dict[str, Any]
) -> None:
    with selects_on(api.database, "job_occurrences") as sent:
        answer = admin.get("/api/v1/jobs")
    assert answer.status_code == 200, answer.text
    (job,) = [j for j in answer.json()["items"] if j["id"] == busy_job["job_id"]]
    assert job["last_occurrence"]["id"] == busy_job["last"]["id"]
    assert sent
    for statement, parameters in sent:
        read = rows_read(api.database, statement, parameters)
        assert read <= PAGE_READ, f"the server read {read} rows: {statement[:200]}"


def test_a_jobs_page_reads_its_last_occurrences_only(
    api: Api, admin: httpx.Client, busy_job: dict[str, Any]
) -> None:
    """One job (and its health note, which looks for its last Run now: there is none) reads
    each kind's newest occurrence, not the job's every occurrence."""
    with selects_on(api.database, "job_occurrences") as sent:
        answer = admin.get(f"/api/v1/jobs/{busy_job['job_id']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["last_occurrence"]["id"] == busy_job["last"]["id"]
    assert answer.json()["health_note"] is None
    assert len(sent) >= 3  # the last occurrence, the last Run now, the last scheduled one
    for statement, parameters in sent:
        read = rows_read(api.database, statement, parameters)
        assert read <= PAGE_READ, f"the server read {read} rows: {statement[:200]}"


def test_a_scheduler_batch_reads_the_unfinished_runs_only(
    api: Api, busy_job: dict[str, Any]
) -> None:
    """What a batch knows of its jobs (Facts.load): the job is not busy (every run ended), read
    without reading the job's every run."""
    db = api.database
    with db.transaction() as session:
        job = session.get_one(Job, busy_job["job_id"])
        with selects_on(db, "job_occurrences") as sent:
            facts = Facts.load(session, [job])
    assert job.id not in facts.busy
    joined = [s for s in sent if "JOIN runs" in s[0]]
    assert joined
    for statement, parameters in joined:
        read = rows_read(db, statement, parameters)
        assert read <= PAGE_READ, f"the server read {read} rows: {statement[:200]}"
