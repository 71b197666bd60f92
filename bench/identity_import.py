"""A CSV identity import among many identities: N identities (default 100,000) on PostgreSQL,
then a file of `--rows` rows (default 2,000): half new people, half changes to existing ones
(a new title), each naming an existing manager. Prints ONE JSON object on stdout; progress goes
to stderr.

    .venv/bin/python bench/identity_import.py --people 20000 --rows 500     # a quick look
    .venv/bin/python bench/identity_import.py                               # 100,000 / 2,000

The identities are written in bulk (`common.bulk_identities`). The import runs as
`POST /api/v1/identities/import` runs it (`access.identity_imports.import_csv`: the batches the
workers write, 50 rows to a transaction, carried through in one call). Figures: seconds, rows a
second, statements per row, and the longest transaction (how long the audit chain, which every
audited change waits for, is held at a time).

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import ACTOR, ADMIN_URL, StatementCounter, bulk_identities, log, postgres_database
from sqlalchemy import event
from sqlalchemy.engine import make_url

from grantflow.access.identity_imports import import_csv
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue


def csv_file(people: int, rows: int) -> bytes:
    lines = ["email,display_name,title,manager"]
    for n in range(rows):
        boss = f"person{(n * 7919) % people}@example.com"
        if n % 2:
            lines.append(f"person{(n * 104729) % people}@example.com,,Engineer {n},{boss}")
        else:
            lines.append(f"joiner{n}@example.com,Joiner {n},Analyst,{boss}")
    return ("\n".join(lines) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000, help="identities before")
    parser.add_argument("--rows", type=int, default=2_000, help="rows in the file")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db, StatementCounter() as counter:
        log(f"writing {options.people} identities")
        bulk_identities(db, options.people)
        content = csv_file(options.people, options.rows)
        longest = [0.0]
        began_at: dict[int, float] = {}

        def begun(conn: Any) -> None:
            began_at[id(conn)] = time.perf_counter()

        def ended(conn: Any) -> None:
            start = began_at.pop(id(conn), None)
            if start is not None:
                longest[0] = max(longest[0], time.perf_counter() - start)

        event.listen(db.engine, "begin", begun)
        event.listen(db.engine, "commit", ended)
        queue = DatabaseQueue(db)
        log(f"importing {options.rows} rows")
        counter.on = True
        began = time.perf_counter()
        report = import_csv(db, ACTOR, queue, content, filename="people.csv")
        took = time.perf_counter() - began
        counter.on = False
        queue.close()
    statements = sum(counter.by_thread.values())
    print(
        json.dumps(
            {
                "database": "postgresql",
                "people": options.people,
                "rows": options.rows,
                "counts": report.counts.model_dump(),
                "seconds": round(took, 2),
                "rows_per_second": round(options.rows / took, 1),
                "statements_per_row": round(statements / options.rows, 1),
                "longest_transaction_seconds": round(longest[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
