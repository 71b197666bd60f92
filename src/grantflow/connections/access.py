"""What a step gets when it names a connection: the base URL, the auth to apply, the limits —
or, when the connection cannot work, a failure that fires no doomed request."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import httpx

from grantflow.connections.crypto import Keyring
from grantflow.connections.limits import Limits
from grantflow.connections.models import AuthKind, Connection, ConnectionStatus
from grantflow.connections.oauth import TokenSource
from grantflow.connections.service import find_connection
from grantflow.errors import ConfigurationError, ConnectorError, ReauthRequired
from grantflow.redaction import NOTHING, Redactor, redactor_for
from grantflow.safety.ratelimit import limits_for
from grantflow.store.base import utcnow
from grantflow.store.database import Database

_USE_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class ResolvedConnection:
    id: str
    name: str
    base_url: str
    auth_kind: str
    timeout: float
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    redactor: Redactor = NOTHING  # its credential, scrubbed from anything recorded
    allowed_hosts: frozenset[str] = frozenset()
    kind: str = "http"
    rate: float | None = None
    burst: int | None = None
    concurrency: int | None = None

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    @property
    def refreshable(self) -> bool:
        return self.auth_kind in (AuthKind.OAUTH_CLIENT_CREDENTIALS, AuthKind.OAUTH_REFRESH_TOKEN)


class ConnectionAccess:
    def __init__(self, database: Database, keyring: Keyring | None, http: httpx.Client) -> None:
        self.http = http
        self.database = database

        self.keyring = keyring
        self.tokens = TokenSource(database, keyring, http) if keyring else None
        self.limits: Limits = limits_for(database)  # shared by every worker on PostgreSQL

    def resolve_for_test(self, application_id: str, name: str) -> ResolvedConnection:
        """Like `resolve`, but a connection that is down or awaiting reauthorisation is
        still tried: testing is how it comes back."""
        return self.resolve(application_id, name, check=False)

    def resolve(
        self, application_id: str | None, name: str, check: bool = True
    ) -> ResolvedConnection:
        with self.database.transaction() as session:
            connection = find_connection(session, application_id, name) if application_id else None
            if connection is None:
                raise ConfigurationError(
                    f"connection {name!r} does not exist for this workflow's application",
                    code="connection_missing",
                    next_action="create the connection (or fix its name in the step), then Retry",
                )
            if check:
                self._check_usable(connection)
            elif connection.credential is None and connection.auth_kind != AuthKind.NONE:
                raise ConfigurationError(
                    f"connection {name!r} has no credential",
                    code="credential_missing",
                    next_action="set its credential, then test again",
                )

            secret: dict[str, Any] = {}
            credential = connection.credential
            if credential is not None and self.keyring is not None:
                secret = self.keyring.decrypt(
                    credential.key_id, credential.ciphertext, credential.id
                )
                if (
                    credential.last_used_at is None
                    or utcnow() - credential.last_used_at > _USE_RESOLUTION
                ):
                    credential.last_used_at = utcnow()
            base = ResolvedConnection(
                id=connection.id,
                name=connection.name,
                base_url=connection.base_url,
                auth_kind=connection.auth_kind,
                timeout=connection.timeout_seconds,
                allowed_hosts=frozenset(connection.allowed_hosts or []),
                kind=connection.kind,
                rate=connection.rate_limit_per_second,
                burst=connection.rate_limit_burst,
                concurrency=connection.max_concurrency,
            )
            settings = dict(connection.auth_settings or {})
        return self._with_auth(base, settings, secret)

    def _check_usable(self, connection: Connection) -> None:
        status = ConnectionStatus(connection.status)
        if status == ConnectionStatus.REAUTH_REQUIRED:
            raise ReauthRequired(
                f"connection {connection.name!r} needs to be reauthorised: "
                f"{connection.status_reason or 'its credential can no longer be refreshed'}",
                connection_id=connection.id,
                next_action="replace the connection's credential; the run resumes by itself",
            )
        if status == ConnectionStatus.DISCONNECTED:
            raise ConnectorError(
                f"connection {connection.name!r} is disconnected"
                f"{': ' + connection.status_reason if connection.status_reason else ''}; "
                "no request was sent",
                code="connection_disconnected",
                next_action="set its credential or enable it, test it, then Retry the run",
            )
        if self.keyring is None and connection.auth_kind != AuthKind.NONE:
            raise ConfigurationError(
                "this worker has no master key to read credentials",
                next_action="start the worker with the configuration",
            )

    def _with_auth(
        self,
        base: ResolvedConnection,
        settings: dict[str, Any],
        secret: dict[str, Any],
        rejected: str | None = None,
    ) -> ResolvedConnection:
        kind = AuthKind(base.auth_kind)
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        secrets: list[str] = []
        users: list[str] = []  # paired with a secret as `user:secret` (base64 of it is hidden)
        if kind == AuthKind.BEARER:
            headers["Authorization"] = f"Bearer {secret['token']}"
            secrets.append(secret["token"])
        elif kind == AuthKind.BASIC:
            pair = f"{secret['username']}:{secret['password']}"
            encoded = base64.b64encode(pair.encode()).decode()
            headers["Authorization"] = f"Basic {encoded}"
            secrets.append(secret["password"])
            users.append(str(secret["username"]))
        elif kind == AuthKind.API_KEY_HEADER:
            headers[str(settings["header"])] = secret["api_key"]
            secrets.append(secret["api_key"])
        elif kind == AuthKind.API_KEY_QUERY:
            params[str(settings["param"])] = secret["api_key"]
            secrets.append(secret["api_key"])
        elif base.refreshable:
            assert self.tokens is not None
            token = self.tokens.access_token(base.id, rejected=rejected)
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
            secrets += [
                str(v) for k, v in secret.items() if k not in ("client_id", "expires_in") and v
            ]
            users.append(str(secret.get("client_id") or ""))
        return ResolvedConnection(
            **{
                **base.__dict__,
                "headers": headers,
                "params": params,
                "redactor": base.redactor + redactor_for(secrets, users),
            }
        )

    def after_unauthorized(self, resolved: ResolvedConnection) -> ResolvedConnection | None:
        """Once per call: an OAuth connection whose token was refused gets a fresh one."""
        if not resolved.refreshable:
            return None
        rejected = resolved.headers.get("Authorization", "").removeprefix("Bearer ")
        return self._with_auth(resolved, {}, {}, rejected=rejected)
