"""Counting the statements psycopg sends, by the thread that sent them (SQLAlchemy's events
miss the engine's raw-connection writes)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest


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
