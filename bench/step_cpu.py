"""CPU per step on PostgreSQL: one `grantflow worker` process (concurrency 4; `--workers` for
more) works through batches of seq40 or http40 runs created at once, and the CPU PostgreSQL's
processes and the workers' took per step is read from /proc (as `cpu_ms_per_step` in
bench/engine.py, with larger batches, so that the clock's 10 ms ticks do not matter).
`waits`: what the database's busy backends were doing, sampled from pg_stat_activity every
5 ms during the batch (the share of samples: on CPU, waiting for a row lock, for the WAL's
flush...). `wal_bytes_per_step`: the WAL the server wrote during the batch, per step (the
script is assumed to be the server's only writer); `--wal-records`: the records themselves,
by kind and relation (pg_walinspect). Prints ONE JSON array on stdout: first
`commit_floor` (what one durable write costs on this machine, as in bench/engine.py), an object
per batch, and last what the runs left on disk (`storage`: each table with its indexes, and
bytes per step); progress goes to stderr.

    .venv/bin/python bench/step_cpu.py                      # seq40, 3 batches of 100 runs
    .venv/bin/python bench/step_cpu.py --workload http40 --runs 40
    .venv/bin/python bench/step_cpu.py --workload run5 --runs 400    # a run's fixed cost

`--workload pickup` (one `set` step) and `run5` (set, http, set, http, set) weigh what a run
costs around its steps (its claim, its take, its end): each batch also prints the CPU per run.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database there and drops it at the end.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from common import commit_floor, postgres_database, wal_position
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
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

STEPS_OF = {"seq40": STEPS, "http40": STEPS, "pickup": 1, "run5": 5}  # steps per run


class WaitSampler:
    """Samples what the busy backends of one database are waiting for, until taken."""

    def __init__(self, url: str, database: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)
        self._database = database
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._sample()
        except Exception as exc:  # reported by `take`, not read as "no waits"
            self._error = repr(exc)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            rows = self._conn.execute(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE datname = %s "
                "AND state = 'active' AND pid <> pg_backend_pid()",
                (self._database,),
            ).fetchall()
            with self._lock:
                for kind, event in rows:
                    self._counts[f"{kind}:{event}" if kind else "cpu"] += 1

    def take(self) -> dict[str, float]:
        """Each wait's share of the busy samples since the last take."""
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
        if self._error:
            raise RuntimeError(f"the wait sampler stopped: {self._error}")
        total = sum(counts.values()) or 1
        return {name: r(n / total, 3) for name, n in counts.most_common(6)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()


def wal_records(admin: str, reader: Engine, start: int, end: int, steps: int) -> dict[str, float]:
    """The WAL records the server wrote between two positions, per step, by kind and relation
    ("Heap/LOCK usage_counters": 2.02): `--wal-records`, with the pg_walinspect extension
    (PostgreSQL 15+, created in the admin database; a superuser may create it)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        rows = conn.execute(
            "SELECT resource_manager || '/' || record_type, "
            "substring(block_ref FROM 'rel [0-9]+/[0-9]+/([0-9]+)'), count(*) "
            "FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn) GROUP BY 1, 2",
            (_lsn(start), _lsn(end)),
        ).fetchall()
    with reader.connect() as conn:
        names = dict(
            conn.execute(text("SELECT relfilenode::text, relname FROM pg_class")).tuples().all()
        )
    counted = collections.Counter(
        {f"{kind} {names.get(rel, rel or '')}".strip(): n for kind, rel, n in rows}
    )
    return {name: r(n / steps, 2) for name, n in counted.most_common(14)}


def _lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def storage(reader: Engine, steps: int) -> dict[str, Any]:
    """What the runs left on disk before any vacuum: each table's size with its indexes (those
    over 64 kB), and their sum per step."""
    with reader.connect() as conn:
        sizes = {
            name: size
            for name, size in conn.execute(
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname = current_schema() ORDER BY 2 DESC"
                )
            )
            if size > 64 * 1024
        }
    return {
        "bytes_per_step": round(sum(sizes.values()) / steps),
        "tables_kb": {name: size // 1024 for name, size in sizes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(STEPS_OF), default="seq40")
    parser.add_argument("--runs", type=int, default=100, help="runs per batch")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--wal-records",
        action="store_true",
        help="each batch's WAL records per step, by kind and relation (pg_walinspect)",
    )
    args = parser.parse_args()
    admin = make_url(os.environ.get("GRANTFLOW_BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    admin = admin.set(drivername="postgresql+psycopg")
    rows = []
    with (
        contextlib.ExitStack() as stack,
        tempfile.TemporaryDirectory(prefix="grantflow-bench-") as tmp,
        http_server() as url,
        postgres_database(admin) as db,
    ):
        flows = publish_all(db, url)
        reader = reader_for(db)
        with WorkerSet(db, args.workers, concurrency=4, logs=Path(tmp)) as workers:
            wait_done(reader, create_runs(db, flows[args.workload], 20))  # warm-up
            rows.append({"workload": args.workload, "commit_floor": commit_floor(db)})
            admin_dsn = admin.set(drivername="postgresql").render_as_string(False)
            waits = WaitSampler(admin_dsn, str(db.url.database))
            stack.callback(waits.close)
            for batch in range(args.batches):
                waits.take()
                postgres, worker = postgres_cpu_seconds(), workers.cpu_seconds()
                wal = wal_position(db)
                started = time.monotonic()
                wait_done(reader, create_runs(db, flows[args.workload], args.runs))
                elapsed = time.monotonic() - started
                postgres = (postgres_cpu_seconds() - postgres) * 1000  # ms, this batch
                worker = (workers.cpu_seconds() - worker) * 1000
                steps = args.runs * STEPS_OF[args.workload]
                row = {
                    "workload": args.workload,
                    "workers": args.workers,
                    "batch": batch + 1,
                    "steps": steps,
                    "steps_per_s": r(steps / elapsed, 1),
                    "postgresql_cpu_ms_per_step": r(postgres / steps, 3),
                    "worker_cpu_ms_per_step": r(worker / steps, 3),
                    "cpu_ms_per_run": {
                        "postgresql": r(postgres / args.runs, 3),
                        "worker": r(worker / args.runs, 3),
                    },
                    "wal_bytes_per_step": round((wal_position(db) - wal) / steps),
                    "waits": waits.take(),
                }
                if args.wal_records:
                    row["wal_records_per_step"] = wal_records(
                        admin_dsn, reader, wal, wal_position(db), steps
                    )
                log(json.dumps(row))
                rows.append(row)
        steps = (20 + args.runs * args.batches) * STEPS_OF[args.workload]  # (with the warm-up's)
        rows.append({"workload": args.workload, "storage": storage(reader, steps)})
    json.dump(rows, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
