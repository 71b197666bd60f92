"""Test connection: one health request through the connection's auth, timed and classified,
which also moves the connection's status. Workers run it periodically for due connections."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy import or_, select

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.connections import history, service
from grantflow.connections.access import ConnectionAccess, ResolvedConnection
from grantflow.connections.models import Connection, ConnectionStatus
from grantflow.connections.outbound import capped_request
from grantflow.connections.service import set_status
from grantflow.errors import GrantflowError, ReauthRequired
from grantflow.store.base import utcnow

log = structlog.get_logger("grantflow.connections")


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    status: str  # the connection's status afterwards
    latency_ms: float | None
    status_code: int | None
    error_class: str | None
    message: str
    next_action: str | None = None  # what makes the next test pass, when the message lacks it

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def test_connection(access: ConnectionAccess, actor: Actor, connection_id: str) -> HealthResult:
    """Test connection, by a person: the health check now, audited with its outcome."""
    actor.require(Permission.CONNECTION_WRITE)
    result = check_connection(access, connection_id, by=actor.label)
    with access.database.transaction() as session:
        audit.record(
            session,
            actor,
            "connection.tested",
            "connection",
            connection_id,
            {"ok": result.ok, "status": result.status},
        )
    return result


def check_connection(
    access: ConnectionAccess, connection_id: str, *, by: str = "health-check"
) -> HealthResult:
    """Send the health request; record (in the health history, naming `by`) and return what
    happened."""
    with access.database.transaction() as session:
        connection = session.get(Connection, connection_id)
        if connection is None:
            from grantflow.errors import NotFound

            raise NotFound(f"connection {connection_id} does not exist")
        application_id, name = connection.application_id, connection.name
        check = dict(connection.health_check or {})
        disabled = not connection.enabled
        missing = service.needs_credential(connection) and connection.credential is None
    if missing and not disabled:
        return _record(
            access,
            connection_id,
            by,
            HealthResult(
                False,
                ConnectionStatus.DISCONNECTED,
                None,
                None,
                "configuration",
                "no credential is set; set one, then test again",
            ),
        )
    if disabled:
        return _record(
            access,
            connection_id,
            by,
            HealthResult(
                False,
                ConnectionStatus.DISCONNECTED,
                None,
                None,
                "connector",
                "the connection is disabled; enable it first",
            ),
        )
    started = time.perf_counter()
    status_code = None
    try:
        resolved = access.resolve_for_test(application_id, name)

        def probe(connection: ResolvedConnection) -> httpx.Response:
            url = connection.url(check.get("path", "/"))
            # (redirects are not followed: a health check answers where it is asked)
            return capped_request(
                access.http,
                check.get("method", "GET"),
                url,
                headers=connection.headers,
                # (merged: httpx would replace the health path's own query with `params`)
                params=httpx.URL(url).params.merge(connection.params)
                if connection.params
                else None,
                timeout=connection.timeout,
                follow_redirects=False,
            )

        response = probe(resolved)
        if response.status_code == 401:  # an OAuth token refused: one refresh, like steps
            fresh = access.after_unauthorized(resolved)
            if fresh is not None:
                response = probe(fresh)
        status_code = response.status_code
        latency = round((time.perf_counter() - started) * 1000, 2)
        expected = check.get("expect") or range(200, 300)
        if status_code in expected:
            result = HealthResult(
                True,
                ConnectionStatus.CONNECTED,
                latency,
                status_code,
                None,
                f"healthy: HTTP {status_code} in {latency:g} ms",
            )
        elif status_code in (401, 403):
            result = HealthResult(
                False,
                ConnectionStatus.UNHEALTHY,
                latency,
                status_code,
                "permission",
                f"the target refused the credential (HTTP {status_code}); "
                "replace the credential, then test again",
            )
        else:
            kind = "transient" if status_code >= 500 or status_code in (408, 429) else "permanent"
            result = HealthResult(
                False,
                ConnectionStatus.UNHEALTHY,
                latency,
                status_code,
                kind,
                f"the health request answered HTTP {status_code}; check the "
                "connection's health path",
            )
    except ReauthRequired as exc:
        result = HealthResult(
            False, ConnectionStatus.REAUTH_REQUIRED, None, None, "connector", exc.message
        )
    except GrantflowError as exc:
        advice = exc.next_action
        if exc.code == "outbound_refused" and advice:
            # the allowlist is read at start: the process that tests must be restarted with it
            advice += (
                " in the environment of the process that tests it (restart it), then test again"
            )
        result = HealthResult(
            False,
            ConnectionStatus.UNHEALTHY,
            None,
            status_code,
            str(exc.failure_class),
            exc.message,
            advice,
        )
    except Exception as exc:  # network errors surface as httpx exceptions
        latency = round((time.perf_counter() - started) * 1000, 2)
        timeout = "Timeout" in type(exc).__name__
        result = HealthResult(
            False,
            ConnectionStatus.UNHEALTHY,
            latency,
            None,
            "timeout" if timeout else "transient",
            f"the health answer is unusable: {exc}"
            if isinstance(exc, httpx.DecodingError)
            else f"cannot reach the target: {type(exc).__name__}",
        )
    return _record(access, connection_id, by, result)


def _record(
    access: ConnectionAccess, connection_id: str, by: str, result: HealthResult
) -> HealthResult:
    with access.database.transaction() as session:
        connection = session.get(Connection, connection_id)
        assert connection is not None
        connection.last_checked_at = utcnow()
        connection.last_latency_ms = result.latency_ms
        connection.last_error = (
            None
            if result.ok
            else {
                "class": result.error_class,
                "message": result.message,
                "status_code": result.status_code,
            }
        )
        if connection.status == ConnectionStatus.REAUTH_REQUIRED and not result.ok:
            # A failed check (the token endpoint down, say) says nothing about the refused
            # credential: the connection keeps waiting for a person, its notification open.
            result = dataclasses.replace(result, status=ConnectionStatus.REAUTH_REQUIRED)
        elif connection.enabled:
            set_status(
                session,
                connection,
                ConnectionStatus(result.status),
                None if result.ok else result.message,
                by=by,
            )
        history.record_check(
            session,
            connection_id,
            ok=result.ok,
            status=result.status,
            latency_ms=result.latency_ms,
            status_code=result.status_code,
            error_class=result.error_class,
            message=result.message,
            by=by,
        )
        if result.ok:
            from grantflow.engine.states import WaitingReason
            from grantflow.engine.waits import resume_runs_waiting_on

            resume_runs_waiting_on(
                session, WaitingReason.REAUTH, connection_id, Actor.system("health-check")
            )

    log.info(
        "connection.tested",
        connection_id=connection_id,
        ok=result.ok,
        status=result.status,
        latency_ms=result.latency_ms,
    )
    return result


def check_due(access: ConnectionAccess, every: dt.timedelta) -> int:
    """Test every enabled connection not checked within `every`; how many were tested."""
    with access.database.transaction() as session:
        due = list(
            session.execute(
                select(Connection.id).where(
                    Connection.enabled.is_(True),
                    or_(
                        Connection.last_checked_at.is_(None),
                        Connection.last_checked_at < utcnow() - every,
                    ),
                )
            ).scalars()
        )
    for connection_id in due:
        try:
            check_connection(access, connection_id)
        except Exception:
            log.exception("connection.health_check_failed", connection_id=connection_id)
    return len(due)
