"""Engine benchmarks: seq40 (40 sequential `set` steps) and http40 (40 sequential `http` steps
against a local server started here), on SQLite and PostgreSQL, with 1 and 4 `grantflow worker`
processes, plus run pickup latency at idle. Prints ONE JSON array on stdout, an object per
measurement; progress goes to stderr.

    .venv/bin/python bench/engine.py --quick     # a reduced run, under a minute
    .venv/bin/python bench/engine.py             # the full run

PostgreSQL: GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script
creates its own database there and drops it at the end. SQLite lives in a temporary directory.

Every figure comes from the database's own timestamps (run created_at / started_at / finished_at,
the first step run's started_at), not from polling:
- per_step_ms: one run at a time, (finished_at - started_at) / 40, median over repeats;
  e2e_ms: the same runs, created_at -> finished_at (includes pickup);
- steps_per_s, runs_per_s: K runs created in one transaction while the workers idle, divided by
  the window from the first created_at to the last finished_at; median over repeats
  (busy_steps_per_s: the window from the first step start instead, i.e. without pickup);
- pickup_p50_ms / pickup_p99_ms: a one-step run created while the workers idle, from created_at
  to its first step's started_at (pickup_commit_*: from the creating transaction's commit, so
  without the creator's own transaction);
- bare_http40_ms: 40 sequential POSTs with one httpx.Client to the same server (median);
  ratio_vs_bare = e2e_ms / bare_http40_ms and ratio_exec_vs_bare = run execution / bare;
- cpu_ms_per_step: the CPU the batches took per step, in PostgreSQL's processes (the server is
  local: every process named postgres) and in the worker processes (user + system, /proc);
- peak_rss_mb: the largest peak resident set (VmHWM) among the worker processes;
  worker_memory.idle_rss_mb: a worker process's resident set right after it registered;
  settled_rss_mb / settled_pss_mb: the same once the worker's first timer tick (5 s) loaded
  the run listeners (an idle worker that has run for a while);
  idle_pss_mb / waiting_pss_mb: the proportional set (pages shared with the other worker
  processes and programs counted as their share: what one more worker costs a host);
  waiting_rss_mb (PostgreSQL): the largest resident set among the worker processes once
  waiting_runs runs are parked on a one-day timer (target: at most 90 MB with 10,000).

PostgreSQL only (issue 18's targets), with the API served in this process:
- run5 (set, http, set, http, set) started with `POST /api/v1/workflows/{id}/runs`, one at a
  time with one worker process idle: e2e_ms from sending the request to the run's finished_at,
  steps_alone_ms the sum of its step runs' start-to-end (their checkpoints and calls), and
  ratio_vs_steps (target: at most 2); parts_ms: where the time went (the request to the
  run's created_at, pickup, the steps, between them, the last step to the run's end);
- run5_statements: the statements psycopg sent for one run5 (the least of three), counted in
  this process with an embedded worker: by the API request (api), the worker's dispatcher
  (claims) and the pool thread that advanced the run (run); outside_steps = total - 5 (target:
  at most 4);
- run_start: a run5 started with `start_run` in a transaction of its own, one after another
  with no worker running (they stay queued): start_cpu_p50_ms the CPU of the starting thread
  (time.thread_time: the Python and the driver's work, not the server's), start_p50_ms its
  wall time, commit included; `starts` samples after 100 not counted;
- api_request: p50/p95 of `GET /healthz` and of an authenticated `GET /api/v1/me` over one
  keep-alive connection; overhead_p50_ms is their difference;
- commit_floor: what one durable write costs on this machine (one-row INSERTs, each its own
  transaction, one after another: commit_p50_ms / commit_p99_ms; round_trip_p50_ms for
  `SELECT 1`). A step boundary commits once and waits for that commit's WAL flush, so seq40's
  per_step_ms cannot go below commit_p50_ms: vs_commit_floor is their ratio on the seq40 rows.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from common import (
    ACTOR,
    MASTER_KEY,
    StatementCounter,
    Unreachable,
    admin_token,
    commit_floor,
    postgres_database,
    served,
)
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine, make_url

from grantflow.connections.outbound import OutboundPolicy
from grantflow.definitions import workflows
from grantflow.engine.models import Run, StepRun
from grantflow.engine.runs import start_run
from grantflow.engine.worker import Worker
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.queue.models import Worker as WorkerRow
from grantflow.store import migrate
from grantflow.store.database import Database, open_database

STEPS = 40
TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Sizes:
    latency_runs: int  # single runs, one at a time
    batch: dict[str, int]  # runs per throughput batch, per workload
    batches: int  # throughput repeats
    pickups: int  # pickup samples (PostgreSQL, embedded SQLite)
    pickups_polled: int  # pickup samples where the worker polls (SQLite, another process)
    bare_repeats: int
    run5: int  # run5 samples through the API (PostgreSQL)
    requests: int  # API requests per kind, for the per-request figures
    waiting: int  # runs left waiting on a timer, for the workers' memory (PostgreSQL)


QUICK = Sizes(2, {"seq40": 5, "http40": 3}, 1, 10, 3, 3, 5, 200, 500)
# the quick workloads, with enough samples for the fixed costs around a run (pickup, run5, the
# per-request overhead) to compare two commits
FIXED = Sizes(2, {"seq40": 10, "http40": 5}, 1, 60, 3, 3, 20, 2000, 500)
FULL = Sizes(7, {"seq40": 40, "http40": 20}, 3, 100, 20, 20, 30, 2000, 10_000)


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- the local HTTP server ----------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK.
    disable_nagle_algorithm = True
    payload = b'{"ok": true}'

    def log_message(self, *_args: Any) -> None:
        return

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    do_GET = do_POST = _answer


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def bare_http40(url: str, repeats: int) -> float:
    """Median ms for 40 sequential POSTs over one keep-alive httpx.Client."""
    times = []
    with httpx.Client() as client:
        client.post(f"{url}/warm", json={"i": 0}).raise_for_status()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(STEPS):
                client.post(
                    f"{url}/step/{i}", json={"i": i}, headers={"Idempotency-Key": f"bare:{i}"}
                ).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# --- databases ----------------------------------------------------------------------------------
@contextlib.contextmanager
def sqlite_database(directory: Path) -> Iterator[Database]:
    db = open_database(make_url(f"sqlite:///{directory / 'bench.db'}"))
    migrate.upgrade(db)
    try:
        yield db
    finally:
        db.dispose()


# --- workflows and runs -------------------------------------------------------------------------
def publish(
    db: Database, name: str, steps: list[dict[str, Any]], safety: dict[str, Any] | None = None
) -> str:
    for i, step in enumerate(steps[:-1]):
        step["next"] = steps[i + 1]["id"]
    document: dict[str, Any] = {"name": name, "trigger": {"type": "manual"}, "steps": steps}
    if safety:
        document["safety"] = safety
    with db.transaction() as session:
        return workflows.apply_document(session, ACTOR, document, publish_it=True).workflow.id


UNLIMITED = {"max_runs_per_minute": 1_000_000}


def publish_all(db: Database, url: str) -> dict[str, str]:
    seq = [{"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}} for i in range(STEPS)]
    http = [
        {
            "id": f"h{i}",
            "type": "http",
            "config": {"method": "POST", "url": f"{url}/step/{i}", "body": {"i": i}},
            "reversible": True,
        }
        for i in range(STEPS)
    ]
    pickup = [{"id": "only", "type": "set", "config": {"values": {"x": 1}}}]
    # (bench/step_cpu.py starts hundreds or thousands of each a minute: over the default
    # runs-per-minute breaker, which would rightly hold the rest)
    return {
        "seq40": publish(db, "bench-seq40", seq, safety=UNLIMITED),
        "http40": publish(db, "bench-http40", http, safety=UNLIMITED),
        "pickup": publish(db, "bench-pickup", pickup, safety=UNLIMITED),
        "run5": publish(db, "bench-run5", run5_steps(url), safety=UNLIMITED),
        "waiting": publish(
            db,
            "bench-waiting",
            [{"id": "wait", "type": "delay", "config": {"duration": "P1D"}}],
            safety=UNLIMITED,  # (10,000 runs in seconds)
        ),
    }


def run5_steps(url: str) -> list[dict[str, Any]]:
    """A short access run: set, http, set, http, set."""
    steps: list[dict[str, Any]] = []
    for i, kind in enumerate(("set", "http", "set", "http", "set")):
        if kind == "set":
            steps.append({"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}})
        else:
            config = {"method": "POST", "url": f"{url}/run5/{i}", "body": {"i": i}}
            steps.append({"id": f"h{i}", "type": "http", "config": config, "reversible": True})
    return steps


def create_runs(db: Database, workflow_id: str, count: int) -> list[str]:
    """`count` runs of the workflow, created in one transaction."""
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        return [start_run(session, ACTOR, queue, workflow_id, {}).id for _ in range(count)]


def reader_for(db: Database) -> Engine:
    """A plain engine for the bench's own polling: on SQLite its reads take no write lock
    (the app's engine begins every transaction IMMEDIATE), so polling never delays a worker."""
    return create_engine(db.driver_url())


def wait_done(reader: Engine, run_ids: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with reader.connect() as conn:
            rows = conn.execute(
                select(Run.status, Run.waiting_reason, func.count())
                .where(Run.id.in_(run_ids))
                .group_by(Run.status, Run.waiting_reason)
            ).all()
            counts: dict[str, int] = collections.Counter()
            for status, _reason, count in rows:
                counts[status] += count
            failed = any(counts.get(s) for s in TERMINAL if s != "succeeded")
            if failed or any(reason == "safety" for _, reason, _ in rows):
                bad = conn.execute(
                    select(Run.id, Run.status, Run.failure)
                    .where(Run.id.in_(run_ids), Run.status != "succeeded")
                    .order_by(Run.status.in_(TERMINAL).desc())
                    .limit(1)
                ).one()
                # (one the safety gate holds would never end)
                raise RuntimeError(f"a benchmark run did not succeed: {tuple(bad)}")
        if counts.get("succeeded", 0) == len(run_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not done after {timeout} s: {dict(counts)}")
        time.sleep(0.01)


@dataclass
class Timing:
    created: float
    started: float
    finished: float
    first_step: float


def timings(reader: Engine, run_ids: list[str]) -> list[Timing]:
    with reader.connect() as conn:
        rows = conn.execute(
            select(Run.created_at, Run.started_at, Run.finished_at, StepRun.started_at)
            .join(StepRun, (StepRun.run_id == Run.id) & (StepRun.sequence == 1))
            .where(Run.id.in_(run_ids))
        ).all()
    return [Timing(*(v.timestamp() for v in row)) for row in rows]


# --- worker processes ---------------------------------------------------------------------------
class WorkerSet:
    """N `grantflow worker` processes on one database; stopped (or killed) on exit."""

    def __init__(self, db: Database, count: int, concurrency: int, logs: Path) -> None:
        """`count` processes to start on entering; `grow` adds more."""
        self.db = db
        self.count = count
        self.concurrency = concurrency
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> WorkerSet:
        try:
            self.grow(self.count)
        except BaseException:
            self.__exit__()
            raise
        return self

    def grow(self, more: int) -> None:
        """Start `more` worker processes and wait until each has registered."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")}
        env.update(
            GRANTFLOW_DATABASE_URL=self.db.url.render_as_string(hide_password=False),
            GRANTFLOW_SECRET_KEY=MASTER_KEY,
            GRANTFLOW_LOG_LEVEL="warning",
            GRANTFLOW_LOG_FORMAT="json",
            GRANTFLOW_OUTBOUND_ALLOW="127.0.0.1",  # the local HTTP server
            GRANTFLOW_HEALTH_CHECK_SECONDS="0",
        )
        command = [sys.executable, "-m", "grantflow", "worker", "--concurrency"]
        for _ in range(more):
            with (self.logs / f"worker-{uuid.uuid4().hex[:8]}.log").open("wb") as err:
                self.processes.append(
                    subprocess.Popen(
                        [*command, str(self.concurrency)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )
        self._wait_registered()

    def _wait_registered(self, timeout: float = 60) -> None:
        pids = {p.pid for p in self.processes}
        deadline = time.monotonic() + timeout
        while True:
            for p in self.processes:
                if p.poll() is not None:
                    raise RuntimeError(f"worker {p.pid} exited with {p.returncode}")
            with self.db.transaction() as session:
                live = set(session.execute(select(WorkerRow.pid)).scalars())
            if pids <= live:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register in time")
            time.sleep(0.05)

    def peak_rss_mb(self) -> float | None:
        return self._largest("VmHWM:")

    def rss_mb(self) -> float | None:
        """The largest resident set now (idle: right after the processes registered)."""
        return self._largest("VmRSS:")

    def pss_mb(self) -> float | None:
        """The largest proportional set now: the resident set with each page shared with other
        processes (the interpreter's and the libraries' code, among a host's workers) counted
        as its share."""
        sizes = []
        for p in self.processes:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        sizes.append(int(line.split()[1]) / 1024)
        return round(max(sizes), 1) if sizes else None

    def cpu_seconds(self) -> float:
        """User and system CPU the worker processes used so far."""
        return sum(_cpu_seconds(p.pid) for p in self.processes)

    def _largest(self, field: str) -> float | None:
        sizes = []
        for p in self.processes:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith(field):
                        sizes.append(int(line.split()[1]) / 1024)
        return round(max(sizes), 1) if sizes else None

    def __exit__(self, *_exc: object) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


_TICKS = os.sysconf("SC_CLK_TCK")
TICK_SECONDS = 5.0  # a worker's timer tick (Worker.tick_seconds)


def _cpu_seconds(pid: int) -> float:
    """A process's user and system CPU so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def postgres_cpu_seconds() -> float:
    """The CPU every PostgreSQL process on this machine used so far (its backends, WAL writer,
    checkpointer): the server is local; a backend that exits in between takes its share."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().startswith("postgres"):
                    total += _cpu_seconds(int(entry.name))
    return total


# --- measurements -------------------------------------------------------------------------------
def row(workload: str, database: str, workers: int | None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workload": workload,
        "database": database,
        "workers": workers,
        "per_step_ms": None,
        "steps_per_s": None,
        "runs_per_s": None,
        "pickup_p50_ms": None,
        "pickup_p99_ms": None,
        "peak_rss_mb": None,
    }
    base.update(fields)
    return base


def r(value: float, digits: int = 2) -> float:
    return round(value, digits)


def measure_workload(
    db: Database, reader: Engine, flow: str, workload: str, sizes: Sizes, workers: WorkerSet
) -> dict[str, Any]:
    """Latency of single runs, then throughput of batches, on the running workers (and the CPU
    the batches took, per step, in PostgreSQL's processes and in the workers')."""
    wait_done(reader, create_runs(db, flow, 1))  # warm-up: imports, plans, connections
    e2e, execution = [], []
    for _ in range(sizes.latency_runs):
        ids = create_runs(db, flow, 1)
        wait_done(reader, ids)
        (t,) = timings(reader, ids)
        e2e.append((t.finished - t.created) * 1000)
        execution.append((t.finished - t.started) * 1000)
    rates, busy_rates = [], []
    count = sizes.batch[workload]
    postgres_cpu, worker_cpu = postgres_cpu_seconds(), workers.cpu_seconds()
    for _ in range(sizes.batches):
        ids = create_runs(db, flow, count)
        wait_done(reader, ids)
        ts = timings(reader, ids)
        end = max(t.finished for t in ts)
        rates.append(count / (end - min(t.created for t in ts)))
        busy_rates.append(count / (end - min(t.first_step for t in ts)))
    steps = count * sizes.batches * STEPS
    postgres_cpu = postgres_cpu_seconds() - postgres_cpu
    worker_cpu = workers.cpu_seconds() - worker_cpu
    runs_per_s = statistics.median(rates)
    return {
        "cpu_ms_per_step": {
            "postgresql": r(postgres_cpu * 1000 / steps, 3),
            "workers": r(worker_cpu * 1000 / steps, 3),
        },
        "per_step_ms": r(statistics.median(execution) / STEPS, 3),
        "e2e_ms": r(statistics.median(e2e)),
        "exec_ms": r(statistics.median(execution)),
        "steps_per_s": r(runs_per_s * STEPS, 1),
        "runs_per_s": r(runs_per_s),
        "busy_steps_per_s": r(statistics.median(busy_rates) * STEPS, 1),
        "batch_runs": count,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure_pickup(db: Database, reader: Engine, flow: str, samples: int) -> dict[str, Any]:
    """A one-step run created while the workers idle: created_at -> first step started_at."""
    wait_done(reader, create_runs(db, flow, 1))
    delays, after_commit = [], []
    for _ in range(samples):
        time.sleep(random.uniform(0.05, 0.2))  # let every worker go back to waiting
        ids = create_runs(db, flow, 1)
        committed = time.time()
        wait_done(reader, ids)
        (t,) = timings(reader, ids)
        delays.append((t.first_step - t.created) * 1000)
        after_commit.append((t.first_step - committed) * 1000)
    return {
        "pickup_p50_ms": r(percentile(delays, 0.5)),
        "pickup_p99_ms": r(percentile(delays, 0.99)),
        "pickup_commit_p50_ms": r(percentile(after_commit, 0.5)),
        "pickup_commit_p99_ms": r(percentile(after_commit, 0.99)),
        "pickup_samples": samples,
    }


def run5_parts(reader: Engine, run_id: str, sent: float) -> dict[str, float]:
    """Where one run's time went (ms), from the database's timestamps: `api` from sending the
    request to the run's created_at, `pickup` from there to its first step's start, `steps`
    the step runs' own start-to-end, `between` the rest of first start to last end, `end`
    the last step's end to the run's finished_at."""
    with reader.connect() as conn:
        rows = conn.execute(
            select(StepRun.started_at, StepRun.finished_at)
            .where(StepRun.run_id == run_id)
            .order_by(StepRun.sequence)
        ).all()
        created, finished = conn.execute(
            select(Run.created_at, Run.finished_at).where(Run.id == run_id)
        ).one()
    steps = sum((end - start).total_seconds() for start, end in rows)
    first, last = rows[0][0].timestamp(), rows[-1][1].timestamp()
    return {
        "api": (created.timestamp() - sent) * 1000,
        "pickup": (first - created.timestamp()) * 1000,
        "steps": steps * 1000,
        "between": (last - first - steps) * 1000,
        "end": (finished.timestamp() - last) * 1000,
    }


def measure_run5(
    db: Database, reader: Engine, api: httpx.Client, flow: str, samples: int
) -> dict[str, Any]:
    """run5 through the API, one at a time with the workers idle: from sending the request
    (this process's clock) to the run's finished_at (the database's, the same machine's), and
    the time of its steps alone."""
    start_path = f"/api/v1/workflows/{flow}/runs"
    for _ in range(2):  # warm-up: the API's and the worker's first run of the workflow
        response = api.post(start_path, json={"input": {}})
        response.raise_for_status()
        wait_done(reader, [response.json()["id"]])
    e2e, steps, parts = [], [], []
    for _ in range(samples):
        time.sleep(random.uniform(0.05, 0.2))  # let every worker go back to waiting
        sent = time.time()
        response = api.post(start_path, json={"input": {}})
        response.raise_for_status()
        run_id = response.json()["id"]
        wait_done(reader, [run_id])
        with reader.connect() as conn:
            finished = conn.execute(select(Run.finished_at).where(Run.id == run_id)).scalar_one()
        e2e.append((finished.timestamp() - sent) * 1000)
        parts.append(run5_parts(reader, run_id, sent))
        steps.append(parts[-1]["steps"])
    e2e_ms, steps_ms = statistics.median(e2e), statistics.median(steps)
    return {
        "e2e_ms": r(e2e_ms),
        "steps_alone_ms": r(steps_ms),
        "ratio_vs_steps": r(e2e_ms / steps_ms),
        # the medians of each part (they need not add up to the median end to end)
        "parts_ms": {k: r(statistics.median(p[k] for p in parts)) for k in parts[0]},
        "samples": samples,
    }


def count_run5_statements(db: Database, api_url: str, token: str, flow: str) -> dict[str, Any]:
    """The statements one run5 costs, counted in this process: the API request that starts
    it, then a worker in this process (its dispatcher claims, a pool thread advances the run).
    `outside_steps` is the total less one per step (a step boundary is one checkpoint)."""
    queue = DatabaseQueue(db)
    worker = Worker(
        db,
        queue,
        concurrency=4,
        lease_seconds=30,
        outbound=OutboundPolicy.parse(["127.0.0.1"]),
        tick_seconds=3600,  # no timer pass during the count
    )
    reader = reader_for(db)
    headers = {"Authorization": f"Bearer {token}"}
    totals: list[dict[str, int]] = []
    try:
        with StatementCounter() as counter, httpx.Client(base_url=api_url, headers=headers) as api:
            worker.start()
            for attempt in range(4):  # the first is a warm-up
                time.sleep(0.3)  # the dispatcher back to waiting, the heartbeat out of the way
                with counter.counting() as by_thread:
                    response = api.post(f"/api/v1/workflows/{flow}/runs", json={"input": {}})
                    response.raise_for_status()
                    run_id = response.json()["id"]
                    wait_done(reader, [run_id])
                    counted = dict(by_thread)
                if attempt:
                    totals.append(_by_role(counted))
    finally:
        worker.stop(grace_seconds=10)
        queue.close()
        reader.dispose()
    best = min(totals, key=lambda t: t["total"])
    return {**best, "steps": 5, "outside_steps": best["total"] - 5}


def _by_role(counted: dict[str, int]) -> dict[str, int]:
    roles = {"api": 0, "dispatcher": 0, "run": 0}
    for thread, n in counted.items():
        if thread.startswith("worker-heartbeat") or thread == "MainThread":
            continue
        role = (
            "dispatcher"
            if thread.startswith("worker-")
            else "run"
            if thread.startswith("run")
            else "api"
        )
        roles[role] += n
    return {**roles, "total": sum(roles.values())}


def measure_starts(db: Database, flow: str, starts: int) -> dict[str, Any]:
    """What starting one run costs its caller: `start_run` in a transaction of its own."""
    queue = DatabaseQueue(db)
    cpu, wall = [], []
    for n in range(100 + starts):
        began, began_cpu = time.perf_counter(), time.thread_time()
        with db.transaction() as session:
            start_run(session, ACTOR, queue, flow, {})
        if n >= 100:  # (the first: plans, caches, connections)
            cpu.append((time.thread_time() - began_cpu) * 1000)
            wall.append((time.perf_counter() - began) * 1000)
    return {
        "start_cpu_p50_ms": r(percentile(cpu, 0.5), 3),
        "start_p50_ms": r(percentile(wall, 0.5), 3),
        "starts": starts,
    }


def measure_requests(api_url: str, token: str, requests: int) -> dict[str, Any]:
    """Latency over one keep-alive connection: `/healthz` (no authentication, no database) and
    an authenticated `GET /api/v1/me` (the token checked, the user read: no other rows)."""
    figures: dict[str, Any] = {}
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}) as api:
        for name, path in (("healthz", "/healthz"), ("authenticated", "/api/v1/me")):
            for _ in range(20):
                api.get(path).raise_for_status()
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                api.get(path).raise_for_status()
                times.append((time.perf_counter() - t0) * 1000)
            figures[f"{name}_p50_ms"] = r(percentile(times, 0.5), 3)
            figures[f"{name}_p95_ms"] = r(percentile(times, 0.95), 3)
    figures["overhead_p50_ms"] = r(figures["authenticated_p50_ms"] - figures["healthz_p50_ms"], 3)
    figures["requests"] = requests
    return figures


def _through_the_api(
    db: Database, reader: Engine, flows: dict[str, str], sizes: Sizes
) -> list[dict[str, Any]]:
    """run5 from the API call to `succeeded` on the running worker process, the statements a
    run5 costs (an embedded worker, once the process is stopped), the per-request figures."""
    token = admin_token(db)
    rows = []
    with served(db) as url:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
            log("postgresql: run5 through the API")
            fields = measure_run5(db, reader, api, flows["run5"], sizes.run5)
        rows.append(row("run5", "postgresql", 1, worker_mode="process", **fields))
        log("postgresql: per-request latency")
        rows.append(
            row("api_request", "postgresql", None, **measure_requests(url, token, sizes.requests))
        )
    return rows


def measure_waiting_memory(
    db: Database, reader: Engine, flow: str, count: int, workers: WorkerSet
) -> dict[str, Any]:
    """`count` runs parked on a one-day timer by the running workers: the largest resident set
    among the worker processes once every run waits (a waiting run holds no worker), and what
    it was before (after the other workloads)."""
    before = workers.rss_mb()
    for start in range(0, count, 100):  # (100 per transaction: all ready at once)
        create_runs(db, flow, min(100, count - start))
    deadline = time.monotonic() + 600
    while True:
        with reader.connect() as conn:
            waiting = conn.execute(
                select(func.count())
                .select_from(Run)
                .where(Run.workflow_id == flow, Run.status == "waiting")
            ).scalar_one()
        if waiting >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {waiting} of {count} runs waiting after 600 s")
        time.sleep(0.2)
    return {
        "waiting_runs": count,
        "rss_before_mb": before,
        "waiting_rss_mb": workers.rss_mb(),
        "waiting_pss_mb": workers.pss_mb(),
    }


def bench_database(
    name: str, db: Database, url: str, sizes: Sizes, logs: Path, bare_ms: float
) -> list[dict[str, Any]]:
    flows = publish_all(db, url)
    reader = reader_for(db)
    try:
        return _bench_database(name, db, reader, flows, sizes, logs, bare_ms)
    finally:
        reader.dispose()


def _bench_database(
    name: str,
    db: Database,
    reader: Engine,
    flows: dict[str, str],
    sizes: Sizes,
    logs: Path,
    bare_ms: float,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    polled = name == "sqlite"  # SQLite has no cross-process wake-up: workers poll (1 s)
    log(f"{name}: starting 1 worker process")
    with WorkerSet(db, 1, concurrency=4, logs=logs) as workers:
        memory = {"idle_rss_mb": workers.rss_mb(), "idle_pss_mb": workers.pss_mb()}
        time.sleep(TICK_SECONDS + 1)  # past the first timer tick, which loads the run listeners
        memory.update(settled_rss_mb=workers.rss_mb(), settled_pss_mb=workers.pss_mb())
        rows.append(row("worker_memory", name, 1, **memory))
        floor = None
        if not polled:
            floor = commit_floor(db)
            rows.append(row("commit_floor", name, None, **floor))
            rows.extend(_through_the_api(db, reader, flows, sizes))
        for count in (1, 4):
            if count > len(workers.processes):
                log(f"{name}: growing to {count} worker processes")
                workers.grow(count - len(workers.processes))
            for workload in ("seq40", "http40"):
                log(f"{name}: {workload} with {count} worker(s)")
                fields = measure_workload(db, reader, flows[workload], workload, sizes, workers)
                if workload == "http40":
                    fields["bare_http40_ms"] = r(bare_ms)
                    fields["ratio_vs_bare"] = r(fields["e2e_ms"] / bare_ms)
                    fields["ratio_exec_vs_bare"] = r(fields["exec_ms"] / bare_ms)
                elif floor is not None:
                    fields["vs_commit_floor"] = r(fields["per_step_ms"] / floor["commit_p50_ms"])
                fields["peak_rss_mb"] = workers.peak_rss_mb()
                rows.append(row(workload, name, count, worker_mode="process", **fields))
            if count == 1:
                log(f"{name}: pickup latency with 1 worker")
                samples = sizes.pickups_polled if polled else sizes.pickups
                fields = measure_pickup(db, reader, flows["pickup"], samples)
                fields["peak_rss_mb"] = workers.peak_rss_mb()
                rows.append(row("pickup", name, 1, worker_mode="process", **fields))
        if not polled:
            log(f"{name}: {sizes.waiting} runs waiting on a timer")
            fields = measure_waiting_memory(db, reader, flows["waiting"], sizes.waiting, workers)
            rows.append(row("worker_memory", name, len(workers.processes), **fields))
    if not polled:
        log(f"{name}: statements per run5 (an embedded worker)")
        with served(db) as url:
            fields = count_run5_statements(
                db, url, admin_token(db, "count@example.com"), flows["run5"]
            )
        rows.append(row("run5_statements", name, 1, worker_mode="embedded", **fields))
        # (last: no worker runs on this database any more, so the runs started stay queued)
        log(f"{name}: starting runs (no worker takes them)")
        starts = measure_starts(db, flows["run5"], sizes.run5 * 20)
        rows.append(row("run_start", name, None, **starts))
    if polled:
        # The supported SQLite deployment: the worker inside the process that creates runs
        # (`grantflow serve`), woken by an in-process event.
        log(f"{name}: pickup latency with an embedded worker")
        queue = DatabaseQueue(db)
        worker = Worker(
            db, queue, concurrency=4, lease_seconds=30, outbound=OutboundPolicy.parse(["127.0.0.1"])
        )
        worker.start()
        try:
            fields = measure_pickup(db, reader, flows["pickup"], sizes.pickups)
        finally:
            worker.stop(grace_seconds=10)
            queue.close()
        rows.append(row("pickup", name, 1, worker_mode="embedded", **fields))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a reduced run, under a minute")
    parser.add_argument(
        "--fixed-costs",
        action="store_true",
        help="quick workloads with more pickup, run5 and request samples (about a minute)",
    )
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    args = parser.parse_args()
    configure_logging("warning", "json")  # to stderr: stdout carries only the JSON array
    sizes = FIXED if args.fixed_costs else QUICK if args.quick else FULL
    wanted = [d for d in args.databases.split(",") if d]
    admin = make_url(os.environ.get("GRANTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    if admin.get_backend_name() == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    rows: list[dict[str, Any]] = []
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="grantflow-bench-") as tmp, http_server() as url:
        directory = Path(tmp)
        bare_ms = bare_http40(url, sizes.bare_repeats)
        log(f"bare httpx: 40 POSTs in {bare_ms:.2f} ms (median)")
        for name in wanted:
            opener = sqlite_database(directory) if name == "sqlite" else postgres_database(admin)
            try:
                with opener as db:
                    rows.extend(bench_database(name, db, url, sizes, directory, bare_ms))
            except Unreachable as exc:
                log(f"{name}: skipped, the server is unreachable: {exc}")
            except Exception as exc:
                for log_file in sorted(directory.glob("worker-*.log")):
                    tail = log_file.read_text()[-2000:]
                    if tail.strip():
                        log(f"{log_file.name}:\n{tail}")
                log(f"{name}: failed: {type(exc).__name__}: {exc}")
                raise
    log(f"done; load average {os.getloadavg()[0]:.2f}")
    json.dump(rows, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
