"""What the server does for a statement (PostgreSQL): the statements a test's requests sent on
a table, and how many rows the server's scans read to answer one of them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event

from grantflow.store.database import Database


@contextlib.contextmanager
def selects_on(db: Database, table: str) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on `table` this process sends on `db` meanwhile, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT") and f"FROM {table}" in statement:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def rows_read(db: Database, statement: str, parameters: Any) -> int:
    """Rows the server's scans produced or threw away running `statement` (EXPLAIN ANALYZE):
    about a page when an index hands it the page, the table when it walks and filters."""
    with db.engine.connect() as conn:
        raw = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        plan = raw.scalar_one()
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def walk(node: dict[str, Any]) -> int:
        here = 0
        if "Scan" in node["Node Type"]:
            loops = node.get("Actual Loops", 1)
            here = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
        return here + sum(walk(child) for child in node.get("Plans", []))

    return int(walk(plan[0]["Plan"]))


def every_page(
    db: Database, client: Any, path: str, params: dict[str, Any], table: str, order: str
) -> list[Any]:
    """The ids of every page of `path` (`params` holding its filter and limit), first to last;
    each page's statement (the SELECT on `table` whose ORDER BY ends with `order`) reads at
    most twice its page, not the rows older than its cursor."""
    seen: list[Any] = []
    cursor = None
    while True:
        with selects_on(db, table) as sent:
            answer = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        (statement, parameters), *_ = [s for s in sent if order in s[0]]
        read = rows_read(db, statement, parameters)
        assert read <= 2 * params["limit"], f"page {len(seen) // params['limit'] + 1}: {read}"
        body = answer.json()
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return seen
