"""Starting an access review at scale: a manager campaign over N active grants (default 10,000;
one application, 100 managers who are reviewers) on PostgreSQL. Prints ONE JSON object on
stdout; progress goes to stderr.

    .venv/bin/python bench/review_start.py --grants 2000     # a quick look
    .venv/bin/python bench/review_start.py                   # 10,000 grants

Identities, users and grants are made through Grantflow's own services (a thousand to a
transaction). Figures: start_seconds, the campaign's start (`governance.reviews.start_review`,
one transaction, as `POST /api/v1/reviews` runs it); statements, what it sent; items.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import ACTOR, ADMIN_URL, log, postgres_database
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.governance.models import ReviewItem
from grantflow.governance.review_config import ReviewConfig
from grantflow.governance.reviews import start_review
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database

MANAGERS = 100


def inventory(db: Database, grants: int) -> None:
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        create_application(
            session, ACTOR, ApplicationCreate(name="CRM", kind=ApplicationKind("directory"))
        )
        for n in range(MANAGERS):
            boss = f"boss{n}@example.com"
            create_user(session, ACTOR, email=boss, roles=[Role.APPROVER])
            create_identity(session, ACTOR, queue, IdentityCreate(email=boss))
    for start in range(0, grants, 1000):
        with db.transaction() as session:
            for n in range(start, min(grants, start + 1000)):
                who = f"person{n}@example.com"
                data = IdentityCreate(email=who, manager=f"boss{n % MANAGERS}@example.com")
                create_identity(session, ACTOR, queue, data)
                create_grant(session, ACTOR, queue, GrantCreate(identity=who, application="CRM"))
        log(f"  {min(grants, start + 1000)} grants")
    queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grants", type=int, default=10_000, help="active grants in scope")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db:
        log(f"making {options.grants} grants")
        inventory(db, options.grants)
        config = ReviewConfig.model_validate(
            {
                "name": "Quarterly",
                "scope": {"applications": ["CRM"]},
                "reviewer": "manager",
                "fallback": {"roles": ["admin"]},
            }
        )
        sent = [0]

        def count(*_args: Any) -> None:
            sent[0] += 1

        queue = DatabaseQueue(db)
        log("starting the campaign")
        event.listen(db.engine, "before_cursor_execute", count)
        began = time.monotonic()
        with db.transaction() as session:
            review_id = start_review(session, ACTOR, queue, config).id
        took = time.monotonic() - began
        event.remove(db.engine, "before_cursor_execute", count)
        queue.close()
        with db.transaction() as session:
            items = session.execute(
                select(func.count()).where(ReviewItem.review_id == review_id)
            ).scalar_one()
    print(
        json.dumps(
            {
                "database": "postgresql",
                "grants": options.grants,
                "items": items,
                "start_seconds": round(took, 2),
                "statements": sent[0],
            }
        )
    )


if __name__ == "__main__":
    main()
