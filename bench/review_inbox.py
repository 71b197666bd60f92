"""A reviewer's reads in a big campaign: N pending items (default 100,000) of a manager
campaign on PostgreSQL, with 100 managers as reviewers. Prints ONE JSON object on stdout;
progress goes to stderr.

    .venv/bin/python bench/review_inbox.py --items 10000     # a quick look
    .venv/bin/python bench/review_inbox.py                   # 100,000 items

The campaign is started through Grantflow's services over 1,000 grants; its items are then
copied (new ids, each copy assigned as its original) up to N. Figures, through the API served
in this process (p50/p95 ms, and the statements one request sends):
- inbox_idle: `GET /api/v1/reviews/inbox` for an approver with nothing to decide;
- inbox_manager: the same for a manager with 1% of the items;
- items_page: `GET /api/v1/reviews/{id}/items?limit=50`;
- decide: a manager's keep decision (`POST .../decide`), over `--requests` items;
- report: `GET /api/v1/reviews/{id}/report.csv`, once.

GRANTFLOW_BENCH_POSTGRES_URL is the admin URL (default the local server); the script creates its
own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import httpx
from common import (
    ACTOR,
    ADMIN_URL,
    StatementCounter,
    log,
    percentiles,
    postgres_database,
    served,
)
from review_start import inventory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from grantflow.auth.models import User
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user
from grantflow.governance.models import ReviewItem
from grantflow.governance.review_config import ReviewConfig
from grantflow.governance.reviews import start_review
from grantflow.logging import configure_logging
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database

GRANTS = 1000
API = "/api/v1"


def campaign(db: Database, items: int) -> str:
    """A manager campaign over GRANTS grants, its items copied up to `items`: its id."""
    inventory(db, GRANTS)
    config = ReviewConfig.model_validate(
        {
            "name": "Quarterly",
            "scope": {"applications": ["CRM"]},
            "reviewer": "manager",
            "fallback": {"roles": ["admin"]},
        }
    )
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        review_id = start_review(session, ACTOR, queue, config).id
    queue.close()
    with db.engine.begin() as conn:
        assignees = inspect(conn).has_table("access_review_assignees")
    copies = (items - GRANTS) // GRANTS
    columns = (
        "review_id, identity_id, application_id, role, reviewer_user_ids, reviewer_roles, "
        "reviewer_source, defaulted, revoked"
    )
    originals = (
        f"SELECT gen_random_uuid()::text, gen_random_uuid()::text, {columns} "
        "FROM access_review_items WHERE review_id = :review "
        "AND grant_id IN (SELECT id FROM grants)"
    )
    copy = f"INSERT INTO access_review_items (id, grant_id, {columns}) {originals}"
    if assignees:  # (each copy assigned as its original: to its manager)
        copy = (
            f"WITH copies AS ({copy} RETURNING id, reviewer_user_ids) "
            "INSERT INTO access_review_assignees (id, item_id, user_id) "
            "SELECT gen_random_uuid()::text, id, reviewer_user_ids->>0 FROM copies"
        )
    for n in range(copies):
        with db.engine.begin() as conn:
            conn.execute(text(copy), {"review": review_id})
        if n % 10 == 9:
            log(f"  {GRANTS * (n + 2)} items")
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return review_id


def token(db: Database, email: str, role: Role | None = None) -> str:
    with db.transaction() as session:
        user = session.execute(select(User).where(User.email == email)).scalar_one_or_none()
        if user is None:
            assert role is not None
            user = create_user(session, ACTOR, email=email, roles=[role])
        _, raw = create_token(session, ACTOR, user_id=user.id, name="bench", ttl_days=1)
    return raw


def measured(
    counter: StatementCounter, call: Any, requests: int, warmups: int = 1
) -> dict[str, Any]:
    figures, _ = percentiles(call, requests, warmups)
    counter.by_thread.clear()
    counter.on = True
    call()
    counter.on = False
    return {**figures, "statements": sum(counter.by_thread.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="pending items")
    parser.add_argument("--requests", type=int, default=5, help="timed requests per figure")
    options = parser.parse_args()
    configure_logging("warning", "json")
    with postgres_database(make_url(ADMIN_URL)) as db, StatementCounter() as counter:
        log(f"making a campaign of {options.items} items")
        review_id = campaign(db, options.items)
        with db.transaction() as session:
            mine = list(
                session.execute(
                    select(ReviewItem.id)
                    .join(User, User.id == ReviewItem.reviewer_user_ids[0].as_string())
                    .where(User.email == "boss0@example.com")
                    .order_by(ReviewItem.id)
                    .limit(options.requests + 1)
                ).scalars()
            )
        with served(db) as url:
            idle = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token(db, 'idle@example.com', Role.APPROVER)}"},
                timeout=600,
            )
            boss = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token(db, 'boss0@example.com')}"},
                timeout=600,
            )
            figures: dict[str, Any] = {}
            log("inbox")
            figures["inbox_idle"] = measured(
                counter,
                lambda: idle.get(f"{API}/reviews/inbox").raise_for_status(),
                options.requests,
            )
            figures["inbox_manager"] = measured(
                counter,
                lambda: boss.get(f"{API}/reviews/inbox").raise_for_status(),
                options.requests,
            )
            log("items page")
            figures["items_page"] = measured(
                counter,
                lambda: boss.get(f"{API}/reviews/{review_id}/items?limit=50").raise_for_status(),
                options.requests,
            )
            log("decisions")
            times = []
            for item_id in mine[: options.requests]:
                began = time.perf_counter()
                boss.post(
                    f"{API}/reviews/{review_id}/items/{item_id}/decide", json={"decision": "keep"}
                ).raise_for_status()
                times.append((time.perf_counter() - began) * 1000)
            times.sort()
            figures["decide"] = {"p50_ms": round(times[len(times) // 2], 1)}
            log("report")
            counter.by_thread.clear()
            counter.on = True
            began = time.perf_counter()
            report = boss.get(f"{API}/reviews/{review_id}/report.csv")
            took = time.perf_counter() - began
            counter.on = False
            report.raise_for_status()
            figures["report"] = {
                "seconds": round(took, 2),
                "rows": report.text.count("\n") - 1,
                "statements": sum(counter.by_thread.values()),
            }
            idle.close()
            boss.close()
    print(json.dumps({"database": "postgresql", "items": options.items, **figures}))


if __name__ == "__main__":
    main()
