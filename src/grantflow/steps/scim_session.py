"""Talking SCIM 2.0 for the `scim.*` steps. A scim2-client over an httpx2 client that goes
through the outbound guard, waits for the connection's rate limit and concurrency slot on every
request, never runs past the step's deadline, reads responses up to the cap and sends the
connection's auth and the step's idempotency key. The server's description (schemas, resource
types, service provider config) is discovered once per connection and process.

This is the one place where SCIM errors and httpx2's network errors become failure classes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
from prometheus_client import Counter
from pydantic import ValidationError as PydanticError
from scim2_client import (
    InvalidServiceDescriptionException,
    RequestNetworkException,
    SCIMClientException,
)
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import ListResponse, Resource, SCIMException, ScimProvider, SearchRequest

from grantflow.connections.access import ConnectionAccess, ResolvedConnection
from grantflow.connections.outbound import policy_of
from grantflow.connections.outbound_httpx2 import guarded_transport2
from grantflow.errors import (
    ConfigurationError,
    ConnectorError,
    GrantflowError,
    PermanentError,
    StepTimeout,
    TransientError,
)
from grantflow.safety.limits import response_too_large
from grantflow.steps.execution import StepCall, connections_of
from grantflow.steps.transport import (
    STORED_BODY_LIMIT,
    next_action_for,
    response_limit,
    retry_after_seconds,
)

T = TypeVar("T")

DISCOVERIES = Counter(
    "grantflow_scim_discoveries_total",
    "SCIM service descriptions fetched (once per connection and process)",
)

_providers: dict[tuple[str, str], ScimProvider] = {}
_discovering: dict[tuple[str, str], threading.Lock] = {}
_lock = threading.Lock()


def quoted(value: str) -> str:
    """A filter value as a SCIM string literal (RFC 7644 §3.4.2.2: JSON string syntax)."""
    return json.dumps(value)


class _Unauthorized(Exception):
    """A 401: retried once with a fresh token when the connection is OAuth, else `error`."""

    def __init__(self, error: PermanentError) -> None:
        super().__init__(error.message)
        self.error = error


class _Bounded(httpx2.BaseTransport):
    """Per request: the time left before the step's deadline, the connection's limits, the
    response read up to the cap, and an exchange noted for the attempt record."""

    def __init__(self, inner: httpx2.BaseTransport, session: ScimSession) -> None:
        self.inner = inner
        self.session = session

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self.session
        left = session.deadline - time.monotonic()
        if left <= 0:
            raise session.timed_out()
        left = min(left, session.connection.timeout)
        request.extensions["timeout"] = httpx2.Timeout(left).as_dict()
        with session.hold(left):
            response = self.inner.handle_request(request)
            assert isinstance(response.stream, httpx2.SyncByteStream)
            try:
                body = bytearray()
                for chunk in response.stream:
                    body.extend(chunk)
                    if len(body) > response_limit():
                        raise response_too_large(session.host, response.status_code)
            finally:
                response.close()
        session.note(request, response.status_code, bytes(body))
        if response.status_code == 429:  # every worker calling this connection slows down
            session.throttled(retry_after_seconds(response.headers.get("retry-after")))
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            content=bytes(body),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


@dataclass
class ScimSession:
    """One step attempt's conversation with a SCIM server through one connection."""

    call: StepCall
    connection: ResolvedConnection
    deadline: float  # time.monotonic() after which no request starts
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    last_body: str = ""
    client: SyncSCIMClient | None = None
    http: httpx2.Client | None = None

    @property
    def host(self) -> str:
        return httpx2.URL(self.connection.base_url).host or self.connection.base_url

    @property
    def label(self) -> str:
        return f"connection {self.connection.name!r}"

    # --- plumbing used by the transport --------------------------------------------------------
    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        access = self.call.connections
        if access is None:
            yield
            return
        conn = self.connection
        with access.limits.hold(
            conn.id, conn.name, conn.rate, conn.burst, conn.concurrency, timeout
        ):
            yield

    def throttled(self, retry_after: float | None) -> None:
        access, conn = self.call.connections, self.connection
        if access is not None:
            access.limits.throttled(conn.id, retry_after, conn.rate, conn.burst)

    def note(self, request: httpx2.Request, status: int, body: bytes) -> None:
        path = request.url.path
        self.exchanges.append({"method": request.method, "path": path, "status_code": status})
        self.last_body = self.scrub(body.decode("utf-8", errors="replace"))

    def scrub(self, text: str) -> str:
        return self.connection.redactor.text(text)

    def timed_out(self) -> StepTimeout:
        return StepTimeout(
            f"the SCIM calls to {self.host} did not finish within the step's timeout",
            response=self.record,
            next_action="check the target's health, or raise the step timeout",
        )

    @property
    def record(self) -> dict[str, Any]:
        """What the server answered, for the attempt record (secrets scrubbed, capped)."""
        last = self.exchanges[-1] if self.exchanges else {}
        return {
            "status_code": last.get("status_code"),
            "exchanges": list(self.exchanges),
            "body": self.last_body[:STORED_BODY_LIMIT],
            "truncated": len(self.last_body) > STORED_BODY_LIMIT,
        }

    # --- the SCIM client -----------------------------------------------------------------------
    def open(self) -> SyncSCIMClient:
        conn = self.connection
        http = httpx2.Client(
            transport=_Bounded(guarded_transport2(policy_of(self.call.http)), self),
            base_url=conn.base_url,
            headers={**conn.headers, "Idempotency-Key": self.call.idempotency_key},
            params=conn.params or None,
            trust_env=False,
            follow_redirects=False,
        )
        self.http = http  # closed by close() even when discovery fails
        key = (conn.id, conn.base_url)
        provider = _providers.get(key)
        if provider is None:
            with _lock:
                gate = _discovering.setdefault(key, threading.Lock())
            with gate:
                provider = _providers.get(key)
                if provider is None:
                    client = SyncSCIMClient(http)
                    with self.translating(f"the service description of {self.label}"):
                        client.discover()
                    DISCOVERIES.inc()
                    provider = _providers[key] = client.provider
        self.client = SyncSCIMClient(http, provider=provider)
        return self.client

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    @property
    def scim(self) -> SyncSCIMClient:
        assert self.client is not None
        return self.client

    def model(self, name: str) -> type[Resource[Any]]:
        found = self.scim.get_resource_model(name)
        if found is None:
            raise ConnectorError(
                f"the SCIM server of {self.label} does not serve {name} resources",
                code="scim_unsupported",
                next_action="check the connection's base URL (it must be the SCIM root, "
                "e.g. https://host/scim/v2)",
            )
        return found

    @property
    def patch_supported(self) -> bool:
        config = self.scim.provider.config
        return bool(config is None or config.patch is None or config.patch.supported)

    def search(self, kind: str, expression: str, subject: str) -> list[Resource[Any]]:
        """Resources of `kind` matching a SCIM filter."""
        with self.translating(subject):
            found = self.scim.query(
                self.model(kind), query_parameters=SearchRequest(filter=expression, count=2)
            )
        if not isinstance(found, ListResponse):
            return []
        return list(found.resources or [])

    def get(self, model: type[Resource[Any]], resource_id: str) -> Resource[Any]:
        """One resource by id (inside `translating`)."""
        found = self.scim.query(model, resource_id)
        if not isinstance(found, Resource):
            raise PermanentError(
                f"{self.label} answered a read of {model.__name__} {resource_id!r} with "
                "something that is not one resource",
                code="scim_invalid_response",
                response=self.record,
                next_action="check that the connection's base URL is the SCIM root",
            )
        return found

    # --- errors --------------------------------------------------------------------------------
    @contextmanager
    def translating(self, subject: str) -> Iterator[None]:
        """Turn what scim2-client raises into a failure class; `subject` names what the
        request was about ("user 'ada@example.com'", "group 'Research'")."""
        try:
            yield
        except GrantflowError:
            raise  # the guard, the limits, the deadline, the cap: already classified
        except RequestNetworkException as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx2.TimeoutException):
                raise self.timed_out() from exc
            raise TransientError(
                f"could not reach {self.host}: {type(cause).__name__}: {self.scrub(str(cause))}",
                response=self.record,
                next_action="check that the target is up and reachable",
            ) from exc
        except (SCIMException, SCIMClientException, PydanticError) as exc:
            raise self.failure(exc, subject) from exc

    def failure(self, exc: Exception, subject: str) -> ConnectorError | _Unauthorized:
        source = getattr(exc, "source", None)
        response = source if isinstance(source, httpx2.Response) else None
        if isinstance(exc, PydanticError) or (response is None and isinstance(exc, SCIMException)):
            return PermanentError(
                f"the request for {subject} is not valid for the SCIM server's schema: "
                f"{self.scrub(_detail(exc))}",
                code="scim_invalid_request",
                next_action="check the step's mapping with a dry-run, fix the workflow, "
                "then Replay with latest",
            )
        status = response.status_code if response is not None else 0
        detail = self.scrub(_detail(exc))
        scim_type = str(getattr(exc, "scim_type", "") or "")
        where = f"{self.label} ({self.host})"
        retry_after = retry_after_seconds(response.headers.get("retry-after")) if response else None
        if status == 401:
            return _Unauthorized(
                PermanentError(
                    f"{where} refused the credential (HTTP 401): {detail}",
                    code="unauthorized",
                    status_code=401,
                    response=self.record,
                    next_action=next_action_for(401),
                )
            )
        if status == 403:
            return PermanentError(
                f"{where} refused the request for {subject} (HTTP 403): {detail}",
                code="forbidden",
                status_code=403,
                response=self.record,
                next_action=next_action_for(403),
            )
        if status == 409 or scim_type == "uniqueness":
            return PermanentError(
                f"{subject} already exists in {where}: {detail}",
                code="already_exists",
                status_code=status or None,
                response=self.record,
                next_action="check the existing account in the target: remove it, or let "
                "the step adopt it (if_exists: adopt), then Retry",
            )
        if status == 404:
            return PermanentError(
                f"{subject} does not exist in {where}",
                code="not_found",
                status_code=404,
                response=self.record,
                next_action=f"create {subject} in the target or fix the step's mapping "
                "(a dry-run shows it), then Retry",
            )
        if status in (408, 412, 429) or status >= 500:
            return TransientError(
                f"{where} could not handle the request for {subject} (HTTP {status}): {detail}",
                status_code=status,
                retry_after=retry_after,
                response=self.record,
                next_action="the target is unavailable, throttling or changed meanwhile: "
                "wait for it, then Retry",
            )
        if isinstance(exc, InvalidServiceDescriptionException):
            return ConnectorError(
                f"{where} does not describe a usable SCIM service: {detail}",
                code="scim_unsupported",
                response=self.record,
                next_action="check the connection's base URL (it must be the SCIM root)",
            )
        if 200 <= status < 300 or status == 0:
            return PermanentError(
                f"{where} answered the request for {subject} with something that is not "
                f"valid SCIM: {detail}",
                code="scim_invalid_response",
                status_code=status or None,
                response=self.record,
                next_action="check that the connection's base URL is the SCIM root of the "
                "target, then Retry",
            )
        return PermanentError(
            f"{where} refused the request for {subject} (HTTP {status}"
            f"{', ' + scim_type if scim_type else ''}): {detail}",
            code="scim_refused",
            status_code=status,
            response=self.record,
            next_action=next_action_for(status),
        )


