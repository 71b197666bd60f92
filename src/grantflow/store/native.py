"""Statements in PostgreSQL's own SQL, sent by the driver outside SQLAlchemy's execution: the
few a worker sends for every run and step (a claim, a take, a checkpoint), where SQLAlchemy's
per-execution work (the compiled cache's lookup, the result's metadata from every column's
description) was a tenth of a worker's Python time. In autocommit, on a pooled connection.
"""

from __future__ import annotations

import functools
import re
from typing import Any, cast

from sqlalchemy.exc import DBAPIError

from grantflow.store.database import Database

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_NAMED = re.compile(r"(?<![:\w]):(\w+)")  # (not a cast's `::type`)


def driver_sql(sql: str) -> str:
    """`sql` written with `:name` placeholders (as for SQLAlchemy's `text()`) in the driver's
    `%(name)s` ones."""
    return _NAMED.sub(r"%(\1)s", sql)


@functools.cache
def native(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """`sql` with PostgreSQL's own placeholders ($1, $2, ...) for its `%(name)s` ones, and the
    names in their order, converted once. (psycopg converts a statement again at every
    execution once it is over 4 KB or 50 parameters, as a checkpoint is: a fifth of a worker's
    Python time on http steps went to it.) Encoded once too: the driver keys its prepared
    statements by the text, whose hash one bytes object keeps."""
    order: dict[str, int] = {}

    def number(placeholder: re.Match[str]) -> str:
        return f"${order.setdefault(placeholder[1], len(order) + 1)}"

    return _PLACEHOLDER.sub(number, sql).encode(), tuple(order)


def first_row(
    database: Database, sql: str, params: dict[str, Any], json: frozenset[str] = frozenset()
) -> Any:
    """The first row of one statement (None: none); `json`: the parameters sent as JSON."""
    return _execute(database, sql, params, json, every=False)


def rows(
    database: Database, sql: str, params: dict[str, Any], json: frozenset[str] = frozenset()
) -> list[tuple[Any, ...]]:
    """Every row of one statement."""
    found: list[tuple[Any, ...]] = _execute(database, sql, params, json, every=True)
    return found


def _execute(
    database: Database, sql: str, params: dict[str, Any], json: frozenset[str], every: bool
) -> Any:
    import psycopg  # (here: a process on SQLite never loads the driver)
    from psycopg.types.json import Jsonb

    query, names = native(sql)
    values = [Jsonb(params[name]) if name in json else params[name] for name in names]
    engine = database.autocommit
    try:
        connection = engine.raw_connection()
    except psycopg.Error as exc:  # (unwrapped by raw_connection: wrapped as every other error)
        raise DBAPIError.instance(sql, values, exc, psycopg.Error, hide_parameters=True) from exc
    try:
        # (A new cursor per statement: one kept with its connection would keep the last
        # statement's encoded parameters too, a step's output of up to a megabyte, for as long
        # as the connection idles in the pool.)
        driver = cast("psycopg.Connection[Any]", connection.driver_connection)
        cursor = psycopg.RawCursor(driver)
        cursor.execute(query, values)
        found = cursor.fetchall() if every else cursor.fetchone()
        cursor.close()
    except psycopg.Error as exc:
        lost = engine.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
        if lost:  # the server restarted: what SQLAlchemy's own execution does
            database.connection_lost(connection, exc)
        raise DBAPIError.instance(
            sql, values, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost
        ) from exc
    except BaseException:  # (interrupted mid-statement: the connection's state is unknown)
        connection.invalidate()
        raise
    finally:
        connection.close()  # back to the pool
    return found
