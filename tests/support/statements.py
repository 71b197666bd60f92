"""Counting statements: those psycopg sends, by the thread that sent them (SQLAlchemy's events
miss the engine's raw-connection writes); those SQLAlchemy sends, on either database."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from grantflow.store.database import Database


@contextmanager
def statements_by_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    counted: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    original = psycopg.Cursor.execute

    def execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            counted[threading.current_thread().name] += 1
        return original(cursor, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    yield counted


@contextmanager
def statements_on(db: Database) -> Iterator[list[str]]:
    """The statements SQLAlchemy sends on `db` meanwhile, from any thread (an API server in
    this process included), on either database."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
