"""The audit log at scale: `GET /api/v1/audit?limit=50` on PostgreSQL holding N entries (default
2,000,000), filtered the ways an auditor filters it. Prints ONE JSON object on stdout; progress
goes to stderr.

    .venv/bin/python bench/audit_list.py --entries 200000     # a quick look
    .venv/bin/python bench/audit_list.py                      # the full data set

The entries are written in bulk (`INSERT … SELECT … generate_series`), one every 15 seconds back
from now, after the few the app itself wrote: listed, never verified (their hashes are random).
The oldest 1 % are a user's who left (by e-mail and user id), on one object, with an action
nobody has used since; the rest are a busy admin's, on many grants. The API runs in this process
under uvicorn on 127.0.0.1; requests go over HTTP with one keep-alive client and an admin's
token. Figures, per listing, are p50 and p95 of `--requests` requests after 3 warm-ups:
- newest: no filter;
- leaver_email / leaver_id: `actor=` the leaver's e-mail / user id;
- old_action: `action=` the action nobody has used since;
- old_object: `target_type` and `target_id` of the object nobody touched since;
- busy_actor: `actor=` the admin's e-mail (most entries);
- absent_actor: `actor=` an e-mail with no entry.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import httpx
from common import ADMIN_URL, admin_token, log, percentiles, postgres_database, served
from sqlalchemy import text
from sqlalchemy.engine import make_url

from grantflow.logging import configure_logging

LEAVER, LEAVER_ID, OLD_OBJECT = "leaver@example.com", str(uuid.uuid4()), str(uuid.uuid4())


def fill(conn: Any, total: int) -> None:
    """`total` entries back from now, the oldest 1 % the leaver's (see the module's text)."""
    conn.execute(
        text(
            "INSERT INTO audit_entries (at, actor_id, actor, action, target_type, target_id, "
            "summary, prev_hash, hash) SELECT now() - g * interval '15 seconds', "
            "CASE WHEN old THEN :leaver_id ELSE :admin_id END, "
            "CASE WHEN old THEN :leaver ELSE 'admin@example.com' END, "
            "CASE WHEN old THEN 'key.rotated' ELSE 'grant.created' END, "
            "CASE WHEN old THEN 'key' ELSE 'grant' END, "
            "CASE WHEN old THEN :old_object ELSE md5(g::text) END, "
            "'{}', repeat('0', 64), md5(g::text) || md5((g + 1)::text) "
            "FROM (SELECT g, g > :total - :old AS old FROM generate_series(:total, 1, -1) AS g) "
            "AS copies"
        ),
        {
            "total": total,
            "old": total // 100,
            "leaver": LEAVER,
            "leaver_id": LEAVER_ID,
            "admin_id": str(uuid.uuid4()),
            "old_object": OLD_OBJECT,
        },
    )
    conn.execute(text("ANALYZE audit_entries"))


def timed(client: httpx.Client, params: dict[str, Any], requests: int) -> dict[str, Any]:
    figures, answer = percentiles(
        lambda: client.get("/api/v1/audit", params=params).raise_for_status(), requests
    )
    return {**figures, "items": len(answer.json()["items"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2_000_000, help="entries in the log")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per listing")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        token = admin_token(db)
        log(f"writing {options.entries} entries")
        began = time.monotonic()
        with db.engine.begin() as conn:
            fill(conn, options.entries)
        log(f"written in {time.monotonic() - began:.0f}s")
        with db.engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM audit_entries")).scalar_one()
        listings = {
            "newest": {},
            "leaver_email": {"actor": LEAVER},
            "leaver_id": {"actor": LEAVER_ID},
            "old_action": {"action": "key.rotated"},
            "old_object": {"target_type": "key", "target_id": OLD_OBJECT},
            "busy_actor": {"actor": "admin@example.com"},
            "absent_actor": {"actor": "nobody@example.com"},
        }
        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
            ) as client,
        ):
            figures = {
                name: timed(client, {"limit": 50, **params}, options.requests)
                for name, params in listings.items()
            }
    print(json.dumps({"database": "postgresql", "entries": total, "listings": figures}))


if __name__ == "__main__":
    main()
