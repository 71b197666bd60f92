"""Connection limits as every worker sees them: on PostgreSQL two limiters (two processes'
worth) draw from one bucket, one not-before and one set of slots; on SQLite, where one process
runs every worker, the in-process limiter is the one used."""

from __future__ import annotations

import threading

import pytest

from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.auth.actor import Actor
from grantflow.connections.limits import Limits
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection
from grantflow.errors import TransientError
from grantflow.safety.ratelimit import SharedLimits, limits_for
from grantflow.store.database import Database

ACTOR = Actor.system("test")


def connection(db: Database, **fields: object) -> str:
    with db.transaction() as session:
        app = create_application(session, ACTOR, ApplicationCreate(name="Limited"))
        data = ConnectionCreate.model_validate(
            {"name": "api", "base_url": "http://127.0.0.1:9/", **fields}
        )
        return create_connection(session, ACTOR, app.id, data).id


def limiters(db: Database) -> tuple[Limits, Limits]:
    """Two limiters as two worker processes would have them (one shared one on SQLite)."""
    first = limits_for(db)
    return first, (limits_for(db) if db.dialect == "postgresql" else first)


def call(limiter: Limits, conn_id: str, rate: float | None = None, **kw: object) -> None:
    """One call's pass through the limiter (nothing is sent)."""
    with limiter.hold(
        conn_id,
        "api",
        rate,
        kw.get("burst"),  # type: ignore[arg-type]
        kw.get("concurrency"),  # type: ignore[arg-type]
        float(kw.get("timeout", 1.0)),  # type: ignore[arg-type]
    ):
        pass


def test_the_deployment_gets_the_right_limiter(database: Database) -> None:
    """PostgreSQL shares limits through the database; SQLite keeps them in the process."""
    chosen = limits_for(database)
    assert isinstance(chosen, SharedLimits) == (database.dialect == "postgresql")


def test_a_burst_is_shared_and_the_next_call_waits(database: Database) -> None:
    """With 0.1 calls/s and a burst of 2, two calls (one per limiter) go at once and a third
    from either limiter would wait ~10 s: refused within a 1 s timeout."""
    conn_id = connection(database, rate_limit_per_second=0.1, rate_limit_burst=2)
    a, b = limiters(database)
    call(a, conn_id, 0.1, burst=2)
    call(b, conn_id, 0.1, burst=2)
    for limiter in (a, b):
        with pytest.raises(TransientError, match=r"rate limit of 0\.1/s"):
            call(limiter, conn_id, 0.1, burst=2)


def test_a_429_holds_every_limiter(database: Database) -> None:
    """After one limiter records a 429 with Retry-After 60, a call through the other (no rate
    limit of its own) is refused within a 1 s timeout: the target asked everyone to wait."""
    conn_id = connection(database)
    a, b = limiters(database)
    call(a, conn_id)
    a.throttled(conn_id, 60.0)
    for limiter in (a, b):
        with pytest.raises(TransientError, match=r"429"):
            call(limiter, conn_id)


def test_concurrency_slots_are_shared(database: Database) -> None:
    """With max_concurrency 1, a call held through one limiter keeps the other's call out
    (refused within its timeout) until it ends; then the other gets the slot."""
    conn_id = connection(database, max_concurrency=1)
    a, b = limiters(database)
    inside, release = threading.Event(), threading.Event()

    def hold_one() -> None:
        with a.hold(conn_id, "api", None, None, 1, 30.0):
            inside.set()
            release.wait(60)

    holder = threading.Thread(target=hold_one)
    holder.start()
    try:
        assert inside.wait(60)
        with pytest.raises(TransientError, match="1 calls at once"):
            call(b, conn_id, concurrency=1, timeout=0.3)
    finally:
        release.set()
        holder.join(60)
    call(b, conn_id, concurrency=1, timeout=30.0)
