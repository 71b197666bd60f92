"""Two `grantflow scheduler` processes and a `grantflow worker` on one PostgreSQL database: each
occurrence fires exactly once with exactly one run; SIGKILL the leader and the other takes over
once the lease expires; SIGTERM releases the lease; the jobs CLI reads and pauses."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from grantflow.engine.models import Run
from grantflow.schedules.models import Job, Occurrence, SchedulerLease
from grantflow.store.base import utcnow
from grantflow.store.database import Database, open_database
from tests.support.databases import PostgresRun
from tests.support.engine import publish
from tests.support.processes import (
    COMMAND,
    WorkerProcess,
    grantflow_env,
    json_output,
    poll,
    run_grantflow,
    start_worker,
)

pytestmark = [pytest.mark.postgres, pytest.mark.acceptance]

JOBS = 4
LEASE_SECONDS = 2.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresRun]:
    run = PostgresRun()
    run.create()
    try:
        yield run
    finally:
        run.drop()


@pytest.fixture
def db(postgres: PostgresRun) -> Iterator[Database]:
    database = open_database(postgres.url)
    yield database
    database.dispose()


@pytest.fixture
def env(db: Database) -> dict[str, str]:
    key = os.urandom(32)
    db.use_master_keys(lambda: [key])  # this process and the spawned ones: one deployment
    return grantflow_env(
        database_url=db.url.render_as_string(hide_password=False),
        secret_key=base64.urlsafe_b64encode(key).decode(),
        log_level="info",
    )


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `grantflow ARGS...` (scheduler or worker); all are stopped at the end."""
    started: list[WorkerProcess] = []

    def _spawn(*args: str) -> WorkerProcess:
        if args[0] == "worker":
            process = start_worker(env, tmp_path, *args[1:])
        else:
            stderr_path = tmp_path / f"{args[0]}-{time.monotonic_ns()}.stderr"
            with stderr_path.open("wb") as stderr:
                popen = subprocess.Popen(
                    [*COMMAND, *args],
                    env=env,
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            process = WorkerProcess(popen, stderr_path)
        started.append(process)
        return process

    try:
        yield _spawn
    finally:
        for process in started:
            if process.process.poll() is None:
                process.process.terminate()
        for process in started:
            process.stop(timeout=10)


def lease(db: Database) -> SchedulerLease | None:
    with db.transaction() as session:
        return session.get(SchedulerLease, "scheduler")


def leader_pid(db: Database) -> int | None:
    found = lease(db)
    if found is None or found.expires_at < utcnow():
        return None
    return int(found.holder.split(":")[1])


def make_due(
    db: Database, job_ids: list[str], seconds_ago: float, after: dt.datetime | None = None
) -> dt.datetime:
    """Every job due `seconds_ago` (as if its cron time just passed), in whole seconds and
    later than `after` (a fast round would otherwise reuse the last round's second, whose
    occurrences exist already: the round would pass with no scheduler acting); that time."""

    def due_now() -> dt.datetime | None:
        due = (utcnow() - dt.timedelta(seconds=seconds_ago)).replace(microsecond=0)
        return due if after is None or due > after else None

    due: dt.datetime = poll(due_now, timeout=10, what="the next whole second")
    with db.transaction() as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(next_fire_at=due))
    return due


def occurrences_at(db: Database, job_ids: list[str], due: dt.datetime) -> list[Occurrence]:
    with db.transaction() as session:
        return list(
            session.execute(
                select(Occurrence).where(
                    Occurrence.job_id.in_(job_ids), Occurrence.scheduled_for == due
                )
            ).scalars()
        )


def all_handled(db: Database, job_ids: list[str], due: dt.datetime) -> list[Occurrence] | None:
    found = occurrences_at(db, job_ids, due)
    return found if len({o.job_id for o in found}) == len(job_ids) else None


def grantflow_json(env: dict[str, str], cwd: Path, *args: str) -> Any:
    return json_output(run_grantflow(*args, "--json", env=env, cwd=cwd))


