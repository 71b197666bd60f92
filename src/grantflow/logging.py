"""Structured logs: JSON lines with stable event names, a request id, and secrets redacted
(by name, with grantflow.redaction: a credential's value is scrubbed where it is met, before it
can reach an event)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from grantflow.redaction import REDACTED, SECRET_KEYS, redact_keys


def _redact_event(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        if key == "exc_info":  # (left as given: formatted next, as the traceback it names)
            continue
        if key != "event" and SECRET_KEYS.search(key):
            event[key] = REDACTED
        else:
            event[key] = redact_keys(event[key])
    return event


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging to stderr in one format."""
    numeric = logging.getLevelName(level.upper())
    # Tracebacks are plain text in both formats, frames without their local variables (a
    # rich traceback shows every frame's locals, a credential among them, past the redaction).
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_event,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's own access log duplicates our request log; keep its errors only.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request's full URL at info (an API key in the query with it) and
    # httpcore every response's headers at debug (whatever a target echoes back): our own
    # request logs are redacted, theirs are not. The same for httpx2/httpcore2 (SCIM steps).
    for name in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
