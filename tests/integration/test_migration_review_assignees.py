"""Migration 0028 gives every undecided item of an open campaign its assignee rows (one per user
and per role in its lists; none for decided items, closed campaigns or a list that is JSON
null), so an inbox finds items of campaigns started before the upgrade; the downgrade
drops them, and the lists stay as they were. Downgrading 0027 as well keeps every item (on
SQLite, rebuilding access_reviews would have dropped them all by cascade)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from grantflow.store import migrate
from grantflow.store.database import Database
from tests.support.databases import unmigrated

AT = "'2031-05-06T07:08:09+00:00'"


@pytest.fixture(params=["sqlite", "postgresql"])
def at_0027(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with unmigrated(request.param, tmp_path) as db:
        migrate.upgrade(db, "0027")
        yield db


def test_existing_items_get_their_assignees_and_the_downgrade_drops_them(
    at_0027: Database,
) -> None:
    db = at_0027
    # item: (campaign, reviewer_user_ids, reviewer_roles, decision)
    lists = {
        "i-named": ("r-open", '["u-1", "u-2"]', "[]", None),
        "i-role": ("r-open", "[]", '["admin", "approver"]', None),
        "i-both": ("r-open", '["u-3"]', '["admin"]', None),
        "i-nobody": ("r-open", "[]", "[]", None),
        "i-null": ("r-open", "null", "null", None),
        "i-decided": ("r-open", '["u-4"]', '["admin"]', "'keep'"),
        "i-closed": ("r-closed", '["u-5"]', '["admin"]', "'revoke'"),
    }
    with db.engine.begin() as conn:
        for review, status in (("r-open", "open"), ("r-closed", "closed")):
            conn.execute(
                text(
                    "INSERT INTO access_reviews (id, name, scope, reviewers, status, "
                    "default_decision, require_justification_for_keep, starts_at, ends_at, "
                    f"created_by, created_at, name_key) VALUES ('{review}', '{review}', '{{}}', "
                    f"'{{}}', '{status}', 'keep', false, {AT}, {AT}, 'x', {AT}, '{review}')"
                )
            )
        for n, (item, (review, users, roles, decision)) in enumerate(lists.items()):
            conn.execute(
                text(
                    "INSERT INTO access_review_items (id, review_id, grant_id, identity_id, "
                    "application_id, role, reviewer_user_ids, reviewer_roles, reviewer_source, "
                    f"decision, defaulted, revoked) VALUES ('{item}', '{review}', 'g-{n}', "
                    f"'p-{n}', 'a-1', '', '{users}', '{roles}', 'named', {decision or 'NULL'}, "
                    "false, false)"
                )
            )

    migrate.upgrade(db)
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT item_id, user_id, role FROM access_review_assignees")
        ).all()
    assert sorted((i, u or "", r or "") for i, u, r in rows) == [
        ("i-both", "", "admin"),
        ("i-both", "u-3", ""),
        ("i-named", "u-1", ""),
        ("i-named", "u-2", ""),
        ("i-role", "", "admin"),
        ("i-role", "", "approver"),
    ]

    command.downgrade(migrate.alembic_config(db), "0027")
    with db.engine.connect() as conn:
        assert "access_review_assignees" not in inspect(conn).get_table_names()
        kept = conn.execute(
            text("SELECT reviewer_user_ids FROM access_review_items WHERE id = 'i-named'")
        ).scalar_one()
    assert "u-2" in str(kept)

    command.downgrade(migrate.alembic_config(db), "0026")
    with db.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("access_reviews")}
        items = conn.execute(text("SELECT count(*) FROM access_review_items")).scalar_one()
    assert not {"revoked_through", "revoke_error", "revoke_retry_at"} & columns
    assert items == len(lists)
