"""Verifying the audit chain at scale: `grantflow audit verify` (`audit.log.verify`, as
`GET /api/v1/audit/verify` runs it) over N keyed entries (default 1,000,000) on PostgreSQL.
Prints ONE JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/audit_verify.py --entries 200000     # a quick look
    .venv/bin/python bench/audit_verify.py                      # a million entries

The entries are a valid chain, written in bulk: each is signed as `audit.record` signs it (the
product's own `_canonical` and `sign`), after the few the app wrote itself. Figures: seconds to
verify in this process, and entries a second.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid

from common import ADMIN_URL, log, postgres_database
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from grantflow.audit.keys import sign
from grantflow.audit.log import GENESIS, _canonical, keys_of, verify
from grantflow.audit.models import AuditEntry

CHUNK = 20_000


def fill(db: object, total: int) -> None:
    """`total` entries chained after the head, one a second back from now."""
    with db.transaction() as session:  # type: ignore[attr-defined]
        key = keys_of(session).current()
        head = session.execute(
            select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).scalar_one_or_none()
    previous = head or GENESIS
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=total)
    for offset in range(0, total, CHUNK):
        rows = []
        for n in range(offset, min(offset + CHUNK, total)):
            entry = AuditEntry(
                at=start + dt.timedelta(seconds=n),
                actor_id=None,
                actor="admin@example.com",
                action="grant.created",
                target_type="grant",
                target_id=str(uuid.UUID(int=n)),
                summary={"identity": f"p{n}@example.com", "application": "Wiki", "role": None},
                request_id=uuid.UUID(int=n).hex,
                prev_hash=previous,
                key_id=key.id,
            )
            entry.hash = previous = sign(key.chain, entry.prev_hash + _canonical(entry))
            rows.append(
                {c: getattr(entry, c) for c in ("at", "actor_id", "actor", "action",
                 "target_type", "target_id", "summary", "request_id", "prev_hash", "hash",
                 "key_id")}
            )  # fmt: skip
        with db.transaction() as session:  # type: ignore[attr-defined]
            session.execute(insert(AuditEntry), rows)
        log(f"  {offset + len(rows):,} entries written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    options = parser.parse_args()
    with postgres_database(make_url(ADMIN_URL)) as db:
        log(f"writing {options.entries:,} chained entries")
        fill(db, options.entries)
        log("verifying")
        began = time.perf_counter()
        with db.transaction() as session:
            report = verify(session)
        took = time.perf_counter() - began
    assert report.ok, report.reason
    print(
        json.dumps(
            {
                "database": "postgresql",
                "entries": report.checked,
                "seconds": round(took, 2),
                "entries_per_second": round(report.checked / took),
            }
        )
    )


if __name__ == "__main__":
    main()
