"""Migration 0028 gives every existing review item its assignee rows (one per user and per role
in its lists), so an inbox finds items of campaigns started before the upgrade; the downgrade
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
    lists = {
        "i-named": ('["u-1", "u-2"]', "[]"),
        "i-role": ("[]", '["admin", "approver"]'),
        "i-both": ('["u-3"]', '["admin"]'),
        "i-nobody": ("[]", "[]"),
    }
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO access_reviews (id, name, scope, reviewers, status, "
                "default_decision, require_justification_for_keep, starts_at, ends_at, "
                f"created_by, created_at, name_key) VALUES ('r-1', 'Q1', '{{}}', '{{}}', 'open', "
                f"'keep', false, {AT}, {AT}, 'x', {AT}, 'q1')"
            )
        )
        for n, (item, (users, roles)) in enumerate(lists.items()):
            conn.execute(
                text(
                    "INSERT INTO access_review_items (id, review_id, grant_id, identity_id, "
                    "application_id, role, reviewer_user_ids, reviewer_roles, reviewer_source, "
                    f"defaulted, revoked) VALUES ('{item}', 'r-1', 'g-{n}', 'p-{n}', 'a-1', '', "
                    f"'{users}', '{roles}', 'named', false, false)"
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
    assert "revoked_through" not in columns
    assert items == len(lists)
