"""Probes and metrics: public by declaration, they reveal nothing but liveness and counts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from grantflow.api.security import Public
from grantflow.api.state import state_of
from grantflow.engine import metrics as engine_metrics
from grantflow.errors import ServiceUnavailable
from grantflow.queue.metrics import queue_collector
from grantflow.store.migrate import is_up_to_date

router = APIRouter(tags=["health"], dependencies=[Depends(Public())])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:
    """Answered on the event loop itself: no worker thread needed, so a busy thread pool
    cannot delay it."""
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated")
def readyz(request: Request) -> dict[str, Any]:
    """503 when the database is unreachable or not migrated. A Valkey/Redis queue transport
    that is down answers 200 `degraded`: runs are still accepted and stay queued until it
    returns, so a load balancer should keep sending requests here."""
    state = state_of(request)
    database = state.database
    database.ping()
    if not is_up_to_date(database):
        raise ServiceUnavailable(
            "the database schema is not up to date",
            next_action="run `grantflow migrate`",
        )
    transport = state.queue.health()
    queue: dict[str, Any] = {"transport": transport.kind, "status": "up"}
    if not transport.up:
        queue.update(
            status="down",
            down_since=transport.down_since,
            error=transport.error,
            location=transport.location,
            explanation="runs are accepted and stay queued; they are dispatched once the "
            "queue transport is reachable again",
        )
    return {
        "status": "ready" if transport.up else "degraded",
        "database": database.dialect,
        "queue": queue,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    body = generate_latest(state_of(request).registry) + generate_latest(engine_metrics.REGISTRY)
    body += generate_latest(queue_collector(state_of(request).queue))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
