"""A worker: leases ready runs from the queue and advances them on a pool of threads, keeps its
leases alive with heartbeats, and on shutdown finishes or hands back what it holds."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import httpx
import structlog
from sqlalchemy import delete

from grantflow.connections.access import ConnectionAccess
from grantflow.connections.crypto import Keyring
from grantflow.connections.health import check_due
from grantflow.connections.outbound import OutboundPolicy, guarded_client
from grantflow.engine import hooks, take
from grantflow.engine.interpreter import Interpreter
from grantflow.queue import workers
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.interface import Queue
from grantflow.queue.models import Worker as WorkerRow
from grantflow.store.base import utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.worker")


class Worker:
    def __init__(
        self,
        database: Database,
        queue: Queue,
        *,
        concurrency: int = 4,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        worker_id: str | None = None,
        keyring: Keyring | None = None,
        outbound: OutboundPolicy | None = None,
        health_check_seconds: float | None = None,
        tick_seconds: float = 5.0,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.health_check_seconds = health_check_seconds
        self.database = database
        self.queue = queue
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        self._slots = threading.Semaphore(concurrency)
        self._slot_freed = threading.Event()
        self._in_hand: set[str] = set()  # runs claimed and not yet done: their leases renewed
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._lanes: set[str] = set()  # the timers' lanes whose threads started
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="run")
        # Every outbound call goes through the guard; redirects are followed and re-checked.
        self.http = guarded_client(
            outbound or OutboundPolicy(),
            follow_redirects=True,
            max_redirects=5,
            limits=httpx.Limits(
                max_connections=concurrency * 4, max_keepalive_connections=concurrency * 2
            ),
        )
        self.connections = ConnectionAccess(database, keyring, self.http)
        if database.dialect == "postgresql" and isinstance(queue, DatabaseQueue):
            # a fresh run is read by its claim: its first step's take needs no read of its own
            queue.read_with_claim(take.READ_WITH_CLAIM, take.READ_COLUMNS)
        self.interpreter = Interpreter(
            database,
            queue,
            self.id,
            self.http,
            stopping=self.stopping,
            connections=self.connections,
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        now = utcnow()
        with self.database.transaction() as session:
            session.merge(
                WorkerRow(
                    id=self.id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    concurrency=self.concurrency,
                    transport=self.queue.kind,
                    started_at=now,
                    heartbeat_at=now,
                    lease_expires_at=now + dt.timedelta(seconds=self.lease_seconds),
                )
            )
        chores = [
            (self._dispatch, "dispatcher"),
            (self._heartbeat, "heartbeat"),
            (self._tick, "timers"),
        ]
        if self.health_check_seconds:
            chores.append((self._maintain, "maintenance"))
        if self.queue.reconciles:
            chores.append((self._reconcile, "reconciler"))
        for target, name in chores:
            thread = threading.Thread(target=target, name=f"worker-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker.started", worker=self.id, concurrency=self.concurrency)

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop claiming; let in-flight steps finish (each run is handed back at its next step
        boundary); then hand back anything still held."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.database.queue_wakeup.set()
        self._slot_freed.set()
        with self._lock:  # (no lane starts once stopping is set)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=grace_seconds)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.queue.release(self.id)
        with self.database.transaction() as session:
            session.execute(delete(WorkerRow).where(WorkerRow.id == self.id))
        self.http.close()
        log.info("worker.stopped", worker=self.id)

    def run_until_signalled(self) -> None:
        """Run in the foreground until SIGTERM or SIGINT, then shut down gracefully."""
        done = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("worker.signal", signal=signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        done.wait()
        self.stop()

    # --- threads ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Claim while runs may be ready: at start, after a claim that filled every free slot,
        after a wake-up (an announcement, a timer set in this process) or the idle timeout. A
        claim that found fewer runs than free slots leaves nothing ready, so a slot freed by a
        finishing run is not a reason to claim again: the next announcement is."""
        while not self.stopping.is_set():
            try:
                free, claimed = self._claim_some()
            except Exception:
                log.exception("worker.claim_failed")
                self.stopping.wait(self.poll_seconds)
                continue
            if free == 0 or claimed == free:  # every slot busy: when one frees, claim again
                continue
            self.queue.wait(self._idle_timeout())

    def _claim_some(self) -> tuple[int, int]:
        """(free slots, runs claimed into them)."""
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        if free == 0:  # a finishing run sets the slot free
            if self._slot_freed.wait(self.poll_seconds):
                self._slot_freed.clear()
            return 0, 0
        # An announcement from here on is seen by the next wait. (Cleared only by a claim: a
        # worker of this process without a free slot leaves it to another that has one.)
        self.database.queue_wakeup.clear()
        ids: list[str] = []
        try:
            ids = self.queue.claim(self.id, free, self.lease_seconds)
        finally:  # (a claim that failed, e.g. the database unreachable, keeps no slot)
            for _ in range(free - len(ids)):
                self._slots.release()
        with self._lock:
            self._in_hand.update(ids)
        for run_id in ids:
            self._pool.submit(self._advance, run_id)
        return free, len(ids)

    def _advance(self, run_id: str) -> None:
        try:
            settled = self.interpreter.advance(run_id)
        except Exception:
            log.exception("worker.advance_failed", run_id=run_id)
            settled = False
        finally:
            with self._lock:
                self._in_hand.discard(run_id)
        try:
            if not settled:  # (its lease, no longer renewed, would run out anyway)
                self.queue.hand_back(self.id, [run_id])
        except Exception:
            log.warning("worker.hand_back_failed", run_id=run_id)
        finally:
            try:
                self.queue.done(run_id)
            except Exception:
                log.exception("worker.done_failed", run_id=run_id)
            self._slots.release()
            self._slot_freed.set()

    def _idle_timeout(self) -> float:
        try:
            due = self.queue.next_due()
        except Exception:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, (due - utcnow()).total_seconds()))

    def _heartbeat(self) -> None:
        interval = max(self.lease_seconds / 3, 0.2)
        while not self.stopping.wait(interval):
            try:
                with self._lock:
                    in_hand = set(self._in_hand)
                self.queue.extend(self.id, self.lease_seconds, in_hand)
                now = utcnow()
                with self.database.transaction() as session:
                    row = session.get(WorkerRow, self.id)
                    if row is not None:  # live while this lease holds (queue/workers.py)
                        row.heartbeat_at = now
                        row.lease_expires_at = now + dt.timedelta(seconds=self.lease_seconds)
                    workers.prune_lost(session, now)
            except Exception:
                log.exception("worker.heartbeat_failed")

    def _reconcile(self) -> None:
        """A transport that carries "ready" outside the database announces, from one elected
        worker, what the database holds ready: timers come due, runs of a dead worker, and
        everything after the transport lost its data."""
        while not self.stopping.wait(self.queue.reconcile_seconds):
            try:
                self.queue.reconcile(self.id)
            except Exception:
                log.exception("worker.reconcile_failed")

    def _maintain(self) -> None:
        """Periodic chores: connection health checks for connections that are due."""
        every = self.health_check_seconds
        assert every is not None
        while not self.stopping.wait(min(every, 30.0)):
            try:
                check_due(self.connections, dt.timedelta(seconds=every))
            except Exception:
                log.exception("worker.health_checks_failed")

    def _tick(self, lane: str = hooks.TIMERS) -> None:
        """Durable timers kept in the database (grant expiry, leave dates): each worker checks
        them; row locks (SKIP LOCKED) keep two workers from acting on the same row. A timer
        whose transaction can take long has a lane, a thread of its own, started by the
        first tick (which loads the timers)."""
        behind = False
        while not self.stopping.wait(
            self.database.pause_between_batches if behind else self.tick_seconds
        ):
            if lane == hooks.TIMERS:
                self._start_lanes()
            behind = self.queue.runs_timers() and self.tick_once(lane)

    def _start_lanes(self) -> None:
        for lane in hooks.tick_lanes():
            with self._lock:
                if self.stopping.is_set():
                    return
                if lane in self._lanes:
                    continue
                self._lanes.add(lane)
                thread = threading.Thread(
                    target=self._tick, args=(lane,), name=f"worker-{lane}", daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def tick_once(self, lane: str | None = None) -> bool:
        """Every timer of `lane` (None: of every lane) once; True when one stopped with batches
        left (the next tick is now)."""
        behind = False
        for listener in hooks.tick_listeners(lane):
            # a timer with more batches goes on for up to a tick's length, then lets the others
            # have their turn (it resumes at the next tick, which comes at once)
            until = time.monotonic() + self.tick_seconds
            more: bool | None = True
            while more and not self.stopping.is_set():
                try:
                    with self.database.transaction() as session:
                        more = listener(session, self.queue, utcnow())
                except Exception:
                    log.exception("worker.timer_failed", timer=getattr(listener, "__name__", "?"))
                    break
                if time.monotonic() >= until:
                    behind = bool(more)
                    break
                if more and self.database.pause_between_batches:
                    self.stopping.wait(self.database.pause_between_batches)
        return behind
