"""Closing a campaign whose default is revoke: the undecided items are decided in one
statement, and their grants are revoked a batch per transaction (both databases).

Revoking 10,000 grants in the closing transaction took minutes, and it held the audit chain the
whole time: every other audited change in the product waited. Now the close revokes the first
batch; the campaign is `closing`, with its revocations still to do counted, until the workers'
timer has revoked the rest, one transaction per batch, each batch's grants, people and
applications read once."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, text, update

from grantflow import audit
from grantflow.access import grants as grant_service
from grantflow.access.grants import GrantStatus
from grantflow.access.models import Grant
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.definitions.workflows import create_workflow, publish
from grantflow.engine.models import Run
from grantflow.errors import Conflict
from grantflow.governance import reviews
from grantflow.governance.models import AccessReview, ReviewAssignee, ReviewItem
from grantflow.governance.review_decisions import decide
from grantflow.governance.review_queries import get_review, review_view
from grantflow.queue.database import DatabaseQueue
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.support.engine import running_worker
from tests.support.people import ok
from tests.support.plans import selects_on
from tests.support.processes import poll
from tests.support.reviews import ACTOR, manager_campaign, people

API = "/api/v1"
BATCH = 3
real_revoke_item = reviews.revoke_item


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reviews, "REVOKE_BATCH", BATCH)


def close(db: Database, review_id: str) -> dict[str, Any]:
    queue = DatabaseQueue(db)
    try:
        with db.transaction() as session:
            return review_view(session, reviews.close(session, ACTOR, queue, review_id))
    finally:
        queue.close()


def active_grants(db: Database, app: str) -> int:
    with db.transaction() as session:
        return len(
            session.execute(
                select(Grant.id)
                .join(ReviewItem, ReviewItem.grant_id == Grant.id)
                .join(AccessReview, AccessReview.id == ReviewItem.review_id)
                .where(AccessReview.name == f"{app} review", Grant.status == GrantStatus.ACTIVE)
            ).all()
        )


def actions(db: Database, review_id: str) -> list[dict[str, Any]]:
    """The campaign's audit entries after its start."""
    with db.transaction() as session:
        return [
            {"action": e.action, **e.summary}
            for e in session.execute(
                select(AuditEntry)
                .where(AuditEntry.target_id == review_id)
                .where(AuditEntry.action != "access_review.started")
                .order_by(AuditEntry.id)
            ).scalars()
        ]


def test_the_close_revokes_a_batch_and_the_timer_the_rest_a_transaction_each(
    database: Database,
) -> None:
    people(database, "Wiki", 8)
    review_id = manager_campaign(database, "Wiki", default_decision="revoke")
    queue = DatabaseQueue(database)
    with database.transaction() as session:  # one grant ends before the campaign does
        item = session.execute(select(ReviewItem).order_by(ReviewItem.id.desc())).scalars().first()
        assert item is not None
        grant_service.revoke_grant(session, ACTOR, queue, item.grant_id)

    shown = close(database, review_id)
    assert shown["status"] == "closing"
    assert shown["progress"]["pending"] == 0
    assert shown["progress"]["defaulted"] == 8
    assert shown["progress"]["revocations_pending"] == 4  # 8 - the first batch - the gone one
    assert active_grants(database, "Wiki") == 4
    [closed] = actions(database, review_id)
    assert closed["action"] == "access_review.closed"
    assert closed["revoked_by_default"] == BATCH
    assert closed["progress"]["revocations_pending"] == 4

    with database.transaction() as session:  # one batch: one transaction of the timer
        assert reviews.close_due(session, queue) is True
    with database.transaction() as session:
        review = get_review(session, review_id)
        assert review.status == "closing"
        assert review_view(session, review)["progress"]["revocations_pending"] == 1
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is True  # the last batch closes it
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is False  # and nothing is left
    queue.close()

    assert active_grants(database, "Wiki") == 0
    with database.transaction() as session:
        review = get_review(session, review_id)
        assert review.status == "closed"
        assert review_view(session, review)["progress"]["revocations_pending"] == 0
        items = list(session.execute(select(ReviewItem)).scalars())
        assert sum(i.revoked for i in items) == 7  # the grant that ended first was not revoked
        assert {i.decision for i in items} == {"revoke"}
        assert all(i.defaulted for i in items)
        revoked = session.execute(
            select(Grant).where(
                Grant.status == GrantStatus.REVOKED, Grant.revoke_reason == "review"
            )
        ).scalars()
        assert {g.revoked_by for g in revoked} == {"system:access-review"}
    assert [a["action"] for a in actions(database, review_id)] == [
        "access_review.closed",
        "access_review.revocations_done",
    ]
    assert actions(database, review_id)[-1]["revoked_by_default"] == 7
    with database.transaction() as session:
        assert audit.verify(session, []).ok


