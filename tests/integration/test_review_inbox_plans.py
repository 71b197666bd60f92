"""A reviewer's items are found by an index, not by reading every pending item (PostgreSQL,
10,000 pending items).

A reviewer's inbox read every pending item of every open campaign and matched its reviewer
lists in Python: 20 s for an approver with nothing to decide among 100,000 pending items. Each
decision read the campaign's pending items again to learn whether the reviewer had any left
(2 s), and a page of items cost five statements an item. Here each statement on the items reads
about what it returns, by the server's own count (EXPLAIN ANALYZE), and a page of 50 costs the
statements of a page of 10."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, select, text

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.governance.models import ReviewAssignee, ReviewItem
from grantflow.store.base import new_id
from tests.conftest import Api
from tests.support.plans import rows_read, selects_on
from tests.support.reviews import manager_campaign, people

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
]

API = "/api/v1"
PENDING = 10_000
ROLE_ITEMS = 20
FEW = 150  # rows a statement may read: a page through two indexes, and room for the plan


def client_of(api: Api, email: str) -> httpx.Client:
    actor = Actor.system("test")
    with api.database.transaction() as session:
        user = session.execute(select(User).where(User.email == email)).scalar_one()
        _, raw = create_token(session, actor, user_id=user.id, name="test", ttl_days=1)
    return api.client(raw)


@pytest.fixture
def campaign(api: Api) -> str:
    """A manager campaign over 6 grants (boss1 reviews person1 and person4), then PENDING more
    items, all boss0's, and ROLE_ITEMS for the admins' role: its id."""
    people(api.database, "CRM", 6)
    review_id = manager_campaign(api.database, "CRM")
    with api.database.transaction() as session:
        boss0 = session.execute(
            select(User.id).where(User.email == "crm-boss0@example.com")
        ).scalar_one()
        [identity_id] = session.execute(
            select(ReviewItem.identity_id).where(ReviewItem.reviewer_user_ids == [boss0]).limit(1)
        ).one()
    items = [
        {
            "id": new_id(),
            "review_id": review_id,
            "grant_id": new_id(),
            "identity_id": identity_id,
            "application_id": new_id(),
            "role": "",
            "reviewer_user_ids": [boss0],
            "reviewer_roles": [],
            "reviewer_source": "manager",
            "defaulted": False,
            "revoked": False,
        }
        for _ in range(PENDING)
    ]
    fallback = [  # (and a few routed to the admins' role, the usual fallback)
        {**item, "id": new_id(), "grant_id": new_id(), "reviewer_user_ids": [],
         "reviewer_roles": ["admin"], "reviewer_source": "fallback"}
        for item in items[:ROLE_ITEMS]
    ]  # fmt: skip
    with api.database.engine.begin() as conn:
        conn.execute(insert(ReviewItem.__table__), items + fallback)
        conn.execute(
            insert(ReviewAssignee.__table__),
            [{"id": new_id(), "item_id": i["id"], "user_id": boss0, "role": None} for i in items]
            + [
                {"id": new_id(), "item_id": i["id"], "user_id": None, "role": "admin"}
                for i in fallback
            ],
        )
        conn.execute(text("ANALYZE access_review_items"))
        conn.execute(text("ANALYZE access_review_assignees"))
    return review_id


def each_reads_few(api: Api, sent: list[tuple[str, Any]]) -> None:
    assert sent
    for statement, parameters in sent:
        read = rows_read(api.database, statement, parameters)
        assert read <= FEW, f"the server read {read} rows: {statement[-600:]}"


def test_an_inbox_reads_the_reviewers_items_only(api: Api, campaign: str) -> None:
    with api.as_role(Role.APPROVER, "idle@example.com") as idle:
        with selects_on(api.database, "access_review_items") as sent:
            response = idle.get(f"{API}/reviews/inbox")
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []
    each_reads_few(api, sent)

    with api.as_role(Role.ADMIN, "root@example.com") as admin:
        with selects_on(api.database, "access_review_items") as sent:
            response = admin.get(f"{API}/reviews/inbox", params={"limit": 50})
        assert len(response.json()["items"]) == ROLE_ITEMS
    each_reads_few(api, sent)

    with client_of(api, "crm-boss1@example.com") as boss1:
        with selects_on(api.database, "access_review_items") as sent:
            response = boss1.get(f"{API}/reviews/inbox")
        mine = response.json()["items"]
        assert sorted(i["identity"]["email"] for i in mine) == [
            "crm-person1@example.com",
            "crm-person4@example.com",
        ]
        each_reads_few(api, sent)

        with selects_on(api.database, "access_review_items") as sent:
            response = boss1.get(f"{API}/reviews/{campaign}/items", params={"mine": "true"})
        assert len(response.json()["items"]) == 2
        each_reads_few(api, sent)

        # deciding asks whether the reviewer has items left: theirs, not the campaign's
        decide = f"{API}/reviews/{campaign}/items/{mine[0]['id']}/decide"
        with selects_on(api.database, "access_review_items") as sent:
            response = boss1.post(decide, json={"decision": "keep"})
        assert response.status_code == 200, response.text
        each_reads_few(api, sent)


def test_a_page_of_items_costs_the_statements_of_a_smaller_one(api: Api, campaign: str) -> None:
    sent: list[str] = []

    def count(*args: Any) -> None:
        sent.append(args[2])

    def statements(client: httpx.Client, path: str, **params: Any) -> int:
        sent.clear()
        event.listen(api.database.engine, "before_cursor_execute", count)
        try:
            response = client.get(path, params=params)
        finally:
            event.remove(api.database.engine, "before_cursor_execute", count)
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == params["limit"]
        return len(sent)

    with client_of(api, "crm-boss0@example.com") as boss0:
        items = f"{API}/reviews/{campaign}/items"
        assert statements(boss0, items, limit=50) <= statements(boss0, items, limit=10)
        inbox = f"{API}/reviews/inbox"
        assert statements(boss0, inbox, limit=50) <= statements(boss0, inbox, limit=10)
