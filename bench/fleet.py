"""A fleet on PostgreSQL, on each queue transport (the database; Valkey/Redis): 8 `grantflow
worker` processes of 4 threads each. Prints ONE JSON array on stdout, an object per transport;
progress goes to stderr.

    .venv/bin/python bench/fleet.py --quick            # a reduced run
    .venv/bin/python bench/fleet.py                    # 5,000 runs of 5 set steps
    .venv/bin/python bench/fleet.py --chaos            # the same under faults

The script creates its own PostgreSQL database (GRANTFLOW_BENCH_POSTGRES_URL is the admin URL,
default the local server) and starts its own redis-server on a free port — never the machine's
shared one — and removes both at the end.

Figures, from the database's own timestamps:
- idle: the CPU time the 8 idle workers used over the idle window (cpu_percent of one core) and
  the statements they sent to PostgreSQL meanwhile (idle_statements_per_s);
- pickup_p50_ms / pickup_p99_ms: one run of one step created while the fleet idles, from its
  created_at to its first step's started_at;
- runs_per_s, steps_per_s: the batch of runs created in one transaction, over the window from
  the first created_at to the last finished_at;
- statements_per_step: every statement the workers sent while the batch ran (psycopg counted
  in each worker process, bench/fleet_worker.py) divided by the steps run.

--chaos runs a batch of 5-step runs (set, http, set, http, set; the http steps POST to a server
started here that records each call's Idempotency-Key) with 5 s leases, and meanwhile: SIGKILLs
two workers, stops redis-server and starts it again empty (Valkey transport), and terminates
every PostgreSQL backend of the database. It reports runs_lost (not succeeded once the rest
are), steps_succeeded_twice, calls_without_key (calls re-sent without their idempotency key),
calls_repeated (a key sent again: the same call re-sent, which the key makes safe), and
recovery_s: from the last fault until every run had succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common import ACTOR, MASTER_KEY, Unreachable, postgres_database
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from grantflow.definitions import workflows
from grantflow.engine.models import Run, StepAttempt, StepRun
from grantflow.engine.runs import start_run
from grantflow.logging import configure_logging
from grantflow.queue.models import Worker as WorkerRow
from grantflow.queue.transports import open_queue
from grantflow.store.database import Database

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
HERE = Path(__file__).resolve().parent
PROCESSES, THREADS, STEPS = 8, 4, 5
PREFIX = "grantflow-bench"


@dataclass(frozen=True)
class Sizes:
    runs: int
    idle_seconds: float
    pickups: int


QUICK = Sizes(runs=500, idle_seconds=10, pickups=10)
FULL = Sizes(runs=5000, idle_seconds=30, pickups=50)
_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def r(value: float, digits: int = 2) -> float:
    return round(value, digits)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --- the servers this script starts ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """redis-server on a free port of 127.0.0.1, without persistence, in a scratch directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Unreachable("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST with 200 and records its Idempotency-Key (None when absent)."""

    keys: Counter[str | None] = Counter()
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.lock:
            self.keys[self.headers.get("Idempotency-Key")] += 1
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@contextlib.contextmanager
def recording_server() -> Iterator[str]:
    ThreadingHTTPServer.request_queue_size = 256  # (5 by default: bursts were reset)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- the fleet ------------------------------------------------------------------------------
class Fleet:
    """PROCESSES worker processes (bench/fleet_worker.py), each counting its statements."""

    def __init__(self, db: Database, env: dict[str, str], directory: Path) -> None:
        self.db = db
        self.env = env
        self.counts = directory / "counts"
        self.counts.mkdir(exist_ok=True)
        self.logs = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, lease_seconds: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")}
        env.update(self.env, GRANTFLOW_BENCH_COUNTS=str(self.counts))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        command = [sys.executable, str(HERE / "fleet_worker.py"), "--concurrency", str(THREADS),
                   "--lease-seconds", str(lease_seconds)]  # fmt: skip
        for _ in range(PROCESSES):
            with (self.logs / f"worker-{uuid.uuid4().hex[:8]}.log").open("wb") as err:
                self.processes.append(
                    subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
                )
        pids = {p.pid for p in self.processes}
        deadline = time.monotonic() + 120
        while True:
            with self.db.transaction() as session:
                if pids <= set(session.execute(select(WorkerRow.pid)).scalars()):
                    return
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError("a worker exited while starting; see its log")
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not register in time")
            time.sleep(0.05)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in self.alive():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        return total

    def statements(self) -> int:
        """The statements the live workers sent so far (each writes its count on SIGUSR1)."""
        asked = time.time()
        alive = self.alive()
        for p in alive:
            p.send_signal(signal.SIGUSR1)
        total = 0
        for p in alive:
            path = self.counts / f"{p.pid}.json"
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError, ValueError):
                    written = json.loads(path.read_text())
                    if written["at"] >= asked:
                        total += int(written["statements"])
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {p.pid} did not write its statement count")
                time.sleep(0.01)
        return total

    def stop(self) -> None:
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --- runs -----------------------------------------------------------------------------------
def publish(db: Database, name: str, steps: list[dict[str, Any]]) -> str:
    for step, following in itertools.pairwise(steps):
        step["next"] = following["id"]
    document = {"name": name, "trigger": {"type": "manual"}, "steps": steps}
    # thousands of runs in seconds: over the default breakers, which would rightly hold them
    document["safety"] = {
        "max_runs_per_minute": 1_000_000,
        "max_external_calls_per_minute": 10_000_000,
    }
    with db.transaction() as session:
        return workflows.apply_document(session, ACTOR, document, publish_it=True).workflow.id


