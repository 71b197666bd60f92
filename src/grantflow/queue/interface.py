"""The queue interface every transport implements."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from grantflow.queue.workers import WorkerState


@dataclass(frozen=True)
class QueueStats:
    ready: int  # runs a worker could take now
    scheduled: int  # runs parked on a timer or a deadline
    leased: int  # runs a worker holds
    oldest_ready_age_seconds: float | None


@dataclass(frozen=True)
class TransportHealth:
    """Whether the transport that carries "this run is ready" can be reached. The database
    transport is the database itself (readiness checks that); a Valkey/Redis transport can be
    down while the database is up: runs are then accepted and stay queued until it returns."""

    kind: str  # "database" or "redis"
    up: bool
    down_since: dt.datetime | None = None  # when this process first failed to reach it
    error: str | None = None  # the last error's class and message, without credentials
    location: str | None = None  # where it is (a URL without its password)
    entries: int | None = None  # announcements not yet acknowledged (Valkey: the stream)
    pending_entries: int | None = None  # of those, read by a worker and not yet acknowledged


class Queue(Protocol):
    kind: str  # the transport: "database" or "redis"
    reconciles: bool  # announces the database's ready runs again (`reconcile`), periodically
    reconcile_seconds: float

    def schedule(self, session: Session, run_id: str, at: dt.datetime | None = None) -> None:
        """Make the run available at `at` (now when None), in the caller's transaction;
        clears any lease. Wakes sleeping workers after commit."""

    def schedule_many(self, session: Session, run_ids: list[str]) -> None:
        """Every run in `run_ids` available now, in the caller's transaction (one wake-up)."""

    def remove(self, session: Session, run_id: str) -> None:
        """The run needs no worker any more (terminal)."""

    def holds(self, session: Session, run_id: str, worker_id: str) -> bool:
        """Does `worker_id` still hold the lease on the run? The run's queue entry stays locked
        until the caller's transaction ends (nobody claims it meanwhile)."""

    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[str]:
        """Take up to `limit` ready runs, leasing them to `worker_id`."""

    def claimed_row(self, run_id: str) -> Sequence[Any] | None:
        """The row a read registered with the claim found for the run (`read_with_claim` of
        the database transport on PostgreSQL), handed over once; None when there is none."""

    def extend(self, worker_id: str, lease_seconds: float, run_ids: Collection[str]) -> None:
        """Renew the leases `worker_id` holds on `run_ids`, the runs it is advancing
        (heartbeat). A lease on a run it no longer advances runs out, and another worker
        takes the run."""

    def hand_back(self, worker_id: str, run_ids: Collection[str]) -> list[str]:
        """Make those of `run_ids` that `worker_id` holds available now (a turn that ended
        without settling its run, e.g. on a lost database connection); the runs handed back."""

    def release(self, worker_id: str) -> None:
        """Hand back every run `worker_id` holds, available now (graceful shutdown)."""

    def done(self, run_id: str) -> None:
        """This process's turn on a claimed run ended (it waits, ended or was handed back)."""

    def wait(self, timeout: float) -> None:
        """Sleep until work may be ready or `timeout` passes; called only by a worker with a
        free slot."""

    def next_due(self) -> dt.datetime | None:
        """When the earliest parked run becomes ready."""

    def stats(self, session: Session | None = None) -> QueueStats:
        """Counts and the oldest ready age; in `session` when given (a caller's transaction:
        on SQLite a second transaction would wait on the caller's own write lock)."""

    def reconcile(self, worker_id: str) -> int:
        """Announce the database's ready runs again (one worker of a fleet does); how many."""

    def runs_timers(self) -> bool:
        """Should this process's worker run the durable-timer chores (grant expiry, e-mail,
        reminders) now? Row locks keep several apart; a fleet can still leave them to one."""

    def health(self) -> TransportHealth:
        """Can the transport be reached now (checked, not remembered)?"""

    def workers(self) -> list[WorkerState]:
        """The workers this transport knows: live ones, and those lost in the last day."""

    def close(self) -> None: ...
