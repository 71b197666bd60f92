"""The scheduler on SQLite and PostgreSQL, driven by an injected clock: DST transitions, misfire
after downtime, overlap policies, skips with reasons (paused, unhealthy connection), disabled
jobs, overdue detection, and Run now."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections import service as connections
from grantflow.connections.models import ConnectionStatus
from grantflow.connections.schemas import ConnectionCreate
from grantflow.engine.models import Run
from grantflow.engine.worker import Worker
from grantflow.people.notifications import Notification
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import jobs, scheduler
from grantflow.schedules.jobs import JobUpdate
from grantflow.schedules.models import Job, JobStatus, Occurrence
from grantflow.schedules.overdue import mark_overdue
from grantflow.schedules.scheduler import Scheduler
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, wait_status
from tests.support.processes import poll

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
ALICE = Actor(label="alice@example.com", permissions=frozenset(Permission))
SET_STEP = [{"id": "note", "type": "set", "config": {"values": {"done": True}}}]


class Clock:
    """The scheduler's clock, moved by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, now: dt.datetime) -> None:
        self.now = now


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(at("2026-03-02T10:00:30+00:00"))


@pytest.fixture
def sched(database: Database, clock: Clock) -> Iterator[Scheduler]:
    queue = DatabaseQueue(database)
    yield Scheduler(database, queue, clock=clock, holder="scheduler-a")
    queue.close()


def scheduled(
    db: Database,
    sched: Scheduler,
    name: str,
    expression: str,
    timezone: str = "UTC",
    *,
    steps: list[dict[str, Any]] | None = None,
    application: str | None = None,
    **settings: Any,
) -> str:
    """Publish a schedule-triggered workflow; the scheduler's next tick makes its job (at the
    scheduler's clock); `settings` go to the job. The job's id."""
    document: dict[str, Any] = {
        "name": name,
        "trigger": {"type": "schedule", "cron": expression, "timezone": timezone},
        "steps": steps or SET_STEP,
    }
    if application:
        document["application"] = application
    workflow_id = publish(db, document)
    assert sched.tick().leader
    with db.transaction() as session:
        job = session.execute(select(Job).where(Job.workflow_id == workflow_id)).scalar_one()
        if settings:
            jobs.update_job(session, ALICE, job.id, JobUpdate(**settings))
        return job.id


def job_row(db: Database, job_id: str) -> Job:
    with db.transaction() as session:
        return session.get_one(Job, job_id)


def occurrences(db: Database, job_id: str) -> list[Occurrence]:
    with db.transaction() as session:
        return list(
            session.execute(
                select(Occurrence)
                .where(Occurrence.job_id == job_id)
                .order_by(Occurrence.scheduled_for, Occurrence.manual)
            ).scalars()
        )


def follow(db: Database, sched: Scheduler, clock: Clock, until: dt.datetime) -> None:
    """A scheduler that is always on time: move the clock to each due time (plus a second)
    and tick, up to `until`."""
    for _ in range(500):
        with db.transaction() as session:
            earliest = session.execute(
                select(Job.next_fire_at)
                .where(Job.status != JobStatus.DISABLED, Job.next_fire_at.is_not(None))
                .order_by(Job.next_fire_at)
                .limit(1)
            ).scalar()
        if earliest is None or earliest > until:
            clock.set(until)
            return
        clock.set(earliest + dt.timedelta(seconds=1))
        assert sched.tick().occurrences, f"nothing recorded at {clock.now}"
    raise AssertionError("the scheduler did not get past the due times")


def local_days(times: list[dt.datetime], timezone: str) -> dict[dt.date, list[dt.datetime]]:
    from zoneinfo import ZoneInfo

    days: dict[dt.date, list[dt.datetime]] = {}
    for t in times:
        days.setdefault(t.astimezone(ZoneInfo(timezone)).date(), []).append(t)
    return days


