"""A large report: an audit export of N entries (default 990,000: with the app's own, under the
limit of a million rows) on PostgreSQL, asked for
over the API, written by a worker's timer (`reports.generate_due`, as a worker runs it) and
downloaded. Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/report_export.py --entries 200000     # a quick look
    .venv/bin/python bench/report_export.py                      # about a million entries

The entries are written in bulk as `bench/audit_list.py` writes them (listed, not verified).
Figures: the request's time (it checks and counts, and answers `generating`), the worker's time
to write the file and how much its process grew while doing so (the peak resident set: the
rows are streamed, so it should not grow with the report), the download's time and size, and
`grantflow reports download` of it: its time and its process's peak resident set.
Before migration 0032 such a report was refused: more than 100,000 rows.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from audit_list import fill
from common import ADMIN_URL, admin_token, log, postgres_database, served
from sqlalchemy.engine import make_url

from grantflow.governance import reports
from grantflow.logging import configure_logging


def cli_download(url: str, token: str, report_id: str) -> dict[str, float]:
    """`grantflow reports download` in its own process against the server: its time and its
    peak resident set (the content is written as it arrives: it should not grow with it)."""
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "report.csv"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTFLOW_")}
        command = [sys.executable, "-m", "grantflow", "--url", url, "--token", token]
        # measured by a small parent of its own: a child forked from this (large) process
        # would count this one's pages in its peak
        measure = (
            "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", measure, *command, "reports", "download", report_id,
             "-o", str(target)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"grantflow reports download failed: {done.stderr}")
        peak_kb = int(done.stdout.split()[-1])
        return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


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
            cli = cli_download(url, token, report["id"])
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
                "cli_download_s": cli["seconds"],
                "cli_download_peak_rss_mb": cli["peak_rss_mb"],
            }
        )
    )


if __name__ == "__main__":
    main()