def _detail(exc: Exception) -> str:
    if isinstance(exc, PydanticError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
    error = getattr(exc, "error", None)
    detail = getattr(error, "detail", None) or str(exc)
    notes = [n for n in getattr(exc, "__notes__", []) if n and n not in detail]
    return " ".join([str(detail), *notes[:1]]).strip()


def run(call: StepCall, connection: str, operation: Callable[[ScimSession], T]) -> T:
    """Run `operation` against the SCIM server behind `connection`, within the step's deadline;
    a 401 on an OAuth connection is retried once with a fresh token."""
    access = _access(call)
    resolved = access.resolve(call.application_id, connection)
    if resolved.kind != "scim":
        raise ConfigurationError(
            f"connection {connection!r} is a {resolved.kind} connection; SCIM steps need a "
            "scim connection (its base URL is the SCIM root)",
            code="wrong_connection_kind",
            next_action="point the step at a scim connection (create one if needed), publish, "
            "then Replay with latest",
        )
    deadline = time.monotonic() + (call.timeout or resolved.timeout)
    try:
        return _attempt(call, resolved, deadline, operation)
    except _Unauthorized as refused:
        fresh = access.after_unauthorized(resolved)
        if fresh is None:
            raise refused.error from None
        try:
            return _attempt(call, fresh, deadline, operation)
        except _Unauthorized as again:
            raise again.error from None


def _access(call: StepCall) -> ConnectionAccess:
    return connections_of(call)


def _attempt(
    call: StepCall,
    connection: ResolvedConnection,
    deadline: float,
    operation: Callable[[ScimSession], T],
) -> T:
    session = ScimSession(call, connection, deadline)
    call.secrets.add(connection.redactor)  # what the step returns is scrubbed of them too
    try:
        session.open()
        return operation(session)
    finally:
        session.close()
