"""An approver's inbox at scale: N approvals waiting on the approver role (default 5,000), on
PostgreSQL; the inbox page through the console and the API. Prints ONE JSON object on stdout;
progress goes to stderr.

    .venv/bin/python bench/inbox.py                 # 5,000 waiting approvals
    .venv/bin/python bench/inbox.py --tasks 200

The runs are started in batches and run by two `grantflow worker` processes until each waits on
its approval. Then, with the app under uvicorn in this process and one keep-alive client per
caller (the approver's session cookie; the approver's token), for each page: the median time
over `--requests` requests after one warm-up, the answer's size, and the statements psycopg
sent for one request (counted in this process):
- console_inbox (`/inbox`, a page of the approver's tasks) and console_home (`/`);
- api_inbox (`GET /api/v1/inbox?limit=50`).

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import (
    ACTOR,
    ADMIN_URL,
    StatementCounter,
    console_client,
    log,
    postgres_database,
    served,
    timed_reads,
)
from engine import WorkerSet, create_runs
from sqlalchemy import text
from sqlalchemy.engine import make_url

from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user
from grantflow.definitions import workflows
from grantflow.logging import configure_logging
from grantflow.store.database import Database

APPROVER = "approver@example.com"


def waiting_approvals(db: Database, count: int, logs: Path) -> None:
    """`count` runs of a one-approval workflow, each waiting on its approval."""
    approval = {
        "id": "approve",
        "type": "approval",
        "config": {
            "title": "A laptop",
            "instructions": "Approve or reject.",
            "approvers": {"roles": ["approver"]},
        },
    }
    document = {
        "name": "bench-approvals",
        "trigger": {"type": "manual"},
        "safety": {"max_runs_per_minute": 1_000_000},
        "steps": [approval],
    }
    with db.transaction() as session:
        flow = workflows.apply_document(session, ACTOR, document, publish_it=True).workflow.id
    with WorkerSet(db, 2, 8, logs):
        for start in range(0, count, 500):
            create_runs(db, flow, min(500, count - start))
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with db.engine.connect() as conn:
                pending = conn.execute(
                    text("SELECT count(*) FROM tasks WHERE status = 'pending'")
                ).scalar_one()
            if pending >= count:
                return
            time.sleep(0.5)
    raise RuntimeError("the approvals did not all wait in time")


def timed(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    client.get(path).raise_for_status()
    with StatementCounter() as counter, counter.counting() as by_thread:
        client.get(path).raise_for_status()
        statements = sum(by_thread.values())
    return {**timed_reads(client, path, requests), "statements": statements}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="approvals waiting")
    parser.add_argument("--requests", type=int, default=7, help="timed requests per page")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with (
        tempfile.TemporaryDirectory(prefix="grantflow-bench-") as logs,
        postgres_database(make_url(ADMIN_URL)) as db,
    ):
        with db.transaction() as session:
            user = create_user(session, ACTOR, email=APPROVER, roles=[Role.APPROVER])
            _, token = create_token(session, ACTOR, user_id=user.id, name="bench", ttl_days=1)
        log(f"starting {options.tasks} runs that wait on an approval")
        waiting_approvals(db, options.tasks, Path(logs))
        with (
            served(db) as url,
            console_client(db, url, APPROVER, Role.APPROVER) as console,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as api,
        ):
            figures = {
                "console_inbox": timed(console, "/inbox", options.requests),
                "console_home": timed(console, "/", options.requests),
                "api_inbox": timed(api, "/api/v1/inbox?limit=50", options.requests),
            }
    print(json.dumps({"database": "postgresql", "waiting_approvals": options.tasks, **figures}))


if __name__ == "__main__":
    main()
