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