def test_two_schedulers_fire_each_occurrence_once_and_fail_over(
    db: Database, env: dict[str, str], tmp_path: Path, spawn: Callable[..., WorkerProcess]
) -> None:
    """Each due time fires once per job with one run, while two schedulers run; the leader
    SIGKILLed, the other takes over after the lease; a job paused with the CLI records skipped
    occurrences naming who paused it; SIGTERM releases the lease."""
    names = [f"Sync {n}" for n in range(JOBS)] + ["Sync paused"]
    workflow_ids = [
        publish(
            db,
            {
                "name": name,
                # once a year: the test makes the jobs due itself
                "trigger": {"type": "schedule", "cron": "0 0 1 1 *", "timezone": "UTC"},
                "steps": [{"id": "note", "type": "set", "config": {"values": {"n": name}}}],
            },
        )
        for name in names
    ]
    options = ("--tick-seconds", "0.2", "--lease-seconds", str(LEASE_SECONDS))
    schedulers = [spawn("scheduler", *options) for _ in range(2)]
    spawn("worker", "--concurrency", "4")
    by_pid = {s.process.pid: s for s in schedulers}

    # while they start: the CLI lists the just-published workflows as jobs, and pauses one
    listed = grantflow_json(env, tmp_path, "jobs", "list", "--kind", "workflow")
    assert sorted(j["name"] for j in listed) == sorted(names)
    assert {j["next_fire_at_local"] for j in listed} == {
        f"{utcnow().year + 1}-01-01T00:00:00+00:00"
    }
    paused = grantflow_json(env, tmp_path, "jobs", "pause", "Sync paused")
    assert (paused["status"], paused["status_changed_by"]) == ("paused", "system:cli")
    job_ids = [j["id"] for j in listed if j["id"] != paused["id"]]
    first_leader = poll(lambda: leader_pid(db), timeout=60, what="a leader")
    assert first_leader in by_pid

    def all_succeeded() -> bool:
        with db.transaction() as session:
            statuses = session.execute(
                select(Run.status).where(Run.workflow_id.in_(workflow_ids))
            ).scalars()
            return set(statuses) == {"succeeded"}

    rounds: list[dt.datetime] = []

    def handle_round(seconds_ago: float, timeout: float) -> dt.datetime:
        """Make every job due; each gets one occurrence for that time: fired with a run (the
        worker finishes it before the next round), and the paused one skipped."""
        due = make_due(db, [*job_ids, paused["id"]], seconds_ago, rounds[-1] if rounds else None)
        found = poll(
            lambda: all_handled(db, [*job_ids, paused["id"]], due),
            timeout=timeout,
            what=f"occurrences for {due}",
        )
        fired = [o for o in found if o.job_id != paused["id"]]
        assert [o.status for o in fired] == ["fired"] * JOBS, [o.reason for o in fired]
        assert all(o.run_id for o in fired)
        (skipped,) = [o for o in found if o.job_id == paused["id"]]
        assert (skipped.status, skipped.run_id) == ("skipped", None)
        assert skipped.reason is not None
        assert skipped.reason.startswith("the job is paused (by system:cli at ")
        poll(all_succeeded, timeout=60, what="the runs to succeed on the worker")
        return due

    for seconds_ago in (3.0, 2.0, 1.0):
        rounds.append(handle_round(seconds_ago, timeout=60))

    # SIGKILL the leader: it cannot release its lease; the other takes over when it expires.
    # (The leader now: on a loaded machine a leader late to renew may have lost the lease to
    # the other already, which is fail-over too, and the lease read below names the one
    # killed.)
    held = lease(db)
    assert held is not None
    leader = int(held.holder.split(":")[1])
    killed = by_pid[leader]
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait(timeout=10)
    held = lease(db)
    assert held is not None
    if int(held.holder.split(":")[1]) != leader:  # it changed hands just before the kill
        pytest.fail(f"the lease moved from {leader} while the test read it; held: {held}")
    rounds.append(handle_round(0.5, timeout=60))
    taken_at = min(o.created_at for o in occurrences_at(db, job_ids, rounds[-1]))
    new = lease(db)
    assert new is not None
    survivor = next(pid for pid in by_pid if pid != leader)
    assert int(new.holder.split(":")[1]) == survivor
    assert new.term == held.term + 1
    assert new.acquired_at >= held.expires_at  # not before the dead leader's lease ended
    # (no upper bound in wall-clock time: a loaded machine takes over late, never early)
    assert held.expires_at <= taken_at
    by_pid[survivor].wait_for_log("scheduler.leader", timeout=60)

    # exactly once: one occurrence per job and time, and one run per fired occurrence
    with db.transaction() as session:
        counts = session.execute(
            select(Occurrence.job_id, Occurrence.scheduled_for, func.count())
            .where(Occurrence.job_id.in_([*job_ids, paused["id"]]))
            .group_by(Occurrence.job_id, Occurrence.scheduled_for)
        ).all()
        assert sorted(c for *_, c in counts) == [1] * ((JOBS + 1) * len(rounds))
        assert {at for _, at, _ in counts} == set(rounds)
        run_ids = set(
            session.execute(
                select(Occurrence.run_id).where(
                    Occurrence.job_id.in_(job_ids), Occurrence.run_id.is_not(None)
                )
            ).scalars()
        )
        runs = list(session.execute(select(Run).where(Run.workflow_id.in_(workflow_ids))).scalars())
        assert {r.id for r in runs} == run_ids
        assert len(runs) == JOBS * len(rounds)
        assert {r.trigger for r in runs} == {"schedule"}

    # SIGTERM: the survivor exits 0 and releases its lease at once (meanwhile the CLI reads)
    reader = subprocess.Popen(
        [*COMMAND, "jobs", "occurrences", "Sync 0", "--limit", "2", "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    survivor_process = by_pid[survivor]
    survivor_process.process.send_signal(signal.SIGTERM)
    assert survivor_process.process.wait(timeout=10) == 0
    survivor_process.wait_for_log("scheduler.stopped", timeout=1)
    released = lease(db)
    assert released is not None
    assert released.expires_at < utcnow()

    output, errors = reader.communicate(timeout=30)
    assert reader.returncode == 0, errors
    shown = json.loads(output)
    assert [
        (dt.datetime.fromisoformat(o["scheduled_for"]), o["status"], o["outcome"]) for o in shown
    ] == [(at, "fired", "succeeded") for at in sorted(rounds, reverse=True)[:2]]
    assert all(o["scheduled_for"].endswith("Z") for o in shown)  # RFC 3339 in UTC