def test_a_worker_tick_carries_a_closing_campaign_through(database: Database) -> None:
    people(database, "Chat", 10)
    review_id = manager_campaign(database, "Chat", default_decision="revoke")
    assert close(database, review_id)["status"] == "closing"
    with running_worker(database, tick_seconds=3600) as worker:
        worker.tick_once()  # four batches, each its own transaction, in one tick
    with database.transaction() as session:
        assert get_review(session, review_id).status == "closed"
    assert active_grants(database, "Chat") == 0


def test_a_batch_reads_its_grants_people_applications_and_workflows_once(
    database: Database,
) -> None:
    """A batch of revocations reads each table once, not once a grant — the workflows their
    revocations may start and the people's groups too — and marks its items and writes the
    campaign's progress in a statement each."""
    people(database, "Mail", 2 * BATCH + 1)
    revoke = {
        "name": "Remove from Mail",
        "application": "Mail",
        "trigger": {"type": "access_revoked"},
        "steps": [{"id": "note", "type": "set", "config": {"values": {"removed": True}}}],
    }
    with database.transaction() as session:
        version = create_workflow(session, ACTOR, revoke)
        publish(session, ACTOR, version.workflow_id, version.number)
    review_id = manager_campaign(database, "Mail", default_decision="revoke")
    close(database, review_id)
    queue = DatabaseQueue(database)
    updates: list[str] = []

    def updated(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("UPDATE access_review"):
            updates.append(statement.split(" SET")[0])

    event.listen(database.engine, "before_cursor_execute", updated)
    try:
        with (
            selects_on(database, "grants") as grants,
            selects_on(database, "identities") as identities,
            selects_on(database, "applications") as applications,
            selects_on(database, "workflows") as workflows,
            selects_on(database, "identity_groups") as groups,
            database.transaction() as session,
        ):
            reviews.close_due(session, queue)
    finally:
        event.remove(database.engine, "before_cursor_execute", updated)
    queue.close()
    assert active_grants(database, "Mail") == 1  # a batch of BATCH was revoked
    assert len(grants) == 1, grants  # locked together, not one by one
    assert len(identities) == 2, identities  # the people, then their managers
    assert len(applications) == 1, applications
    # the workflows a revocation may start, once (SQLite's start reads its workflow each time)
    considered = [w for w in workflows if "ORDER BY workflows.name" in w[0]]
    assert len(considered) == 1, considered
    assert len(groups) == 1, groups  # the people's groups (each run's subject), together
    assert sorted(updates) == ["UPDATE access_review_items", "UPDATE access_reviews"], updates
    with database.transaction() as session:
        runs = session.execute(
            select(func.count()).select_from(Run).where(Run.trigger == "access_revoked")
        ).scalar_one()
        marked = session.execute(
            select(func.count())
            .select_from(ReviewItem)
            .where(ReviewItem.review_id == review_id, ReviewItem.revoked.is_(True))
        ).scalar_one()
    assert runs == marked == 2 * BATCH  # (the close's own batch, then this one)


def test_an_audited_change_between_batches_keeps_the_chain_whole(database: Database) -> None:
    """Each batch appends to the chain after whatever committed in between."""
    people(database, "Docs", 5)
    review_id = manager_campaign(database, "Docs", default_decision="revoke")
    close(database, review_id)
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        audit.record(session, ACTOR, "test.between", "test", None, {})
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is True  # (the last batch)
    queue.close()
    with database.transaction() as session:
        assert get_review(session, review_id).status == "closed"
        assert audit.verify(session, []).ok


def test_a_campaign_whose_default_is_keep_closes_at_once(database: Database) -> None:
    people(database, "Drive", 5)
    review_id = manager_campaign(database, "Drive")
    shown = close(database, review_id)
    assert shown["status"] == "closed"
    assert shown["progress"]["keep"] == 5
    assert active_grants(database, "Drive") == 5
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is False  # nothing is left to do
    queue.close()


def test_campaigns_whose_end_passed_close_one_a_transaction_and_revoke_in_later_ones(
    database: Database, admin: httpx.Client
) -> None:
    """Quarterly campaigns ending at the same moment: the timer closes one a transaction,
    revoking nothing (two closes in one deadlocked with a reviewer deciding), then revokes a
    batch per transaction."""
    ids = []
    for app in ("Alpha", "Beta", "Gamma"):
        people(database, app, 4)
        ids.append(manager_campaign(database, app, default_decision="revoke"))
    with database.transaction() as session:
        session.execute(update(AccessReview).values(ends_at=utcnow() - dt.timedelta(minutes=1)))
    queue = DatabaseQueue(database)
    with selects_on(database, "grants") as grants:
        for _ in ids:
            with database.transaction() as session:
                assert reviews.close_due(session, queue) is True
    assert grants == []  # no revocation in the closing transactions
    assert [active_grants(database, app) for app in ("Alpha", "Beta", "Gamma")] == [4, 4, 4]
    closing = ok(admin.get(f"{API}/reviews", params={"status": "closing"}))["items"]
    assert sorted(r["id"] for r in closing) == sorted(ids)
    assert {r["progress"]["revocations_pending"] for r in closing} == {4}

    # a reviewer's decision in a closing campaign is refused: its decisions are final
    with database.transaction() as session:
        item = session.execute(
            select(ReviewItem).where(ReviewItem.review_id == ids[0]).limit(1)
        ).scalar_one()
        boss = session.get_one(User, item.reviewer_user_ids[0])
        reviewer = Actor(label=boss.email, user_id=boss.id, permissions=frozenset(Permission))
        with pytest.raises(Conflict) as refused:
            decide(session, reviewer, queue, item.id, "keep")
    assert refused.value.code == "review_closed"

    calls = 0
    while True:
        with database.transaction() as session:
            more = reviews.close_due(session, queue)
        calls += 1
        if not more:
            break
    queue.close()
    assert calls == 3 * 2 + 1  # per campaign a batch of 3 and the last; then nothing
    assert [active_grants(database, app) for app in ("Alpha", "Beta", "Gamma")] == [0, 0, 0]
    assert ok(admin.get(f"{API}/reviews", params={"status": "closing"}))["items"] == []


def test_a_multiple_of_the_batch_closes_with_its_last_batch(database: Database) -> None:
    people(database, "Jira", 2 * BATCH)
    review_id = manager_campaign(database, "Jira", default_decision="revoke")
    assert close(database, review_id)["progress"]["revocations_pending"] == BATCH
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is True  # (the last batch: no empty one after it)
    queue.close()
    with database.transaction() as session:
        assert get_review(session, review_id).status == "closed"
    assert [a["action"] for a in actions(database, review_id)] == [
        "access_review.closed",
        "access_review.revocations_done",
    ]


FAILURE = "the revocation could not be recorded: the grant's application was deleted meanwhile"


def failing_for(
    monkeypatch: pytest.MonkeyPatch, broken: set[str], after: int = 0, error: type = Conflict
) -> dict[str, int]:
    """Revoking fails for the campaigns `broken` after `after` grants of each batch: how many
    times each was tried."""
    real = reviews.revoke_item
    done: dict[str, int] = {}
    tried: dict[str, int] = {}

    def revoke(
        session: Any, actor: Any, queue: Any, review: Any, *rest: Any, **options: Any
    ) -> bool:
        if review.id in broken:
            done[review.id] = done.get(review.id, 0) + 1
            if done[review.id] > after:
                done[review.id] = 0
                tried[review.id] = tried.get(review.id, 0) + 1
                raise error(FAILURE)
        return bool(real(session, actor, queue, review, *rest, **options))

    monkeypatch.setattr(reviews, "revoke_item", revoke)
    return tried


def test_a_campaign_that_fails_to_revoke_waits_and_does_not_hold_up_the_others(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six campaigns whose revocations fail (after revoking a grant of their batch), closed
    first, and one that works: each failure is undone and kept on its campaign, which is tried
    again only after REVOKE_RETRY (and fails again there, inside the timer); the working one is
    revoked meanwhile."""
    broken = []
    for n in range(6):
        people(database, f"Broken{n}", 5)
        broken.append(manager_campaign(database, f"Broken{n}", default_decision="revoke"))
    people(database, "Fine", 5)
    fine = manager_campaign(database, "Fine", default_decision="revoke")
    tried = failing_for(monkeypatch, set(broken), after=1)
    for review_id in [*broken, fine]:
        close(database, review_id)  # (the close's own batch fails for the broken ones)
    shown = close_view(database, broken[0])
    assert shown["status"] == "closing"
    assert shown["revocations_error"] == FAILURE
    assert shown["revocations_retry_at"] - shown["closed_at"] == reviews.REVOKE_RETRY
    assert shown["progress"]["revocations_pending"] == 5  # the grant revoked first was undone
    assert active_grants(database, "Broken0") == 5
    assert tried == dict.fromkeys(broken, 1)

    queue = DatabaseQueue(database)
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is True  # Fine's last batch
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is False  # the others wait for their retry
    assert tried == dict.fromkeys(broken, 1)  # (not tried again before it)
    assert active_grants(database, "Fine") == 0
    assert close_view(database, fine)["status"] == "closed"

    later = utcnow() + reviews.REVOKE_RETRY + dt.timedelta(seconds=1)
    with database.transaction() as session:  # the timer tries five: each fails again
        assert reviews.close_due(session, queue, later) is False
    assert sorted(tried.values()) == [1, 2, 2, 2, 2, 2]
    shown = close_view(database, broken[0])
    assert shown["revocations_error"] == FAILURE
    assert shown["revocations_retry_at"] == later + reviews.REVOKE_RETRY

    monkeypatch.setattr(reviews, "revoke_item", real_revoke_item)  # the cause is fixed
    with database.transaction() as session:
        assert reviews.close_due(session, queue, later + reviews.REVOKE_RETRY) is True
    queue.close()
    shown = close_view(database, broken[0])
    assert shown["revocations_error"] is None
    assert shown["revocations_retry_at"] is None
    assert shown["progress"]["revocations_pending"] < 5


def test_an_unexpected_error_is_kept_on_its_campaign_like_a_refusal(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    people(database, "Odd", 4)
    people(database, "Even", 4)
    odd = manager_campaign(database, "Odd", default_decision="revoke")
    even = manager_campaign(database, "Even", default_decision="revoke")
    failing_for(monkeypatch, {odd}, error=RuntimeError)
    close(database, odd)  # the close itself answers (no 500): the campaign says why
    close(database, even)
    assert close_view(database, odd)["revocations_error"] == f"RuntimeError: {FAILURE}"
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is True
    queue.close()
    assert close_view(database, even)["status"] == "closed"


def close_view(db: Database, review_id: str) -> dict[str, Any]:
    with db.transaction() as session:
        return review_view(session, get_review(session, review_id))


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_grant_another_transaction_holds_is_left_for_a_later_batch(database: Database) -> None:
    """A batch locks the audit chain, then its grants without waiting: one held elsewhere (an
    offboarding revoking grant by grant) stops the batch there, and a later one goes on."""
    people(database, "Held", 2 * BATCH)
    review_id = manager_campaign(database, "Held", default_decision="revoke")
    close(database, review_id)
    with database.transaction() as session:
        rest = list(
            session.execute(
                select(ReviewItem.grant_id)
                .where(ReviewItem.review_id == review_id)
                .order_by(ReviewItem.id)
                .offset(BATCH)
            ).scalars()
        )
    queue = DatabaseQueue(database)
    with database.engine.connect() as other, other.begin():
        other.execute(select(Grant).where(Grant.id == rest[1]).with_for_update())
        with database.transaction() as session:
            assert reviews.close_due(session, queue) is True  # it did one, then stopped
        with database.transaction() as session:
            assert reviews.close_due(session, queue) is False  # nothing it can do yet
            assert get_review(session, review_id).status == "closing"
        assert active_grants(database, "Held") == BATCH - 1
    with database.transaction() as session:
        assert reviews.close_due(session, queue) is True
    queue.close()
    assert active_grants(database, "Held") == 0
    with database.transaction() as session:
        assert get_review(session, review_id).status == "closed"


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_batch_waits_for_the_audit_chain_before_it_locks_its_grants(database: Database) -> None:
    """While another transaction holds the audit chain (an offboarding between two of its
    revocations), a batch waits holding none of its grants: that transaction can go on to lock
    any of them. (Locking the grants first deadlocked with it.)"""
    people(database, "Order", 2 * BATCH)
    review_id = manager_campaign(database, "Order", default_decision="revoke")
    close(database, review_id)
    with database.transaction() as session:
        next_grant = session.execute(
            select(ReviewItem.grant_id)
            .where(ReviewItem.review_id == review_id, ReviewItem.revoked.is_(False))
            .order_by(ReviewItem.id)
            .limit(1)
        ).scalar_one()
    queue = DatabaseQueue(database)
    outcome: list[bool] = []
    batch = threading.Thread(
        target=lambda: outcome.append(timer_call(database, queue)), name="batch"
    )
    with database.transaction() as holder:
        audit.record(holder, ACTOR, "test.offboarding", "test", None, {})  # holds the chain
        batch.start()
        poll(lambda: advisory_waiters(database) == 1, timeout=60, what="the batch to wait")
        locked = holder.execute(
            select(Grant).where(Grant.id == next_grant).with_for_update(nowait=True)
        ).scalar_one()  # (NOWAIT: raises if the waiting batch held it)
        assert locked.status == GrantStatus.ACTIVE
    batch.join(timeout=60)
    queue.close()
    assert outcome == [True]
    assert active_grants(database, "Order") == 0


def timer_call(db: Database, queue: DatabaseQueue) -> bool:
    with db.transaction() as session:
        return reviews.close_due(session, queue)


def advisory_waiters(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar_one()
        )


def test_decided_items_leave_the_assignee_rows_inboxes_walk(database: Database) -> None:
    """A decision removes its item's assignee rows, and a close those of every item: a
    reviewer's inbox walks only what is still to decide, however many campaigns came before."""
    people(database, "Rows", 4)
    review_id = manager_campaign(database, "Rows", default_decision="keep")

    def rows() -> dict[str, int]:
        with database.transaction() as session:
            found = session.execute(
                select(ReviewAssignee.item_id)
                .join(ReviewItem, ReviewItem.id == ReviewAssignee.item_id)
                .where(ReviewItem.review_id == review_id)
            ).scalars()
            counted: dict[str, int] = {}
            for item_id in found:
                counted[item_id] = counted.get(item_id, 0) + 1
            return counted

    before = rows()
    assert len(before) == 4
    queue = DatabaseQueue(database)
    with database.transaction() as session:
        item = session.execute(
            select(ReviewItem).where(ReviewItem.review_id == review_id).limit(1)
        ).scalar_one()
        boss = session.get_one(User, item.reviewer_user_ids[0])
        reviewer = Actor(label=boss.email, user_id=boss.id, permissions=frozenset(Permission))
        decide(session, reviewer, queue, item.id, "keep")
    queue.close()
    assert set(rows()) == set(before) - {item.id}
    close(database, review_id)
    assert rows() == {}