# --- daylight-saving time ------------------------------------------------------------------------
DST_CASES = [
    # zone, transition day, the 02:30 job's instant that day, its instant the next day,
    # hourly instants on the local day, where the hourly job has a 2 h gap (fall-back)
    (
        "Europe/Berlin",
        "2026-03-29",
        "2026-03-29T01:30:00+00:00",  # 02:30 does not exist: 03:30 CEST
        "2026-03-30T00:30:00+00:00",
        23,
        None,
    ),
    (
        "Europe/Berlin",
        "2026-10-25",
        "2026-10-25T00:30:00+00:00",  # 02:30 happens twice: the first (CEST)
        "2026-10-26T01:30:00+00:00",
        24,
        "2026-10-25T00:00:00+00:00",  # 02:00 CEST fires; 02:00 CET (01:00Z) does not
    ),
    (
        "America/New_York",
        "2026-03-08",
        "2026-03-08T07:30:00+00:00",  # 02:30 does not exist: 03:30 EDT
        "2026-03-09T06:30:00+00:00",
        23,
        None,
    ),
    (
        "America/New_York",
        "2026-11-01",
        "2026-11-01T07:30:00+00:00",  # 02:30 EST (01:00-02:00 is the repeated hour)
        "2026-11-02T07:30:00+00:00",
        24,
        "2026-11-01T05:00:00+00:00",  # 01:00 EDT fires; 01:00 EST (06:00Z) does not
    ),
]


@pytest.mark.parametrize(
    ("zone", "day", "first", "second", "hours", "gap_after"),
    DST_CASES,
    ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall"],
)
def test_dst_transition_days_fire_each_local_time_once(
    database: Database,
    sched: Scheduler,
    clock: Clock,
    zone: str,
    day: str,
    first: str,
    second: str,
    hours: int,
    gap_after: str | None,
) -> None:
    """A daily 02:30 job fires exactly once on the transition day (a skipped time shifted
    forward by the gap, a repeated time at its first occurrence); an hourly job never fires
    the same instant twice."""
    transition = dt.date.fromisoformat(day)
    clock.set(dt.datetime.combine(transition - dt.timedelta(days=1), dt.time(12), UTC))
    daily = scheduled(
        database,
        sched,
        f"daily {zone.replace('/', ' ')}",
        "30 2 * * *",
        zone,
        overlap_policy="allow",
    )
    hourly = scheduled(
        database,
        sched,
        f"hourly {zone.replace('/', ' ')}",
        "0 * * * *",
        zone,
        overlap_policy="allow",
    )
    follow(database, sched, clock, clock.now + dt.timedelta(days=2))

    fired = occurrences(database, daily)
    assert [o.scheduled_for for o in fired] == [at(first), at(second)]
    assert {o.status for o in fired} == {"fired"}
    assert all(o.run_id for o in fired)

    times = [o.scheduled_for for o in occurrences(database, hourly)]
    assert len(times) == len(set(times)), "an instant fired twice"
    on_day = sorted(local_days(times, zone)[transition])
    assert len(on_day) == hours
    gaps = [b - a for a, b in itertools.pairwise(on_day)]
    if gap_after is None:
        assert set(gaps) == {HOUR}
    else:
        assert [a for a, gap in zip(on_day, gaps, strict=False) if gap != HOUR] == [at(gap_after)]
        assert sorted(set(gaps)) == [HOUR, 2 * HOUR]


