"""Closing an access review whose default decision is revoke, at scale: a manager campaign over
N active grants (default 10,000; one application with an access_revoked workflow, so each
revocation starts a run) is closed by hand with every item undecided. Prints ONE JSON object on
stdout; progress goes to stderr.

    .venv/bin/python bench/review_close.py --grants 1000     # a quick look
    .venv/bin/python bench/review_close.py                   # 10,000 grants

Figures:
- close_seconds, statements: the close itself (`governance.reviews.close`, one transaction, as
  `POST /api/v1/reviews/{id}/close` runs it);
- revoked_seconds: from the close until every grant is revoked, the remaining revocations done
  as a worker's timer does them (`governance.review_listeners.close_ended_reviews`, in a loop);
  statements_per_revocation: the statements those sent (this thread's), per revocation;
- audited_change_wait_ms: while all that happens, another session makes an audited change every
  50 ms (as any admin's change does); its p50 and max: how long the audit chain was held.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from common import ACTOR, ADMIN_URL, log, postgres_database
from review_start import inventory
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from grantflow import audit
from grantflow.access.grants import GrantStatus
from grantflow.access.models import Grant
from grantflow.definitions.workflows import create_workflow, publish
from grantflow.engine import hooks
from grantflow.governance import reviews
from grantflow.governance.models import AccessReview
from grantflow.governance.review_config import ReviewConfig
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.store.base import utcnow
from grantflow.store.database import Database

REVOKE_WORKFLOW = {
    "name": "Remove from CRM",
    "application": "CRM",
    "trigger": {"type": "access_revoked"},
    "steps": [{"id": "note", "type": "set", "config": {"values": {"removed": True}}}],
}


def audited_changes(db: Database, stop: threading.Event, waits: list[float]) -> None:
    """An admin's change every 50 ms, each its own audited transaction: how long it waits."""
    while not stop.wait(0.05):
        began = time.monotonic()
        with db.transaction() as session:
            audit.record(session, ACTOR, "bench.change", "bench", None, {})
        waits.append((time.monotonic() - began) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=10_000, help="undecided items to revoke")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        log(f"making {options.grants} grants")
        inventory(db, options.grants)
        with db.transaction() as session:
            version = create_workflow(session, ACTOR, REVOKE_WORKFLOW)
            publish(session, ACTOR, version.workflow_id, version.number)
        config = ReviewConfig.model_validate(
            {
                "name": "Quarterly",
                "scope": {"applications": ["CRM"]},
                "reviewer": "manager",
                "fallback": {"roles": ["admin"]},
                "default_decision": "revoke",
            }
        )
        queue = DatabaseQueue(db)
        with db.transaction() as session:
            review_id = reviews.start_review(session, ACTOR, queue, config).id
        sent = [0]
        counting = threading.get_ident()  # (not the audited changes' thread)

        def count(*_args: Any) -> None:
            if threading.get_ident() == counting:
                sent[0] += 1

        waits: list[float] = []
        stop = threading.Event()
        changes = threading.Thread(target=audited_changes, args=(db, stop, waits))
        changes.start()
        log("closing the campaign")
        event.listen(db.engine, "before_cursor_execute", count)
        began = time.monotonic()
        with db.transaction() as session:
            reviews.close(session, ACTOR, queue, review_id)
        closed = time.monotonic() - began
        event.remove(db.engine, "before_cursor_execute", count)
        statements = sent[0]
        event.listen(db.engine, "before_cursor_execute", count)
        ticks = 0
        while True:
            with db.transaction() as session:
                review = session.get(AccessReview, review_id)
                assert review is not None
                if review.status == "closed":
                    break
            for listener in hooks.tick_listeners():
                if listener.__name__ == "close_ended_reviews":
                    with db.transaction() as session:
                        listener(session, queue, utcnow())
            ticks += 1
        revoked = time.monotonic() - began
        event.remove(db.engine, "before_cursor_execute", count)
        stop.set()
        changes.join()
        queue.close()
        with db.transaction() as session:
            active = session.execute(
                select(func.count()).where(Grant.status == GrantStatus.ACTIVE)
            ).scalar_one()
    waits.sort()
    print(
        json.dumps(
            {
                "database": "postgresql",
                "grants": options.grants,
                "close_seconds": round(closed, 2),
                "statements": statements,
                "revoked_seconds": round(revoked, 2),
                "ticks": ticks,
                # the statements of the revocations after the close's own, per revocation
                "statements_per_revocation": round(
                    (sent[0] - statements) / max(1, options.grants - reviews.REVOKE_BATCH), 2
                ),
                "still_active": active,
                "audited_change_wait_ms": {
                    "count": len(waits),
                    "p50": round(waits[len(waits) // 2], 1) if waits else None,
                    "max": round(waits[-1], 1) if waits else None,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
