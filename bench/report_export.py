"""A large report: an audit export of N entries (default 990,000: with the app's own, under the
limit of a million rows) on PostgreSQL, asked for
over the API, written by a worker's timer (`reports.generate_due`, as a worker runs it) and
downloaded. Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/report_export.py --entries 200000     # a quick look
    .venv/bin/python bench/report_export.py                      # about a million entries

The entries are written in bulk as `bench/audit_list.py` writes them (listed, not verified).
Figures: the request's time (it checks and counts, and answers `generating`), the worker's time
to write the file and how much its process grew while doing so (the peak resident set: the
rows are streamed, so it should not grow with the report), the download's time and size.
Before migration 0032 such a report was refused: more than 100,000 rows.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import httpx
from audit_list import fill
from common import ADMIN_URL, admin_token, log, postgres_database, served
from sqlalchemy.engine import make_url

from grantflow.governance import reports
from grantflow.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=990_000, help="entries in the log")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        token = admin_token(db)
        log(f"writing {options.entries} entries")
        with db.engine.begin() as conn:
            fill(conn, options.entries)
        body = {
            "kind": "audit_export",
            "params": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
        }
        with (
            served(db) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600
            ) as client,
        ):
            began = time.perf_counter()
            asked = client.post("/api/v1/reports", json=body)
            if asked.status_code != 201:
                raise SystemExit(f"refused: {asked.status_code} {asked.text}")
            request_s = time.perf_counter() - began
            report = asked.json()
            log(f"asked: {report['status']}, {report['rows']} rows; writing")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            began = time.perf_counter()
            with db.transaction() as session:
                reports.generate_due(session)
            write_s = time.perf_counter() - began
            grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
            ready = client.get(f"/api/v1/reports/{report['id']}").json()
            began = time.perf_counter()
            size = 0
            with client.stream("GET", ready["content_link"]) as answer:
                answer.raise_for_status()
                for part in answer.iter_bytes():
                    size += len(part)
            download_s = time.perf_counter() - began
    print(
        json.dumps(
            {
                "database": "postgresql",
                "rows": ready["rows"],
                "status": ready["status"],
                "request_s": round(request_s, 2),
                "write_s": round(write_s, 1),
                "rows_per_second": round(ready["rows"] / write_s),
                "peak_rss_growth_mb": round(grew / 1024, 1),
                "size_mb": round(size / 1024 / 1024, 1),
                "download_s": round(download_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
