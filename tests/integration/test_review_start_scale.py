"""Starting an access review costs statements per reviewer, not per grant (both databases).

A campaign over 43,000 grants took 110 s and 180,000 statements in one transaction (about four
per grant: each item inserted on its own as routing read the next manager, each identity read
again and again), while every other audited change waited on the audit chain's lock. Here a
campaign over four times the grants of another, with the same managers, costs a handful of
statements more, and routes each grant as before."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select, update

from grantflow.access.models import Identity
from grantflow.auth.models import User
from grantflow.governance.models import AccessReview, ReviewItem
from grantflow.governance.review_queries import progress
from grantflow.store.database import Database
from tests.support.plans import selects_on
from tests.support.reviews import manager_campaign, people


def started(db: Database, app: str) -> tuple[int, list[ReviewItem]]:
    """Statements sent to start a manager campaign over `app`, and its items."""
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        review_id = manager_campaign(db, app)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    with db.transaction() as session:
        items = list(
            session.execute(select(ReviewItem).where(ReviewItem.review_id == review_id)).scalars()
        )
        session.expunge_all()
    return len(sent), items


def test_four_times_the_grants_cost_a_few_statements_more(database: Database) -> None:
    people(database, "Small", 10)
    people(database, "Large", 40)
    small, small_items = started(database, "Small")
    large, large_items = started(database, "Large")
    assert len(small_items) == 10
    assert len(large_items) == 40
    assert large <= small + 10, f"{small} statements for 10 grants, {large} for 40"
    with database.transaction() as session:
        bosses = {
            u.email: u.id
            for u in session.execute(select(User).where(User.email.like("large-boss%"))).scalars()
        }
    assert {tuple(i.reviewer_user_ids) for i in large_items} == {(b,) for b in bosses.values()}
    assert all(i.reviewer_source == "manager" and i.routing_problem is None for i in large_items)


def test_a_campaigns_progress_is_counted_by_the_server(database: Database) -> None:
    """The counts a campaign's page shows: the items' reviewers are read only for the pending
    items routed to the fallback (the only ones that can have no reviewer)."""
    people(database, "Counted", 12)
    with database.transaction() as session:  # one manager's people lose their manager
        session.execute(
            update(Identity)
            .where(Identity.email.like("counted-person%"), Identity.email.like("%0@example.com"))
            .values(manager_id=None)
        )
    _, items = started(database, "Counted")
    fallback = [i for i in items if i.reviewer_source == "fallback"]
    assert len(fallback) == 2  # person0, person10
    with database.transaction() as session:
        review = session.get_one(AccessReview, items[0].review_id)
        with selects_on(database, "access_review_items") as sent:
            counts = progress(session, review)
    assert counts == {
        "total": 12,
        "decided": 0,
        "keep": 0,
        "revoke": 0,
        "pending": 12,
        "defaulted": 0,
        "fallback": 2,
        "unassigned": 2,  # (the fallback role has no member here either)
        "percent": 0.0,
        "revocations_pending": 0,
    }
    reviewers_read = [q for q, _ in sent if "reviewer_user_ids" in q]
    assert reviewers_read
    assert all("reviewer_source" in q.split("WHERE")[1] for q in reviewers_read)