def test_repeated_local_time_fires_at_its_first_occurrence(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """01:30 in New York on 2026-11-01 happens twice (EDT, then EST): it fires once, at the
    first (05:30Z), and the next day at 01:30 EST."""
    clock.set(at("2026-10-31T12:00:00+00:00"))
    job_id = scheduled(database, sched, "ambiguous", "30 1 * * *", "America/New_York")
    follow(database, sched, clock, at("2026-11-02T12:00:00+00:00"))
    assert [o.scheduled_for for o in occurrences(database, job_id)] == [
        at("2026-11-01T05:30:00+00:00"),
        at("2026-11-02T06:30:00+00:00"),
    ]


# --- misfire after downtime ----------------------------------------------------------------------
WINDOW = "3:00:00"


def _outside(hour: int) -> tuple[str, str]:
    return (
        "skipped",
        f"outside the catch-up window: Grantflow was not running at 2026-03-02 {hour}:00Z "
        f"and the window is {WINDOW}",
    )


@pytest.mark.parametrize("policy", ["run_once", "skip"])
def test_restarted_scheduler_applies_the_misfire_policy(
    database: Database, sched: Scheduler, clock: Clock, policy: str
) -> None:
    """Down from 10:00 to 16:20 with an hourly job, a 3 h catch-up window and 5 min grace:
    11-13 are outside the window (skipped); 14-16 are missed, except that run_once catches
    up with one run for the latest (16:00)."""
    job_id = scheduled(
        database,
        sched,
        "hourly sync",
        "0 * * * *",
        misfire_policy=policy,
        catchup_window_seconds=3 * 3600,
    )
    assert job_row(database, job_id).next_fire_at == at("2026-03-02T11:00:00+00:00")

    # the scheduler process is restarted at 16:20; the old one's lease has long expired
    clock.set(at("2026-03-02T16:20:00+00:00"))
    restarted = Scheduler(database, sched.queue, clock=clock, holder="scheduler-b")
    recorded = restarted.tick().occurrences
    found = occurrences(database, job_id)
    assert sorted(recorded) == sorted(o.id for o in found)
    assert [o.scheduled_for.hour for o in found] == [11, 12, 13, 14, 15, 16]
    if policy == "run_once":
        missed = "caught up by one run for 2026-03-02 16:00Z (run_once)"
        expected = [
            _outside(11),
            _outside(12),
            _outside(13),
            ("missed", f"Grantflow was not running at 2026-03-02 14:00Z; {missed}"),
            ("missed", f"Grantflow was not running at 2026-03-02 15:00Z; {missed}"),
            ("fired", "a catch-up run after downtime (misfire policy run_once)"),
        ]
    else:
        missed = "the misfire policy is skip"
        expected = [
            _outside(11),
            _outside(12),
            _outside(13),
            ("missed", f"Grantflow was not running at 2026-03-02 14:00Z; {missed}"),
            ("missed", f"Grantflow was not running at 2026-03-02 15:00Z; {missed}"),
            ("missed", f"Grantflow was not running at 2026-03-02 16:00Z; {missed}"),
        ]
    assert [(o.status, o.reason) for o in found] == expected
    assert [bool(o.run_id) for o in found] == [s == "fired" for s, _ in expected]
    assert job_row(database, job_id).next_fire_at == at("2026-03-02T17:00:00+00:00")
    # the next tick records nothing again
    assert restarted.tick().occurrences == []
    assert len(occurrences(database, job_id)) == 6


def test_a_time_within_its_grace_is_on_time(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """Back at 16:03 (grace 5 min): 16:00 fires as usual; run_once catches up only the latest
    late time inside the window (15:00); 14:00 is missed; 13:00 is outside the window."""
    job_id = scheduled(
        database,
        sched,
        "hourly",
        "0 * * * *",
        catchup_window_seconds=3 * 3600,
        overlap_policy="allow",
    )
    clock.set(at("2026-03-02T16:03:00+00:00"))
    sched.tick()
    found = occurrences(database, job_id)
    assert [(o.scheduled_for.hour, o.status) for o in found] == [
        (11, "skipped"),
        (12, "skipped"),
        (13, "skipped"),
        (14, "missed"),
        (15, "fired"),
        (16, "fired"),
    ]
    assert found[3].reason == (
        "Grantflow was not running at 2026-03-02 14:00Z; caught up by one run for "
        "2026-03-02 15:00Z (run_once)"
    )
    assert found[4].reason == "a catch-up run after downtime (misfire policy run_once)"
    assert found[5].reason is None
    assert found[5].lag_ms == 180_000


# --- overlap ----------------------------------------------------------------------------------
def _delay(duration: str) -> list[dict[str, Any]]:
    return [{"id": "wait", "type": "delay", "config": {"duration": duration}}]


def _near_real_time(offset: dt.timedelta = dt.timedelta(days=1)) -> Clock:
    """A clock a day ahead of real time by default: jobs are never overdue for the workers'
    real-time overdue check while a worker runs."""
    return Clock(utcnow() + offset)


def _next_minute(db: Database, sched: Scheduler, clock: Clock, job_id: str) -> Occurrence:
    """Move to the job's next fire time and tick; the occurrence recorded for it."""
    due = job_row(db, job_id).next_fire_at
    assert due is not None
    clock.set(due + dt.timedelta(seconds=1))
    (recorded,) = sched.tick().occurrences
    with db.transaction() as session:
        return session.get_one(Occurrence, recorded)


def test_overlap_skip_records_the_run_still_in_progress(database: Database) -> None:
    """Overlap skip (the default): while the previous run waits on a delay, the next time is
    a skipped occurrence naming that run and its status."""
    clock = _near_real_time()
    queue = DatabaseQueue(database)
    sched = Scheduler(database, queue, clock=clock)
    job_id = scheduled(database, sched, "every minute", "* * * * *", steps=_delay("PT1H"))
    assert job_row(database, job_id).overlap_policy == "skip"
    first = _next_minute(database, sched, clock, job_id)
    assert first.status == "fired"
    assert first.run_id
    with running_worker(database):
        wait_status(database, first.run_id, "waiting")
        second = _next_minute(database, sched, clock, job_id)
    assert (second.status, second.run_id) == ("skipped", None)
    assert second.reason == (
        f"overlap: run {first.run_id} of the previous occurrence is still waiting"
    )
    queue.close()


def test_overlap_queue_one_starts_the_queued_occurrence_when_the_previous_run_ends(
    database: Database,
) -> None:
    """queue_one: the next time waits (queued), a third is skipped (one is already queued);
    when the first run ends, the queued occurrence starts its run."""
    clock = _near_real_time()
    queue = DatabaseQueue(database)
    sched = Scheduler(database, queue, clock=clock)
    job_id = scheduled(
        database, sched, "queue one", "* * * * *", steps=_delay("PT1S"), overlap_policy="queue_one"
    )
    first = _next_minute(database, sched, clock, job_id)
    assert first.run_id
    queued = _next_minute(database, sched, clock, job_id)
    assert (queued.status, queued.run_id) == ("queued", None)
    assert queued.reason == (
        f"waiting for run {first.run_id} of the previous occurrence to finish "
        "(overlap policy queue_one)"
    )
    third = _next_minute(database, sched, clock, job_id)
    assert third.status == "skipped"
    assert third.reason is not None
    assert third.reason.startswith(f"overlap: run {first.run_id} of the previous occurrence")
    assert third.reason.endswith("and one is already queued")

    with running_worker(database):
        wait_status(database, first.run_id, "succeeded")

        def started() -> Occurrence | None:
            with database.transaction() as session:
                found = session.get_one(Occurrence, queued.id)
                return found if found.run_id else None

        now_started = poll(started, timeout=60, what="the queued occurrence to start")
        assert now_started.status == "fired"
        assert now_started.reason.endswith("; started when the previous run ended")
        wait_status(database, now_started.run_id, "succeeded")
    with database.transaction() as session:
        first_run = session.get_one(Run, first.run_id)
        second_run = session.get_one(Run, now_started.run_id)
        assert first_run.finished_at is not None
        assert second_run.created_at >= first_run.finished_at
        outcomes = {
            o.id: o.outcome
            for o in session.execute(select(Occurrence).where(Occurrence.job_id == job_id))
            .scalars()
            .all()
        }
    assert outcomes == {first.id: "succeeded", queued.id: "succeeded", third.id: None}
    queue.close()


def test_overlap_allow_runs_side_by_side(database: Database) -> None:
    """allow: each time starts its own run even while the previous one is in progress."""
    clock = _near_real_time()
    queue = DatabaseQueue(database)
    sched = Scheduler(database, queue, clock=clock)
    job_id = scheduled(
        database, sched, "allow", "* * * * *", steps=_delay("PT1H"), overlap_policy="allow"
    )
    with running_worker(database):
        first = _next_minute(database, sched, clock, job_id)
        assert first.run_id
        wait_status(database, first.run_id, "waiting")
        second = _next_minute(database, sched, clock, job_id)
        assert second.status == "fired"
        assert second.run_id
        wait_status(database, second.run_id, "waiting")
        assert wait_status(database, first.run_id, "waiting")  # both in progress at once
    queue.close()


# --- skips with a reason -------------------------------------------------------------------------
def test_unhealthy_connection_skips_naming_it(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """A workflow whose step uses an unhealthy connection: the occurrence is skipped, naming
    the connection and why; once it is connected again the next one fires."""
    with database.transaction() as session:
        application = create_application(session, ALICE, ApplicationCreate(name="Acme CRM"))
        connection = connections.create_connection(
            session,
            ALICE,
            application.id,
            ConnectionCreate.model_validate({"name": "crm", "base_url": "https://crm.example.com"}),
        )
        app_id, connection_id = application.id, connection.id
    job_id = scheduled(
        database,
        sched,
        "crm sync",
        "0 * * * *",
        application=app_id,
        steps=[
            {
                "id": "call",
                "type": "http",
                "config": {"connection": "crm", "method": "GET", "path": "/users"},
            }
        ],
    )
    with database.transaction() as session:
        connections.set_status(
            session,
            connections.get_connection(session, connection_id),
            ConnectionStatus.UNHEALTHY,
            "health check failed: HTTP 503",
        )
    follow(database, sched, clock, at("2026-03-02T11:30:00+00:00"))
    (skipped,) = occurrences(database, job_id)
    assert (skipped.status, skipped.run_id) == ("skipped", None)
    assert skipped.reason == (
        "connection 'crm' is unhealthy: health check failed: HTTP 503 — fix it (Test "
        "connection) and use Run now"
    )
    with database.transaction() as session:
        connections.set_status(
            session,
            connections.get_connection(session, connection_id),
            ConnectionStatus.CONNECTED,
            None,
        )
    follow(database, sched, clock, at("2026-03-02T12:30:00+00:00"))
    assert [o.status for o in occurrences(database, job_id)] == ["skipped", "fired"]


def test_paused_job_records_skipped_occurrences_naming_who_paused(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """Paused: every scheduled time is a skipped occurrence naming who paused it and when —
    on time or after downtime; resumed, the next time fires."""
    job_id = scheduled(database, sched, "paused", "0 * * * *", overlap_policy="allow")
    with database.transaction() as session:
        job = jobs.set_status(session, ALICE, job_id, JobStatus.PAUSED)
        paused_at = job.status_changed_at
    follow(database, sched, clock, at("2026-03-02T12:30:00+00:00"))
    clock.set(at("2026-03-02T15:30:00+00:00"))  # a downtime while paused: still "paused"
    sched.tick()
    found = occurrences(database, job_id)
    reason = f"the job is paused (by alice@example.com at {paused_at})"
    assert [(o.scheduled_for.hour, o.status, o.reason) for o in found] == [
        (hour, "skipped", reason) for hour in (11, 12, 13, 14, 15)
    ]
    with database.transaction() as session:
        jobs.set_status(session, ALICE, job_id, JobStatus.ENABLED)
    follow(database, sched, clock, at("2026-03-02T16:30:00+00:00"))
    last = occurrences(database, job_id)[-1]
    assert (last.scheduled_for.hour, last.status) == (16, "fired")


def test_disabled_job_has_no_occurrences_and_restarts_from_now(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """Disabled means off: no occurrence at all, never overdue; enabled again, it starts from
    the next time after now (the disabled past is not caught up)."""
    job_id = scheduled(database, sched, "off", "0 * * * *")
    with database.transaction() as session:
        jobs.set_status(session, ALICE, job_id, JobStatus.DISABLED)
    for hour in (11, 12, 13):
        clock.set(at(f"2026-03-02T{hour}:10:00+00:00"))
        assert sched.tick().occurrences == []
        with database.transaction() as session:
            assert mark_overdue(session, clock.now) == []
    assert occurrences(database, job_id) == []
    with database.transaction() as session:
        jobs.set_status(session, ALICE, job_id, JobStatus.ENABLED)
    next_at = job_row(database, job_id).next_fire_at
    assert next_at is not None
    assert next_at > utcnow()  # from now (real time), not 11:00


# --- overdue -------------------------------------------------------------------------------------
def _overdue_notes(db: Database, job_id: str) -> list[Notification]:
    with db.transaction() as session:
        return list(
            session.execute(
                select(Notification).where(
                    Notification.kind == "job_overdue", Notification.target_id == job_id
                )
            ).scalars()
        )


def test_overdue_flagged_once_and_cleared_by_the_next_handled_occurrence(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """The scheduler stops: past the grace period the job is overdue with one job_overdue
    notification (not one per check); the scheduler back, the occurrence is handled and the
    flag and notification clear."""
    job_id = scheduled(database, sched, "watched", "0 * * * *")
    for minute, flagged in ((4, []), (6, [job_id]), (30, [])):
        with database.transaction() as session:
            assert mark_overdue(session, at(f"2026-03-02T11:{minute:02}:00+00:00")) == (flagged)
    job = job_row(database, job_id)
    assert job.overdue_since == at("2026-03-02T11:00:00+00:00")
    (note,) = _overdue_notes(database, job_id)
    assert note.resolved_at is None
    assert "'watched' is overdue" in note.title
    with database.transaction() as session:
        (shown,) = jobs.job_views(session, jobs.list_jobs(session, overdue=True).items)
        assert shown["overdue"] is True
        assert shown["overdue_since"] == at("2026-03-02T11:00:00+00:00")

    clock.set(at("2026-03-02T11:30:00+00:00"))
    sched.tick()  # back: 11:00 is caught up (run_once, inside the 1 h window)
    assert job_row(database, job_id).overdue_since is None
    (note,) = _overdue_notes(database, job_id)
    assert note.resolved_at is not None
    assert [o.status for o in occurrences(database, job_id)] == ["fired"]


def test_worker_tick_flags_an_overdue_job(database: Database, sched: Scheduler) -> None:
    """Workers run the overdue check on their timer tick (real time): a job whose occurrence
    is 10 min late with a 5 min grace is flagged, with one notification."""
    job_id = scheduled(database, sched, "late", "0 * * * *")
    late = utcnow() - dt.timedelta(minutes=10)
    with database.transaction() as session:
        session.execute(update(Job).where(Job.id == job_id).values(next_fire_at=late))
    worker = Worker(database, sched.queue, concurrency=1)
    try:
        worker.tick_once()
        worker.tick_once()
    finally:
        worker.http.close()
    job = job_row(database, job_id)
    assert job.overdue_since is not None
    assert abs((job.overdue_since - late).total_seconds()) < 0.001
    assert len(_overdue_notes(database, job_id)) == 1


# --- Run now -------------------------------------------------------------------------------------
ROUTED: list[dict[str, Any]] = [
    # Run now takes `ok`; a scheduled occurrence takes `broken` (a permanent failure)
    {
        "id": "route",
        "type": "set",
        "config": {"values": {"manual": "{{ input.manual }}"}},
        "branches": [{"when": "input.manual", "next": "ok"}],
        "next": "broken",
    },
    {"id": "ok", "type": "set", "config": {"values": {"fine": True}}},
    {"id": "broken", "type": "delay", "config": {"until": "not-a-time"}},
]


def test_run_now_while_paused_and_the_health_note(database: Database) -> None:
    """Run now is a manual occurrence with its run, allowed while paused; when it succeeds
    while the scheduled occurrence failed, the job detail says so."""
    # 90 s behind real time: the scheduled occurrence comes before Run now's (real) time, and
    # the next one stays within its 5 min grace for the workers' overdue check
    clock = _near_real_time(-dt.timedelta(seconds=90))
    queue = DatabaseQueue(database)
    sched = Scheduler(database, queue, clock=clock)
    job_id = scheduled(database, sched, "routed", "* * * * *", steps=ROUTED)
    scheduled_one = _next_minute(database, sched, clock, job_id)
    with running_worker(database):
        assert scheduled_one.run_id
        wait_status(database, scheduled_one.run_id, "failed")
        with database.transaction() as session:
            jobs.set_status(session, ALICE, job_id, JobStatus.PAUSED)
            manual = scheduler.run_now(session, ALICE, queue, job_id)
        assert (manual.status, manual.manual, manual.created_by) == (
            "fired",
            True,
            "alice@example.com",
        )
        assert manual.run_id
        wait_status(database, manual.run_id, "succeeded")
    with database.transaction() as session:
        job = session.get_one(Job, job_id)
        assert job.status == JobStatus.PAUSED
        view = jobs.job_view(session, job)
        run = session.get_one(Run, manual.run_id)
        assert run.trigger == "manual"
        assert run.input["manual"] is True
    assert view["last_occurrence"]["manual"] is True
    assert view["last_occurrence"]["outcome"] == "succeeded"
    assert [(o.manual, o.outcome) for o in occurrences(database, job_id)] == [
        (False, "failed"),
        (True, "succeeded"),
    ]
    note = view["health_note"]
    assert note is not None
    assert note.startswith("Run now succeeded")
    assert "last scheduled occurrence" in note
    assert "failed" in note
    queue.close()


def test_run_now_skips_with_the_reason_when_a_run_is_in_progress(
    database: Database, sched: Scheduler
) -> None:
    """Run now follows the overlap policy too: with the previous run still queued it is a
    skipped manual occurrence naming that run (nothing is silent)."""
    job_id = scheduled(database, sched, "busy", "0 * * * *")
    with database.transaction() as session:
        first = scheduler.run_now(session, ALICE, sched.queue, job_id)
    with database.transaction() as session:
        second = scheduler.run_now(session, ALICE, sched.queue, job_id)
    assert first.status == "fired"
    assert (second.status, second.manual) == ("skipped", True)
    assert (
        second.reason == f"overlap: run {first.run_id} of the previous occurrence is still queued"
    )


# --- leadership ----------------------------------------------------------------------------------
def test_one_leader_at_a_time_and_takeover_after_the_lease(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """Two schedulers: only the lease holder acts; when it stops renewing, the other takes
    over after the lease expires (a new term); a released lease is taken at once."""
    other = Scheduler(database, sched.queue, clock=clock, holder="scheduler-b", lease_seconds=15)
    assert sched.tick().leader
    assert not other.tick().leader
    clock.set(clock.now + dt.timedelta(seconds=10))
    assert not other.tick().leader
    clock.set(clock.now + dt.timedelta(seconds=6))  # 16 s since a's last renewal
    assert other.tick().leader
    assert not sched.tick().leader
    other.release()
    assert sched.tick().leader
    from grantflow.schedules.models import SchedulerLease

    with database.transaction() as session:
        lease = session.get_one(SchedulerLease, "scheduler")
        assert (lease.holder, lease.term) == ("scheduler-a", 3)


def test_scheduled_runs_are_made_like_start_run(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """The scheduler writes runs in bulk (no flush per run); each is what engine start_run
    makes for the same workflow: same columns, first step, queued event, queue item."""
    from grantflow.engine.models import RunEvent, StepRun
    from grantflow.engine.runs import start_run
    from grantflow.queue.models import QueueItem

    job_id = scheduled(database, sched, "alike", "0 * * * *", steps=ROUTED)
    follow(database, sched, clock, at("2026-03-02T11:30:00+00:00"))
    (occurrence,) = occurrences(database, job_id)
    workflow_id = job_row(database, job_id).workflow_id
    assert workflow_id
    with database.transaction() as session:
        reference = start_run(
            session,
            ALICE,
            DatabaseQueue(database),
            workflow_id,
            dict(session.get_one(Run, occurrence.run_id).input),
            trigger="schedule",
        ).id

    def shape(run_id: str) -> dict[str, Any]:
        with database.transaction() as session:
            run = session.get_one(Run, run_id)
            columns = {
                c.key: getattr(run, c.key)
                for c in Run.__table__.columns
                if c.key not in {"id", "created_by", "created_at", "last_progress_at"}
            }
            for moment in ("deadline_at", "stuck_at"):  # as offsets from creation
                columns[moment] = columns[moment] - run.created_at
            steps = [
                (s.step_id, s.step_type, s.sequence, s.status, s.side_effects)
                for s in session.execute(select(StepRun).where(StepRun.run_id == run_id)).scalars()
            ]
            events = [
                (e.kind, e.data)
                for e in session.execute(
                    select(RunEvent).where(RunEvent.run_id == run_id)
                ).scalars()
            ]
            queued = session.get(QueueItem, run_id)
            return {
                "run": columns,
                "steps": steps,
                "events": events,
                "queued": queued is not None and queued.lease_owner is None,
            }

    assert occurrence.run_id
    mine, theirs = shape(occurrence.run_id), shape(reference)
    assert abs(mine["run"].pop("deadline_at") - theirs["run"].pop("deadline_at")) < dt.timedelta(
        milliseconds=50
    )
    assert mine == theirs
    assert mine["steps"] == [("route", "set", 1, "pending", False)]
    assert mine["queued"] is True


# --- robustness ----------------------------------------------------------------------------------
def test_a_long_downtime_is_recorded_over_several_ticks(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """Two days down with an every-minute job: each of the 2,880 times gets its occurrence
    (about 1,000 per tick, nothing silently dropped); run_once catches up once inside the window."""
    job_id = scheduled(
        database, sched, "minutely", "* * * * *", overlap_policy="allow", grace_seconds=30
    )
    clock.set(at("2026-03-04T10:00:01+00:00"))  # 10:00 is 1 s late: within its 30 s grace
    ticks = []
    while True:
        result = sched.tick()
        ticks.append(len(result.occurrences))
        if not result.more:
            break
    assert ticks == [1001, 1001, 878]
    found = occurrences(database, job_id)
    assert len(found) == 2880
    assert len({o.scheduled_for for o in found}) == 2880
    statuses: dict[str, int] = {}
    for o in found:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    assert statuses == {"skipped": 2820, "missed": 58, "fired": 2}
    catch_up, on_time = (o for o in found if o.status == "fired")
    assert catch_up.scheduled_for == at("2026-03-04T09:59:00+00:00")
    assert catch_up.reason == "a catch-up run after downtime (misfire policy run_once)"
    assert (on_time.scheduled_for, on_time.reason) == (at("2026-03-04T10:00:00+00:00"), None)
    assert job_row(database, job_id).next_fire_at == at("2026-03-04T10:01:00+00:00")


def test_a_failing_job_does_not_stop_the_others(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """A job whose stored cron cannot be read fails alone (logged, retried each tick, and in
    time flagged overdue); the other jobs of its batch still fire. (A workflow job's cron is
    put back from its workflow's trigger by the next sync, and the time it missed meanwhile
    still gets its occurrence.)"""
    good = scheduled(database, sched, "good", "0 * * * *", overlap_policy="allow")
    healed = scheduled(database, sched, "healed", "0 * * * *", overlap_policy="allow")
    with database.transaction() as session:
        broken = jobs.create_built_in(
            session,
            ALICE,
            jobs.BuiltInJobCreate(name="broken", kind="control_evaluation", cron="0 * * * *"),
        ).id
        session.execute(
            update(Job)
            .where(Job.id.in_([broken, healed]))
            .values(cron="99 * * * *", next_fire_at=at("2026-03-02T11:00:00+00:00"))
        )
    clock.set(at("2026-03-02T11:00:01+00:00"))
    assert len(sched.tick().occurrences) == 1
    assert [o.status for o in occurrences(database, good)] == ["fired"]
    assert occurrences(database, broken) == []
    assert occurrences(database, healed) == []
    assert job_row(database, healed).cron == "0 * * * *"  # synced from the workflow
    # the 11:00 it could not handle while broken is still due: it keeps its occurrence
    assert job_row(database, healed).next_fire_at == at("2026-03-02T11:00:00+00:00")
    clock.set(at("2026-03-02T11:10:00+00:00"))
    assert len(sched.tick().occurrences) == 1
    [late] = occurrences(database, healed)
    assert (late.scheduled_for, late.status) == (at("2026-03-02T11:00:00+00:00"), "fired")
    assert job_row(database, healed).next_fire_at == at("2026-03-02T12:00:00+00:00")
    with database.transaction() as session:
        assert mark_overdue(session, clock.now) == [broken]


def test_a_time_already_recorded_is_stepped_over(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """An occurrence another scheduler already recorded for the due time (the unique key
    refuses a second): the batch is redone job by job, that time is left as it was, the job
    moves on, and the rest of the batch fires."""
    first = scheduled(database, sched, "first", "0 * * * *")
    second = scheduled(database, sched, "second", "0 * * * *")
    with database.transaction() as session:
        session.add(
            Occurrence(
                job_id=first,
                scheduled_for=at("2026-03-02T11:00:00+00:00"),
                status="fired",
                created_by="scheduler-b",
            )
        )
    clock.set(at("2026-03-02T11:00:01+00:00"))
    sched.tick()
    assert [(o.status, o.created_by) for o in occurrences(database, first)] == [
        ("fired", "scheduler-b")
    ]
    assert [o.status for o in occurrences(database, second)] == ["fired"]
    assert job_row(database, first).next_fire_at == at("2026-03-02T12:00:00+00:00")


def test_a_workflow_no_longer_scheduled_disables_its_job(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """Republished with a manual trigger, the workflow's job is disabled by the scheduler (no
    more occurrences, no runs of a manual workflow on the old cron); scheduled again, it is
    enabled again from the next time."""
    job_id = scheduled(database, sched, "switching", "0 * * * *")
    document: dict[str, Any] = {"name": "switching", "trigger": {"type": "manual"}}
    publish(database, {**document, "steps": SET_STEP})
    sched.tick()
    job = job_row(database, job_id)
    assert (job.status, job.status_changed_by) == ("disabled", "system:scheduler")
    follow(database, sched, clock, at("2026-03-02T13:30:00+00:00"))
    assert occurrences(database, job_id) == []
    publish(
        database,
        {
            **document,
            "trigger": {"type": "schedule", "cron": "30 * * * *", "timezone": "UTC"},
            "steps": SET_STEP,
        },
    )
    sched.tick()
    job = job_row(database, job_id)
    assert (job.status, job.cron) == ("enabled", "30 * * * *")
    assert job.next_fire_at == at("2026-03-02T14:30:00+00:00")


def test_a_due_time_survives_a_cron_change_before_the_scheduler_handled_it(
    database: Database, sched: Scheduler, clock: Clock
) -> None:
    """The 11:00 of the old schedule was due when a new version changed the cron (the API
    syncs jobs on every read): it still gets its occurrence; nothing is skipped silently."""
    job_id = scheduled(database, sched, "rescheduled", "0 * * * *")
    assert job_row(database, job_id).next_fire_at == at("2026-03-02T11:00:00+00:00")
    clock.set(at("2026-03-02T11:30:00+00:00"))  # the scheduler was down at 11:00
    publish(
        database,
        {
            "name": "rescheduled",
            "trigger": {"type": "schedule", "cron": "45 * * * *", "timezone": "UTC"},
            "steps": SET_STEP,
        },
    )
    with database.transaction() as session:
        jobs.sync_workflow_jobs(session, clock())
    assert job_row(database, job_id).cron == "45 * * * *"
    sched.tick()
    recorded = {o.scheduled_for: o.status for o in occurrences(database, job_id)}
    assert at("2026-03-02T11:00:00+00:00") in recorded
    assert job_row(database, job_id).next_fire_at == at("2026-03-02T11:45:00+00:00")
