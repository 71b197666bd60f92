"""The Valkey/Redis transport: the database keeps every run's queue item and lease (the source
of truth), and a Redis Stream carries only "this run is ready" to the workers, which block on
it in a consumer group instead of polling.

- Announcing: once the transaction that made a run ready commits, its id is added to the
  stream, unless an unread entry for it is there already (a marker key, set with the entry).
- Taking: a worker reads entries (XREADGROUP), then leases the runs in the database in one
  statement (`DatabaseQueue.claim_these`); an entry whose run finished, is not due or is held
  by another worker is acknowledged and dropped. The entry of a run taken stays pending until
  the worker's turn on the run ends; the heartbeat keeps it fresh.
- A worker that died leaves pending entries: once idle for a lease, another worker claims
  them (XAUTOCLAIM) and leases the runs, whose database leases have run out by then.
- The reconciler (one per fleet, elected with a Redis lock) announces every ready run of the
  database each second: timers that came due, runs whose worker died, and everything after
  Valkey lost its data. Announcing twice is harmless: the database lease decides.

Valkey down: runs are still accepted (the queue item is written; the announcement fails and
is logged); `health()` says since when; once Valkey is back, the reconciler announces them.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Collection
from typing import Any, cast

import redis
import structlog
from sqlalchemy.orm import Session

from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import TransportHealth
from grantflow.redaction import redact_url
from grantflow.store.after_commit import after_commit
from grantflow.store.base import utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.queue")

GROUP = "grantflow-workers"
MARKER_TTL_MS = 10 * 60 * 1000  # a safety net: a marker normally goes when its entry is read
RECONCILE_BATCH = 1000
MAX_BLOCK_SECONDS = 5.0  # one idle read, well inside the socket timeout (the caller loops)
_SKIP_AFTER_FAILURE = 2.0  # seconds an announcement is not tried after one failed (API latency)

# KEYS[1]: the stream; ARGV[1]: the marker's lifetime; ARGV[2..]: run ids. A run with an unread
# entry is not added again.
_ANNOUNCE = """
local added = 0
for i = 2, #ARGV do
  if redis.call('SET', KEYS[1] .. ':sent:' .. ARGV[i], '1', 'NX', 'PX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'run', ARGV[i])
    added = added + 1
  end
end
return added
"""
# KEYS[1]: the reconciler's lock; ARGV: this worker, the lock's lifetime. 1: this one leads.
_LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1]: the reconciler's lock; ARGV[1]: this worker. A stopping leader hands over at once.
_STEP_DOWN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Entry = tuple[str, str]  # (stream entry id, run id)


class StreamQueue(DatabaseQueue):
    kind = "redis"
    notifies = False  # workers block on the stream; nobody LISTENs
    reconciles = True

    def __init__(
        self,
        database: Database,
        url: str,
        *,
        prefix: str = "grantflow",
        reconcile_seconds: float = 1.0,
    ) -> None:
        super().__init__(database)
        self.location = redact_url(url)
        self.reconcile_seconds = reconcile_seconds
        self.redis = redis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=10.0, decode_responses=True
        )
        self.stream = f"{prefix}:queue:ready"
        self._lock_key = f"{prefix}:queue:reconciler"
        self._probe_key = f"{prefix}:queue:health"
        self._announce = self.redis.register_script(_ANNOUNCE)
        self._lead = self.redis.register_script(_LEAD)
        self._step_down = self.redis.register_script(_STEP_DOWN)
        self._consumer: str | None = None
        self._inbox: collections.deque[Entry] = collections.deque()
        self._held: dict[str, list[str]] = {}  # run id -> its pending entries
        self._held_lock = threading.Lock()
        self._last_autoclaim = 0.0
        self._state_lock = threading.Lock()
        self.down_since: dt.datetime | None = None
        self._last_error: str | None = None
        self._last_failure = 0.0
        self._leading = False  # this worker is the elected reconciler

    # --- announcing ---------------------------------------------------------------------------
    def announce(self, session: Session, run_ids: list[str]) -> None:
        if not run_ids:
            return
        # (all of a transaction's runs in one call, less those of a savepoint rolled back)
        after_commit(session, self.announce_now, *run_ids)

    def announce_now(self, run_ids: list[str]) -> int:
        """Add the runs to the stream (those without an unread entry); how many were added.
        A failure is recorded and logged, never raised: the runs stay queued in the database
        and the reconciler announces them once Valkey is back."""
        if not run_ids or self._recently_failed():
            return 0
        try:
            added = int(self._announce(keys=[self.stream], args=[MARKER_TTL_MS, *run_ids]))
        except redis.RedisError as exc:
            self._seen_down(exc)
            return 0
        self._seen_up()
        return added

    # --- taking -------------------------------------------------------------------------------
    def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[str]:
        self._consumer = worker_id
        entries: list[Entry] = []
        while self._inbox and len(entries) < limit:
            entries.append(self._inbox.popleft())
        try:
            if len(entries) < limit and self._autoclaim_due(lease_seconds):
                entries += self._autoclaim(worker_id, limit - len(entries), lease_seconds)
            if len(entries) < limit:
                entries += self._read(worker_id, limit - len(entries), block_ms=None)
        except redis.RedisError as exc:
            self._seen_down(exc)
        if not entries:
            return []
        by_run: dict[str, list[str]] = {}
        for entry_id, run_id in entries:
            by_run.setdefault(run_id, []).append(entry_id)
        taken = self.claim_these(worker_id, list(by_run), lease_seconds)
        with self._held_lock:
            for run_id in taken:
                self._held[run_id] = self._held.get(run_id, []) + by_run.pop(run_id)
        self._acknowledge([entry for ids in by_run.values() for entry in ids])  # not ours
        return taken

    def wait(self, timeout: float) -> None:
        """Block on the stream for one entry (the caller has a free slot) or `timeout`."""
        if self._inbox:
            return
        consumer = self._consumer
        if consumer is None:  # (not claimed yet: nothing to read as)
            self._closed.wait(timeout)
            return
        try:
            block_ms = max(1, int(min(timeout, MAX_BLOCK_SECONDS) * 1000))
            self._inbox.extend(self._read(consumer, 1, block_ms=block_ms))
        except redis.RedisError as exc:
            self._seen_down(exc)
            self._closed.wait(min(timeout, 1.0))

    def done(self, run_id: str) -> None:
        with self._held_lock:
            ids = self._held.pop(run_id, [])
        self._acknowledge(ids)

    def extend(self, worker_id: str, lease_seconds: float, run_ids: Collection[str]) -> None:
        super().extend(worker_id, lease_seconds, run_ids)
        with self._held_lock:
            ids = [entry for held in self._held.values() for entry in held]
        if ids:  # still ours: not idle, so not claimed away while the database lease holds
            try:
                self.redis.xclaim(self.stream, GROUP, worker_id, 0, cast(Any, ids), justid=True)
            except redis.RedisError as exc:
                self._seen_down(exc)

    def release(self, worker_id: str) -> None:
        super().release(worker_id)  # (announces what it hands back)
        leftover = list(self._inbox)
        self._inbox.clear()
        with self._held_lock:
            held = [entry for ids in self._held.values() for entry in ids]
            self._held.clear()
        self._acknowledge([entry_id for entry_id, _ in leftover] + held)
        self.announce_now([run_id for _, run_id in leftover])  # read, not taken: announce again
        # (if this fails, its pending entries, if any, are claimed by others after a lease,
        # and another worker leads once its lock runs out)
        with contextlib.suppress(redis.RedisError):
            self.redis.xgroup_delconsumer(self.stream, GROUP, worker_id)
            if self._leading:
                self._step_down(keys=[self._lock_key], args=[worker_id])
                self._leading = False

    def next_due(self) -> dt.datetime | None:
        return None  # timers come due through the reconciler: an idle worker reads nothing

    def _read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        try:
            answer: Any = self.redis.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._create_group()  # Valkey lost its data (or first use): start the group anew
            return []
        self._seen_up()
        entries = [(eid, fields.get("run", "")) for _, items in answer for eid, fields in items]
        return self._unmark(entries)

    def _autoclaim_due(self, lease_seconds: float) -> bool:
        now = time.monotonic()
        if now - self._last_autoclaim < max(lease_seconds / 3, 0.2):
            return False
        self._last_autoclaim = now
        return True

    def _autoclaim(self, consumer: str, count: int, lease_seconds: float) -> list[Entry]:
        """Entries a dead worker left pending for a lease: ours now (their runs' database
        leases have run out by then, so we can take them)."""
        try:
            answer: Any = self.redis.xautoclaim(
                self.stream, GROUP, consumer, int(lease_seconds * 1000), "0-0", count=count
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._create_group()
            return []
        entries = [(entry_id, fields.get("run", "")) for entry_id, fields in answer[1] if fields]
        if entries:
            log.info("queue.entries_reclaimed", count=len(entries), worker=consumer)
        return self._unmark(entries)

    def _unmark(self, entries: list[Entry]) -> list[Entry]:
        """Read: the runs may be announced again (their markers go)."""
        if entries:
            self.redis.delete(*{f"{self.stream}:sent:{run_id}" for _, run_id in entries})
        return entries

    def _acknowledge(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.stream, GROUP, *entry_ids)
                pipe.xdel(self.stream, *entry_ids)
                pipe.execute()
        except redis.RedisError as exc:  # left pending: claimed and dropped later
            self._seen_down(exc)

    def _create_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
            log.info("queue.group_created", stream=self.stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- the reconciler -----------------------------------------------------------------------
    def reconcile(self, worker_id: str) -> int:
        """Once per `reconcile_seconds` on every worker; only the elected one works: it
        announces every ready run of the database. How many it added to the stream."""
        try:
            lease_ms = int(max(self.reconcile_seconds * 3, 3.0) * 1000)
            self._leading = bool(self._lead(keys=[self._lock_key], args=[worker_id, lease_ms]))
            if not self._leading:
                return 0
            self._create_group()
        except redis.RedisError as exc:
            self._leading = False
            self._seen_down(exc)
            return 0
        self._seen_up()
        added = self.announce_now(self.ready_ids(RECONCILE_BATCH))
        if added:
            log.info("queue.reconciled", announced=added)
        return added

    def runs_timers(self) -> bool:
        """The elected reconciler runs the fleet's timer chores: one worker's queries instead
        of every worker's. While Valkey is down nobody is elected: then every worker does."""
        return self._leading or self.down_since is not None

    # --- health -------------------------------------------------------------------------------
    def health(self) -> TransportHealth:
        entries = pending = None
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                # a write, as announcing is: a full Valkey (noeviction) answers reads only
                pipe.set(self._probe_key, "1", px=60_000)
                pipe.xlen(self.stream)
                pipe.xinfo_groups(self.stream)
                probe, length, groups = pipe.execute(raise_on_error=False)  # (no stream: empty)
            if isinstance(probe, redis.RedisError):
                raise probe
            entries = int(length) if isinstance(length, int) else 0
            pending = sum(int(g["pending"]) for g in groups) if isinstance(groups, list) else 0
        except redis.RedisError as exc:
            self._seen_down(exc)
        else:
            self._seen_up()
        with self._state_lock:
            return TransportHealth(
                kind=self.kind,
                up=self.down_since is None,
                down_since=self.down_since,
                error=self._last_error if self.down_since else None,
                location=self.location,
                entries=entries,
                pending_entries=pending,
            )

    def _recently_failed(self) -> bool:
        return (
            self.down_since is not None
            and time.monotonic() - self._last_failure < _SKIP_AFTER_FAILURE
        )

    def _seen_down(self, exc: BaseException) -> None:
        with self._state_lock:
            self._last_failure = time.monotonic()
            self._last_error = f"{type(exc).__name__}: {exc}"
            if self.down_since is not None:
                return
            self.down_since = utcnow()
        log.warning("queue.transport.down", location=self.location, error=self._last_error)

    def _seen_up(self) -> None:
        if self.down_since is None:
            return
        with self._state_lock:
            since, self.down_since = self.down_since, None
        log.info("queue.transport.up", location=self.location, down_since=since.isoformat())

    def close(self) -> None:
        super().close()
        self.redis.close()