def create_runs(db: Database, queue: Any, flow: str, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 500):  # 500 per transaction: one announcement each
        for attempt in range(50):
            try:
                with db.transaction() as session:
                    batch = [
                        start_run(session, ACTOR, queue, flow, {}).id
                        for _ in range(min(500, count - start))
                    ]
                ids += batch  # (committed: a batch rolled back by a fault is not counted)
                break
            except OperationalError:  # (--chaos: the backends were terminated; rolled back)
                if attempt == 49:
                    raise
                time.sleep(0.2)
    return ids


def statuses(reader: Engine, run_ids: list[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    with reader.connect() as conn:
        for chunk in range(0, len(run_ids), 5000):
            rows = conn.execute(
                select(Run.status, func.count())
                .where(Run.id.in_(run_ids[chunk : chunk + 5000]))
                .group_by(Run.status)
            ).all()
            for status, count in rows:
                found[status] += count
    return found


TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


def wait_done(reader: Engine, run_ids: list[str], timeout: float) -> Counter[str]:
    """Until every run ended (or `timeout`): how many ended how."""
    deadline = time.monotonic() + timeout
    while True:
        found = statuses(reader, run_ids)
        ended = sum(found.get(s, 0) for s in TERMINAL)
        if ended == len(run_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def failures(reader: Engine, run_ids: list[str]) -> list[dict[str, Any]]:
    """What the runs that did not succeed say (at most five)."""
    with reader.connect() as conn:
        rows = conn.execute(
            select(Run.id, Run.status, Run.current_step, Run.failure)
            .where(Run.id.in_(run_ids), Run.status != "succeeded")
            .limit(5)
        ).all()
    return [{"run": i, "status": st, "step": step, "failure": f} for i, st, step, f in rows]


def window(reader: Engine, run_ids: list[str]) -> tuple[float, float]:
    with reader.connect() as conn:
        first, last = conn.execute(
            select(func.min(Run.created_at), func.max(Run.finished_at)).where(Run.id.in_(run_ids))
        ).one()
    return first.timestamp(), last.timestamp()


def pickup_ms(reader: Engine, run_id: str) -> float:
    with reader.connect() as conn:
        created, started = conn.execute(
            select(Run.created_at, StepRun.started_at)
            .join(StepRun, (StepRun.run_id == Run.id) & (StepRun.sequence == 1))
            .where(Run.id == run_id)
        ).one()
    return float((started - created).total_seconds() * 1000)


# --- one transport --------------------------------------------------------------------------
def measure(
    transport: str, admin: Any, sizes: Sizes, chaos: bool, directory: Path
) -> dict[str, Any]:
    redis_server = RedisServer(directory) if transport == "redis" else None
    with postgres_database(admin) as db, recording_server() as target:
        env = {
            "GRANTFLOW_DATABASE_URL": db.url.render_as_string(hide_password=False),
            "GRANTFLOW_SECRET_KEY": MASTER_KEY,
            "GRANTFLOW_LOG_LEVEL": "warning",
            "GRANTFLOW_LOG_FORMAT": "json",
            "GRANTFLOW_OUTBOUND_ALLOW": "127.0.0.1",
            "GRANTFLOW_HEALTH_CHECK_SECONDS": "0",
        }
        if redis_server is not None:
            redis_server.start()
            env.update(GRANTFLOW_QUEUE_URL=redis_server.url, GRANTFLOW_QUEUE_PREFIX=PREFIX)
        queue = open_queue(db, env.get("GRANTFLOW_QUEUE_URL"), prefix=PREFIX)
        reader = create_engine(db.driver_url())
        fleet = Fleet(db, env, directory)
        try:
            fleet.start(lease_seconds=5.0 if chaos else 30.0)
            log(f"{transport}: {PROCESSES} workers x {THREADS} threads registered")
            if chaos:
                return {"transport": transport, **run_chaos(db, queue, reader, fleet, target,
                                                            redis_server, sizes)}  # fmt: skip
            return {"transport": transport, **run_steady(db, queue, reader, fleet, sizes)}
        finally:
            fleet.stop()
            queue.close()
            reader.dispose()
            if redis_server is not None:
                redis_server.stop()


def run_steady(
    db: Database, queue: Any, reader: Engine, fleet: Fleet, sizes: Sizes
) -> dict[str, Any]:
    sets = [{"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}} for i in range(STEPS)]
    flow = publish(db, "fleet5", sets)
    one = publish(db, "fleet1", [{"id": "s0", "type": "set", "config": {"values": {"i": 0}}}])
    wait_done(reader, create_runs(db, queue, flow, 20), 120)  # warm-up
    time.sleep(2)  # (the warm-up's last acknowledgements and heartbeats settle)

    cpu, statements, started = fleet.cpu_seconds(), fleet.statements(), time.monotonic()
    time.sleep(sizes.idle_seconds)
    idle_s = time.monotonic() - started
    idle_cpu = fleet.cpu_seconds() - cpu
    idle_statements = fleet.statements() - statements
    log(f"idle {idle_s:.0f} s: {idle_cpu:.2f} s CPU, {idle_statements} statements")

    delays = []
    for _ in range(sizes.pickups):
        time.sleep(0.1)
        [run_id] = create_runs(db, queue, one, 1)
        wait_done(reader, [run_id], 60)
        delays.append(pickup_ms(reader, run_id))
    log(f"pickup p50 {percentile(delays, 0.5):.1f} ms over {len(delays)} runs")

    before = fleet.statements()
    run_ids = create_runs(db, queue, flow, sizes.runs)
    found = wait_done(reader, run_ids, 900)
    if found.get("succeeded", 0) != len(run_ids):
        raise RuntimeError(f"the batch did not finish: {dict(found)}")
    statements = fleet.statements() - before
    first, last = window(reader, run_ids)
    runs_per_s = len(run_ids) / (last - first)
    log(f"{len(run_ids)} runs: {runs_per_s:.0f} runs/s")
    return {
        "processes": PROCESSES,
        "threads": THREADS,
        "runs": len(run_ids),
        "runs_per_s": r(runs_per_s, 1),
        "steps_per_s": r(runs_per_s * STEPS, 1),
        "pickup_p50_ms": r(percentile(delays, 0.5)),
        "pickup_p99_ms": r(percentile(delays, 0.99)),
        "statements_per_step": r(statements / (len(run_ids) * STEPS), 2),
        "idle_seconds": r(idle_s, 1),
        "idle_cpu_seconds": r(idle_cpu, 3),
        "idle_cpu_percent": r(100 * idle_cpu / idle_s, 2),
        "idle_statements_per_s": r(idle_statements / idle_s, 2),
    }


def terminate_backends(db: Database) -> int:
    admin = create_engine(db.driver_url().set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": db.url.database},
                ).scalar_one()
            )
    finally:
        admin.dispose()


def run_chaos(
    db: Database,
    queue: Any,
    reader: Engine,
    fleet: Fleet,
    target: str,
    redis_server: RedisServer | None,
    sizes: Sizes,
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(STEPS):
        if i % 2:
            config = {"method": "POST", "url": f"{target}/call/{i}", "body": {"i": i}}
            steps.append({"id": f"h{i}", "type": "http", "config": config, "reversible": True})
        else:
            steps.append({"id": f"s{i}", "type": "set", "config": {"values": {"i": i}}})
    flow = publish(db, "chaos5", steps)
    Recorder.keys.clear()
    run_ids: list[str] = []
    # the runs are created while the faults happen (5,000 take longer to create than to run)
    creating = threading.Thread(
        target=lambda: run_ids.extend(create_runs(db, queue, flow, sizes.runs))
    )
    creating.start()
    faults: list[tuple[str, float]] = []

    def fault(name: str, act: Any) -> None:
        act()
        faults.append((name, time.monotonic()))
        log(f"fault: {name}")

    time.sleep(1.0)
    fault("two workers SIGKILLed", lambda: [p.kill() for p in fleet.alive()[:2]])
    if redis_server is not None:
        time.sleep(1.0)
        fault("redis-server stopped", redis_server.stop)
        time.sleep(3.0)
        fault("redis-server started again, empty", redis_server.start)
    time.sleep(1.0)
    fault("every PostgreSQL backend terminated", lambda: terminate_backends(db))
    reader.dispose()  # (its pooled connections were terminated too)
    last_fault = faults[-1][1]
    creating.join()
    found = wait_done(reader, run_ids, 600)
    recovered = time.monotonic() - last_fault
    with reader.connect() as conn:
        twice = conn.execute(
            select(func.count()).select_from(
                select(StepAttempt.step_run_id)
                .join(StepRun, StepRun.id == StepAttempt.step_run_id)
                .where(StepRun.run_id.in_(run_ids), StepAttempt.status == "succeeded")
                .group_by(StepAttempt.step_run_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
    keys = Counter(Recorder.keys)
    log(f"chaos: {dict(found)}; recovered {recovered:.1f} s after the last fault")
    return {
        "processes": PROCESSES,
        "threads": THREADS,
        "runs": len(run_ids),
        "faults": [name for name, _ in faults],
        "runs_lost": len(run_ids) - found.get("succeeded", 0),
        "steps_succeeded_twice": int(twice),
        "calls_without_key": keys.get(None, 0),
        "calls_repeated": sum(n - 1 for k, n in keys.items() if k is not None and n > 1),
        "calls": sum(keys.values()),
        "recovery_s": r(recovered, 1),
        "not_succeeded": failures(reader, run_ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 runs, a 10 s idle window")
    parser.add_argument("--chaos", action="store_true", help="faults during the batch")
    parser.add_argument("--transports", default="database,redis", help="database,redis")
    args = parser.parse_args()
    configure_logging("warning", "json")
    sizes = QUICK if args.quick else FULL
    admin = make_url(os.environ.get("GRANTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    admin = admin.set(drivername="postgresql+psycopg")
    rows = []
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="grantflow-fleet-") as tmp:
        for transport in [t for t in args.transports.split(",") if t]:
            try:
                rows.append(measure(transport, admin, sizes, args.chaos, Path(tmp)))
            except Exception:
                for worker_log in sorted(Path(tmp).glob("worker-*.log")):
                    tail = worker_log.read_text()[-1500:]
                    if tail.strip():
                        log(f"{worker_log.name}:\n{tail}")
                raise
    json.dump(rows, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
