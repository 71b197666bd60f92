"""The database transport: the `queue_items` table, leased with SKIP LOCKED on PostgreSQL (and
the single writer lock on SQLite); wake-ups by LISTEN/NOTIFY and, in-process, an event."""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Collection, Sequence
from typing import Any

import structlog
from sqlalchemy import (
    CTE,
    Select,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from grantflow.queue.interface import QueueStats, TransportHealth
from grantflow.queue.models import QueueItem
from grantflow.queue.workers import WorkerState, fleet
from grantflow.store import native
from grantflow.store.base import UTCDateTime, utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.queue")

_UPSERT = text(
    "INSERT INTO queue_items (run_id, available_at, enqueued_at, deliveries) "
    "VALUES (:run_id, :at, :now, 0) "
    "ON CONFLICT (run_id) DO UPDATE SET available_at = excluded.available_at, "
    "lease_owner = NULL, lease_expires_at = NULL"
)
# PostgreSQL: the same, and the wake-up every listening worker gets when the transaction commits
_UPSERT_AND_NOTIFY = text(
    f"WITH item AS ({_UPSERT.text} RETURNING 1) "
    "SELECT pg_notify('grantflow_queue', :origin) FROM item"
)

_ITEM_VALUES: dict[str, ColumnElement[Any]] = {
    "run_id": bindparam("item_run_id", type_=String()),
    "available_at": bindparam("item_at", type_=UTCDateTime()),
    "enqueued_at": bindparam("item_now", type_=UTCDateTime()),
    "deliveries": literal(0),
}


@functools.cache
def _new_item(notify: bool, source: CTE | None) -> Select[Any]:
    """The queue item of a new run, with the workers' NOTIFY or without; written only for a
    row of `source` when given (a run its caller's statement wrote). Answers how many items it
    wrote. (Cached: a statement's cache key is made once per object.)"""
    if source is None:
        write = insert(QueueItem).values(_ITEM_VALUES)
    else:
        values = select(*(cast(v, v.type) for v in _ITEM_VALUES.values())).select_from(source)
        write = insert(QueueItem).from_select(list(_ITEM_VALUES), values)
    item = write.returning(QueueItem.run_id).cte("item")
    if notify:
        wake = func.pg_notify("grantflow_queue", bindparam("item_origin", type_=String()))
        return select(func.count(wake)).select_from(item)
    return select(func.count()).select_from(item)


# (Sent in the driver's SQL, outside SQLAlchemy's execution: store/native.py.) MATERIALIZED: the
# pick runs once. Inlined into the UPDATE, a plan may run it again per row,
# and each rerun skips the rows already leased and picks more: more runs than `limit`.
# The last row answers `next_due` too: when the earliest parked run becomes ready (the row's
# run_id is NULL), so an idle dispatcher sends one statement, not two. `{read}` and `{nulls}`:
# a read that rides on the claim (`read_with_claim`), or nothing.
_CLAIMING = (
    "WITH picked AS MATERIALIZED (SELECT run_id FROM queue_items "
    "WHERE available_at <= :now AND (lease_owner IS NULL OR lease_expires_at < :now) "
    "ORDER BY available_at LIMIT :limit FOR UPDATE SKIP LOCKED), "
    "claimed AS (UPDATE queue_items SET lease_owner = :worker, lease_expires_at = :expires, "
    "deliveries = queue_items.deliveries + 1 FROM picked "
    "WHERE queue_items.run_id = picked.run_id RETURNING queue_items.run_id) "
    "SELECT claimed.run_id, NULL AS due{read} UNION ALL "
    "SELECT NULL, min(available_at){nulls} FROM queue_items "
    "WHERE lease_owner IS NULL AND available_at > :now"
)
_CLAIM = native.driver_sql(_CLAIMING.format(read=" FROM claimed", nulls=""))
# The given runs, those of them still ready: a transport that announces runs elsewhere
# (queue/streams.py) claims what it was told of; a run finished or held by another worker
# meanwhile is not taken.
_CLAIM_THESE = text(
    "UPDATE queue_items SET lease_owner = :worker, lease_expires_at = :expires, "
    "deliveries = queue_items.deliveries + 1 "
    "WHERE run_id IN :ids AND available_at <= :now "
    "AND (lease_owner IS NULL OR lease_expires_at < :now) RETURNING run_id"
).bindparams(bindparam("ids", expanding=True))


_UNSEEN: Any = object()


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def _oldest_ready(now: dt.datetime, limit: int) -> Select[str]:
    """The ready runs (due, and not leased or their lease ran out), oldest first."""
    return (
        select(QueueItem.run_id)
        .where(QueueItem.available_at <= now)
        .where((QueueItem.lease_owner.is_(None)) | (QueueItem.lease_expires_at < now))
        .order_by(QueueItem.available_at)
        .limit(limit)
    )


class DatabaseQueue:
    kind = "database"
    reconciles = False  # its items are the announcement: there is nothing to reconcile
    reconcile_seconds = 1.0

    def __init__(self, database: Database) -> None:
        self.database = database
        self._listener: threading.Thread | None = None
        self._closed = threading.Event()
        self._claimed = threading.local()  # the next due time the thread's last claim saw
        self._claim = _CLAIM
        self._claimed_rows: dict[str, Sequence[Any]] = {}  # (read_with_claim's, by run)

    def read_with_claim(self, select: str, columns: int) -> None:
        """PostgreSQL: each run a claim leases comes with the row of `select` (a SELECT of
        `columns` columns correlated to `claimed.run_id`, all NULL when it finds none), read in
        the claim's own statement: a worker's first read of the run without a round trip of
        its own. `claimed_row` hands it over."""
        read = f", also.* FROM claimed LEFT JOIN LATERAL ({select}) also ON true"
        self._claim = native.driver_sql(_CLAIMING.format(read=read, nulls=", NULL" * columns))

    # --- inside a caller's transaction --------------------------------------------------------
    def schedule(self, session: Session, run_id: str, at: dt.datetime | None = None) -> None:
        now = utcnow()
        when = at or now
        params = {"run_id": run_id, "at": self._param(when), "now": self._param(now)}
        if self._wake(session, run_id, when, now):  # one round trip, not two
            session.execute(_UPSERT_AND_NOTIFY, params | {"origin": self.database.origin})
        else:
            session.execute(_UPSERT, params)

    def item_of_new_run(
        self, session: Session, run_id: str, at: dt.datetime, source: CTE | None = None
    ) -> tuple[Select[Any], dict[str, Any]]:
        """PostgreSQL: a statement that writes the queue item of a run its caller creates in
        the same statement (the caller adds its own writes with `add_cte`; `source`: its write
        of the run, when it may write none) and its parameters, with `schedule`'s wake-ups. A
        new run has no item yet: a plain insert. The statement answers how many it wrote."""
        now = utcnow()
        params = {"item_run_id": run_id, "item_at": at, "item_now": now}
        if self._wake(session, run_id, at, now):
            return _new_item(True, source), params | {"item_origin": self.database.origin}
        return _new_item(False, source), params

    def _wake(self, session: Session, run_id: str, when: dt.datetime, now: dt.datetime) -> bool:
        """The wake-ups of a run available at `when`, once the caller's transaction commits.
        True: the caller's statement carries the NOTIFY (PostgreSQL, ready now, workers that
        LISTEN); this process's own workers are woken here in each case."""
        if when > now:  # a timer: this process's idle dispatchers look again when it is due
            self.database.wake_after_commit(session)
            return False
        if self.database.dialect == "postgresql" and self.notifies:
            self.database.wake_after_commit(session)
            return True
        self.announce(session, [run_id])
        return False

    def schedule_many(self, session: Session, run_ids: list[str]) -> None:
        """Every run in `run_ids` available now: one multi-row upsert and one wake-up."""
        now = self._param(utcnow())
        session.execute(_UPSERT, [{"run_id": run_id, "at": now, "now": now} for run_id in run_ids])
        self.announce(session, run_ids)

    # the database transport's workers LISTEN; a transport that announces elsewhere does not
    notifies = True

    def announce(self, session: Session, run_ids: list[str]) -> None:
        """Tell workers, once this transaction commits, that `run_ids` are ready."""
        self.database.notify_queue(session)

    def remove(self, session: Session, run_id: str) -> None:
        session.execute(delete(QueueItem).where(QueueItem.run_id == run_id))

    def holds(self, session: Session, run_id: str, worker_id: str) -> bool:
        # Row-locked: until the caller's transaction ends nobody can claim the run (claims skip
        # locked rows), so what the caller does on the strength of the answer stays true.
        owner = session.execute(
            select(QueueItem.lease_owner).where(QueueItem.run_id == run_id).with_for_update()
        ).scalar_one_or_none()
        return owner == worker_id

    def _param(self, value: dt.datetime) -> Any:
        # Raw SQL bypasses the UTC column type; store what it would store.
        return value.replace(tzinfo=None) if self.database.dialect == "sqlite" else value

    # --- own transactions ---------------------------------------------------------------------
    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[str]:
        now = utcnow()
        if self.database.dialect == "postgresql":
            return self._claim_postgres(worker_id, limit, now, lease_seconds)
        with self.database.transaction() as session:
            ids = list(session.execute(_oldest_ready(now, limit)).scalars())
            if ids:
                session.execute(
                    update(QueueItem)
                    .where(QueueItem.run_id.in_(ids))
                    .values(
                        lease_owner=worker_id,
                        lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                        deliveries=QueueItem.deliveries + 1,
                    )
                )
        return ids

    def _claim_postgres(
        self, worker_id: str, limit: int, now: dt.datetime, lease_seconds: float
    ) -> list[str]:
        """One statement in autocommit (one round trip): rows another worker is claiming are
        skipped, not waited for."""
        params = {
            "worker": worker_id,
            "now": now,
            "expires": now + dt.timedelta(seconds=lease_seconds),
            "limit": limit,
        }
        rows = native.rows(self.database, self._claim, params)
        self._claimed.due = _utc(rows[-1][1])  # (the last row: the next due time)
        for row in rows[:-1]:
            if len(row) > 2:
                self._claimed_rows[row[0]] = tuple(row[2:])
        return [row[0] for row in rows[:-1]]

    def claimed_row(self, run_id: str) -> Sequence[Any] | None:
        return self._claimed_rows.pop(run_id, None)

    def claim_these(self, worker_id: str, run_ids: list[str], lease_seconds: float) -> list[str]:
        """Lease those of `run_ids` that are ready (one statement); the others are skipped."""
        if not run_ids:
            return []
        now = utcnow()
        params = {
            "worker": worker_id,
            "now": self._param(now),
            "expires": self._param(now + dt.timedelta(seconds=lease_seconds)),
            "ids": run_ids,
        }
        if self.database.dialect == "postgresql":
            with self.database.autocommit.connect() as conn:
                return list(conn.execute(_CLAIM_THESE, params).scalars())
        with self.database.transaction() as session:
            return list(session.execute(_CLAIM_THESE, params).scalars())

    def ready_ids(self, limit: int) -> list[str]:
        """The ready runs, oldest first: what a reconciler announces again."""
        now = utcnow()
        with self.database.reads() as session:
            return list(session.execute(_oldest_ready(now, limit)).scalars())

    def reconcile(self, worker_id: str) -> int:
        return 0

    def runs_timers(self) -> bool:
        return True  # every worker: no leader to leave them to

    def done(self, run_id: str) -> None:
        """Nothing to acknowledge: the queue item is the whole record."""

    def health(self) -> TransportHealth:
        return TransportHealth(kind=self.kind, up=True)

    def extend(self, worker_id: str, lease_seconds: float, run_ids: Collection[str]) -> None:
        if not run_ids:
            return
        with self.database.transaction() as session:
            session.execute(
                update(QueueItem)
                .where(QueueItem.lease_owner == worker_id, QueueItem.run_id.in_(run_ids))
                .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
            )

    def hand_back(self, worker_id: str, run_ids: Collection[str]) -> list[str]:
        if not run_ids:
            return []
        with self.database.transaction() as session:
            handed = list(
                session.execute(
                    update(QueueItem)
                    .where(QueueItem.lease_owner == worker_id, QueueItem.run_id.in_(run_ids))
                    .values(lease_owner=None, lease_expires_at=None, available_at=utcnow())
                    .returning(QueueItem.run_id)
                ).scalars()
            )
            self.announce(session, handed)
        return handed

    def release(self, worker_id: str) -> None:
        with self.database.transaction() as session:
            released = list(
                session.execute(
                    update(QueueItem)
                    .where(QueueItem.lease_owner == worker_id)
                    .values(lease_owner=None, lease_expires_at=None, available_at=utcnow())
                    .returning(QueueItem.run_id)
                ).scalars()
            )
            self.announce(session, released)

    def next_due(self) -> dt.datetime | None:
        """When the earliest parked run becomes ready; right after this thread's claim on
        PostgreSQL, what the claim saw (asked once)."""
        seen = self._claimed.__dict__.pop("due", _UNSEEN)
        if seen is not _UNSEEN:
            claimed_due: dt.datetime | None = seen
            return claimed_due
        with self.database.transaction() as session:
            due: dt.datetime | None = session.execute(
                select(func.min(QueueItem.available_at)).where(QueueItem.lease_owner.is_(None))
            ).scalar_one_or_none()
        return _utc(due)

    def stats(self, session: Session | None = None) -> QueueStats:
        if session is None:
            with self.database.transaction() as own:
                return self.stats(own)
        now = utcnow()
        ready_filter = (QueueItem.available_at <= now) & (
            QueueItem.lease_owner.is_(None) | (QueueItem.lease_expires_at < now)
        )
        ready = session.execute(
            select(func.count(), func.min(QueueItem.available_at)).where(ready_filter)
        ).one()
        leased = session.execute(
            select(func.count()).where(
                QueueItem.lease_owner.is_not(None), QueueItem.lease_expires_at >= now
            )
        ).scalar_one()
        total = session.execute(select(func.count()).select_from(QueueItem)).scalar_one()
        oldest = ready[1]
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)
        return QueueStats(
            ready=ready[0],
            leased=leased,
            scheduled=total - ready[0] - leased,
            oldest_ready_age_seconds=(now - oldest).total_seconds() if oldest else None,
        )

    def workers(self) -> list[WorkerState]:
        with self.database.transaction() as session:
            return fleet(session, utcnow())

    # --- waking up ----------------------------------------------------------------------------
    def wait(self, timeout: float) -> None:
        if self._listener is None and self.database.dialect == "postgresql":
            self._listener = threading.Thread(
                target=self._listen, name="queue-listener", daemon=True
            )
            self._listener.start()
        wakeup = self.database.queue_wakeup
        if wakeup.wait(timeout):
            wakeup.clear()

    def _listen(self) -> None:
        """Turn PostgreSQL notifications from other processes into the local wake-up."""
        while not self._closed.is_set():
            try:
                self.database.listen_queue(self.database.queue_wakeup, self._closed)
            except Exception as exc:  # the connection dropped: reconnect after a pause
                log.warning("queue.listen.lost", error=type(exc).__name__)
                self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
