"""The audit log's filters read only the entries they show (PostgreSQL, 20,000 entries).

The log is newest first. Filtered by a user who left months ago, by the history of an object
nobody touched since, or by an action that is rare and old, the server once walked every newer
entry to skip it (0.5 s for such an actor among 2,000,000 entries; 14 s cold for a user's 31).
Each listing here gives the entries a plain filter over every entry gives, and the server's own
count of the rows it read for the list's statement (EXPLAIN ANALYZE) stays near a page."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text

from grantflow.audit.models import AuditEntry
from grantflow.store.base import new_id, utcnow
from tests.conftest import Api
from tests.support.plans import every_page, rows_read, selects_on

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
]

ENTRIES = 20_000
OLD = 1_000  # the oldest: the leaver's, on the old object, of the rare action (5 %)
LEAVER_ID = new_id()
LEAVER = "leaver@example.com"
OLD_OBJECT = new_id()
PAGE_READ = 200  # rows a listing may read: its page of 51, and room for the plan's shape


@pytest.fixture
def log(api: Api) -> list[dict[str, Any]]:
    """ENTRIES entries (listed, not verified: their hashes are random), one a minute up to now;
    the OLD oldest by the leaver on one object, `key.rotated`; the rest by a busy admin on
    grants, `grant.created`."""
    now = utcnow()
    rows = []
    for i in range(ENTRIES):
        old = i < OLD
        rows.append(
            {
                "at": now - dt.timedelta(minutes=ENTRIES - i),
                "actor_id": LEAVER_ID if old else "admin-id-0000-0000-0000-000000000000",
                "actor": LEAVER if old else "admin@example.com",
                "action": "key.rotated" if old else "grant.created",
                "target_type": "key" if old else "grant",
                "target_id": OLD_OBJECT if old else new_id(),
                "summary": {},
                "prev_hash": "0" * 64,
                "hash": secrets.token_hex(32),
            }
        )
    with api.database.engine.begin() as conn:
        conn.execute(insert(AuditEntry.__table__), rows)
        conn.execute(text("ANALYZE audit_entries"))
        ids = conn.execute(text("SELECT id FROM audit_entries ORDER BY id")).scalars().all()
    entries = list(rows)
    # the ids as the server gave them, in insert order (the entries the app wrote came first)
    for row, entry_id in zip(entries, ids[-ENTRIES:], strict=True):
        row["id"] = entry_id
    return entries


def test_each_filter_lists_its_entries_and_reads_about_a_page(
    api: Api, admin: httpx.Client, log: list[dict[str, Any]]
) -> None:
    listings: list[tuple[dict[str, str], Any, int]] = [
        ({"actor": LEAVER}, lambda e: e["actor"] == LEAVER, PAGE_READ),
        ({"actor": LEAVER_ID}, lambda e: e["actor_id"] == LEAVER_ID, PAGE_READ),
        ({"action": "key.rotated"}, lambda e: e["action"] == "key.rotated", PAGE_READ),
        ({"target_id": OLD_OBJECT}, lambda e: e["target_id"] == OLD_OBJECT, PAGE_READ),
        ({"actor": "nobody@example.com"}, lambda e: False, PAGE_READ),
        ({"actor": "admin@example.com"}, lambda e: e["actor"] == "admin@example.com", PAGE_READ),
        # two filters: counting the second a further filter, the planner expects few of the
        # first's entries to match and may read them all, through one index or both (the
        # leaver's entries, not the log's)
        (
            {"target_type": "key", "target_id": OLD_OBJECT},
            lambda e: e["target_id"] == OLD_OBJECT,
            3 * OLD + PAGE_READ,
        ),
        (
            {"actor": LEAVER, "action": "key.rotated"},
            lambda e: e["actor"] == LEAVER,
            3 * OLD + PAGE_READ,
        ),
    ]
    for params, keep, most in listings:
        with selects_on(api.database, "audit_entries") as sent:
            answer = admin.get("/api/v1/audit", params={"limit": 50, **params})
        assert answer.status_code == 200, answer.text
        expected = sorted((e["id"] for e in log if keep(e)), reverse=True)[:50]
        assert [item["id"] for item in answer.json()["items"]] == expected, params
        (statement, parameters), *_ = [s for s in sent if "audit_entries.id DESC" in s[0]]
        read = rows_read(api.database, statement, parameters)
        assert read <= most, f"{params}: the server read {read} rows for a page of 50"


def test_an_actors_entries_page_to_the_end_each_once(
    api: Api, admin: httpx.Client, log: list[dict[str, Any]]
) -> None:
    """The leaver's 1,000 entries, 200 a page, newest first: each once, then no cursor; every
    page reads about itself, not the entries older than its cursor."""
    params = {"actor": LEAVER_ID, "limit": 200}
    seen = every_page(api.database, admin, "/api/v1/audit", params, "audit_entries", "id DESC")
    assert seen == sorted((e["id"] for e in log if e["actor_id"] == LEAVER_ID), reverse=True)
