"""CPU per step on PostgreSQL: one `grantflow worker` process (concurrency 4) works through
batches of seq40 or http40 runs created at once, and the CPU PostgreSQL's processes and the
worker's took per step is read from /proc (as `cpu_ms_per_step` in bench/engine.py, with
larger batches, so that the clock's 10 ms ticks do not matter). Prints ONE JSON array on
stdout, an object per batch; progress goes to stderr.

    .venv/bin/python bench/step_cpu.py                      # seq40, 3 batches of 100 runs
    .venv/bin/python bench/step_cpu.py --workload http40 --runs 40

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database there and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import postgres_database
from engine import (
    DEFAULT_POSTGRES,
    STEPS,
    WorkerSet,
    create_runs,
    http_server,
    log,
    postgres_cpu_seconds,
    publish_all,
    r,
    reader_for,
    wait_done,
)
from sqlalchemy.engine import make_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["seq40", "http40"], default="seq40")
    parser.add_argument("--runs", type=int, default=100, help="runs per batch")
    parser.add_argument("--batches", type=int, default=3)
    args = parser.parse_args()
    admin = make_url(os.environ.get("GRANTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    admin = admin.set(drivername="postgresql+psycopg")
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="grantflow-bench-") as tmp,
        http_server() as url,
        postgres_database(admin) as db,
    ):
        flows = publish_all(db, url)
        reader = reader_for(db)
        with WorkerSet(db, 1, concurrency=4, logs=Path(tmp)) as workers:
            wait_done(reader, create_runs(db, flows[args.workload], 20))  # warm-up
            for batch in range(args.batches):
                postgres, worker = postgres_cpu_seconds(), workers.cpu_seconds()
                started = time.monotonic()
                wait_done(reader, create_runs(db, flows[args.workload], args.runs))
                elapsed = time.monotonic() - started
                steps = args.runs * STEPS
                row = {
                    "workload": args.workload,
                    "batch": batch + 1,
                    "steps": steps,
                    "steps_per_s": r(steps / elapsed, 1),
                    "postgresql_cpu_ms_per_step": r(
                        (postgres_cpu_seconds() - postgres) * 1000 / steps, 3
                    ),
                    "worker_cpu_ms_per_step": r((workers.cpu_seconds() - worker) * 1000 / steps, 3),
                }
                log(json.dumps(row))
                rows.append(row)
    json.dump(rows, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
