"""Safety benchmarks on PostgreSQL. Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/safety.py            # the full run (about 90 s)
    .venv/bin/python bench/safety.py --quick    # a shorter window and fewer deliveries

- shared_rate_limit: four `grantflow worker` processes (concurrency 8 each) run http steps
  through ONE connection limited to 50 calls/s (burst 5). A local server records each call's
  arrival on its own monotonic clock; the measured rate is the calls that arrived in a 20 s
  window that starts 3 s after the first call, divided by 20 (target: at most 50/s, at least
  45/s). Also the most calls that arrived in any one second, and the bound
  `rate * window + burst` the limiter promises.
- webhook_intake: `grantflow serve --worker-concurrency 0 --no-scheduler` (the API alone) takes
  signed deliveries from 8 client threads, each a new delivery id; accepted deliveries per
  second over the whole batch, and latency p50/p99/max as the clients saw it.

PostgreSQL: GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script
creates its own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.auth.actor import Actor
from grantflow.connections.crypto import Keyring
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection
from grantflow.definitions import workflows
from grantflow.engine.models import Run
from grantflow.logging import configure_logging
from grantflow.safety import webhooks
from grantflow.safety.signing import sign
from grantflow.store.database import Database


def _load_bench_engine() -> Any:
    """bench/engine.py (its database, worker and percentile helpers), loaded by path."""
    spec = importlib.util.spec_from_file_location(
        "bench_engine", Path(__file__).with_name("engine.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engine"] = module
    spec.loader.exec_module(module)
    return module


bench_engine = _load_bench_engine()

ACTOR = Actor.system("bench")
RATE, BURST = 50.0, 5
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
log = bench_engine.log


# --- a target that records arrivals --------------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    arrivals: list[float] = []
    lock = threading.Lock()

    def log_message(self, *_args: Any) -> None:
        return

    def do_POST(self) -> None:
        at = time.monotonic()
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        with _Recorder.lock:
            _Recorder.arrivals.append(at)
        payload = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def recording_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


# --- shared rate limit ----------------------------------------------------------------------------
def rate_workflow(db: Database, url: str, steps: int) -> str:
    with db.transaction() as session:
        app = create_application(session, ACTOR, ApplicationCreate(name="bench-limited"))
        data = ConnectionCreate.model_validate(
            {
                "name": "api",
                "base_url": url,
                "rate_limit_per_second": RATE,
                "rate_limit_burst": BURST,
                "timeout_seconds": 300,
            }
        )
        create_connection(session, ACTOR, app.id, data)
        app_id = app.id
    chain = [
        {
            "id": f"c{i}",
            "type": "http",
            "config": {"method": "POST", "connection": "api", "path": "/hit", "body": {"i": i}},
            "reversible": True,
            **({"next": f"c{i + 1}"} if i + 1 < steps else {}),
        }
        for i in range(steps)
    ]
    document = {
        "name": "bench-rate",
        "application": app_id,
        "trigger": {"type": "manual"},
        "settings": {"execution_timeout": "1h"},
        "steps": chain,
    }
    with db.transaction() as session:
        return workflows.apply_document(session, ACTOR, document, publish_it=True).workflow.id


def measure_rate(db: Database, url: str, directory: Path, window: float) -> dict[str, Any]:
    steps = 20
    calls_needed = int(RATE * (window + 10))
    flow = rate_workflow(db, url, steps)
    with bench_engine.WorkerSet(db, 4, 8, directory):
        log(f"rate: 4 workers up; {calls_needed // steps} runs of {steps} calls")
        run_ids = bench_engine.create_runs(db, flow, calls_needed // steps)
        deadline = time.monotonic() + window + 120
        while True:
            with _Recorder.lock:
                arrivals = sorted(_Recorder.arrivals)
            if arrivals and arrivals[-1] - arrivals[0] >= window + 4:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(arrivals)} calls arrived")
            time.sleep(0.5)
        with db.transaction() as session:
            failed = session.execute(
                select(func.count()).where(Run.id.in_(run_ids), Run.status == "failed")
            ).scalar_one()
    start = arrivals[0] + 3.0
    end = start + window
    in_window = bisect.bisect_left(arrivals, end) - bisect.bisect_left(arrivals, start)
    busiest = max(
        bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals) if t < end
    )
    measured = in_window / window
    return {
        "workers": 4,
        "limit_per_s": RATE,
        "burst": BURST,
        "window_s": window,
        "calls_in_window": in_window,
        "measured_per_s": round(measured, 2),
        "bound_in_window": RATE * window + BURST,
        "max_calls_in_any_1s": busiest,
        "failed_runs": failed,
        "target": "<= 50/s and >= 45/s",
        "met": 45.0 <= measured <= RATE + BURST / window,
    }


# --- webhook intake ----------------------------------------------------------------------------
def measure_webhooks(db: Database, directory: Path, deliveries: int) -> dict[str, Any]:
    key = base64.urlsafe_b64decode(os.environ["GRANTFLOW_SECRET_KEY"])
    keyring = Keyring(lambda: [key])
    document = {
        "name": "bench-hook",
        "trigger": {
            "type": "webhook",
            "input_schema": {"type": "object", "required": ["email"]},
        },
        "steps": [{"id": "note", "type": "set", "config": {"values": {"x": 1}}}],
    }
    with db.transaction() as session:
        workflow_id = workflows.apply_document(
            session, ACTOR, document, publish_it=True
        ).workflow.id
        secret = webhooks.set_secret(session, ACTOR, keyring, workflow_id).secret
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")}
    port = bench_engine_free_port()
    env.update(
        GRANTFLOW_DATABASE_URL=db.url.render_as_string(hide_password=False),
        GRANTFLOW_SECRET_KEY=base64.urlsafe_b64encode(key).decode(),
        GRANTFLOW_LOG_LEVEL="warning",
        GRANTFLOW_LOG_FORMAT="json",
    )
    command = [sys.executable, "-m", "grantflow", "serve", "--port", str(port)]
    command += ["--worker-concurrency", "0", "--no-scheduler"]
    base = f"http://127.0.0.1:{port}"
    with (directory / "serve.log").open("wb") as err:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_healthy(base, server)
        latencies: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()
        per_client = deliveries // 8

        def client() -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                for _ in range(per_client):
                    body = json.dumps({"email": f"{uuid.uuid4().hex}@example.com"}).encode()
                    headers = {
                        "Content-Type": "application/json",
                        "Grantflow-Signature": sign(secret, body, int(time.time())),
                        "Grantflow-Delivery": uuid.uuid4().hex,
                    }
                    t0 = time.perf_counter()
                    status = http.post(f"/hooks/{workflow_id}", content=body, headers=headers)
                    took = (time.perf_counter() - t0) * 1000
                    with lock:
                        latencies.append(took)
                        statuses.append(status.status_code)

        warm = threading.Thread(target=client)  # imports, pools, plan cache
        per_client, wanted = 5, per_client
        warm.start()
        warm.join()
        latencies.clear()
        statuses.clear()
        per_client = wanted
        threads = [threading.Thread(target=client) for _ in range(8)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    accepted = statuses.count(202)
    return {
        "database": "postgresql",
        "clients": 8,
        "deliveries": len(statuses),
        "accepted": accepted,
        "accepted_per_s": round(accepted / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(bench_engine.percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


def bench_engine_free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, server: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"grantflow serve exited with {server.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("grantflow serve did not answer /healthz")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5 s window, 400 deliveries")
    args = parser.parse_args()
    configure_logging("warning", "json")
    # this process's master key (the audit chain's, the webhook secret's), and the server's
    os.environ["GRANTFLOW_SECRET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    admin = make_url(os.environ.get("GRANTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    admin = admin.set(drivername="postgresql+psycopg")
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    result: dict[str, Any] = {"load_average": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="grantflow-bench-") as tmp, recording_server() as url:
        directory = Path(tmp)
        with bench_engine.postgres_database(admin) as db:
            result["shared_rate_limit"] = measure_rate(
                db, url, directory, 5.0 if args.quick else 20.0
            )
            log(f"rate: {result['shared_rate_limit']}")
            result["webhook_intake"] = measure_webhooks(db, directory, 400 if args.quick else 2000)
            log(f"webhooks: {result['webhook_intake']}")
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
