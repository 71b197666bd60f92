"""Logging set up by a test (`configure_logging`), undone after it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

# the loggers whose levels grantflow.logging.configure_logging sets
TUNED = ("uvicorn.access", "httpx", "httpcore", "httpx2", "httpcore2", "alembic")


@contextmanager
def logging_restored() -> Iterator[None]:
    """structlog's configuration, the root logger's handlers and level, and the tuned loggers'
    levels, as they were before."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in TUNED}
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
