"""OAuth 2.0 access tokens for connections: client credentials and refresh tokens.

A token is reused until shortly before it expires. Refreshes are serialised per connection — a
lock in this process and a database lock across processes — and the connection's state is
re-read under the lock, so parallel steps refresh once. A rotated refresh token is saved
(committed) before the new access token is used. `invalid_grant` means a person must replace
the credential: the connection becomes reauth_required (one notification). A transient failure
of the token endpoint is retried like any transient error and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from typing import Any

import httpx
import structlog

from grantflow.connections.crypto import Keyring
from grantflow.connections.models import AuthKind, Connection, ConnectionStatus, Credential
from grantflow.connections.outbound import capped_request
from grantflow.errors import ConnectorError, PermanentError, ReauthRequired, TransientError
from grantflow.redaction import Redactor, redactor_for
from grantflow.store.base import utcnow
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.oauth")

EARLY_REFRESH = dt.timedelta(seconds=60)
_PERMANENT_OAUTH_ERRORS = {"invalid_grant", "invalid_client", "unauthorized_client"}
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _fresh(credential: Credential) -> bool:
    """The cached token is good for now: it expires later than the early-refresh lead — which,
    for a token that lives less than twice the lead, is half its lifetime, so a short-lived
    token is still reused instead of being refreshed on every call."""
    expires = credential.token_expires_at
    if expires is None:
        return True
    issued = max(
        (t for t in (credential.refreshed_at, credential.replaced_at, credential.created_at) if t),
        default=None,
    )
    lead = EARLY_REFRESH if issued is None else min(EARLY_REFRESH, (expires - issued) / 2)
    return expires - lead > utcnow()


def _redactor(payload: dict[str, Any]) -> Redactor:
    """The credential's secrets, as the token endpoint may echo them: plain, form-encoded,
    JSON-escaped, in the Basic header (base64 of `client_id:client_secret`)."""
    secrets = [str(v) for k, v in payload.items() if k not in ("client_id", "expires_in") and v]
    return redactor_for(secrets, [str(payload.get("client_id") or "")])


class TokenSource:
    def __init__(self, database: Database, keyring: Keyring, http: httpx.Client) -> None:
        self.database = database
        self.keyring = keyring
        self.http = http

    def access_token(
        self, connection_id: str, *, force: bool = False, rejected: str | None = None
    ) -> str:
        """A valid access token. `force` (or `rejected`, the token the API just refused)
        fetches a new one unless another caller already did."""
        with _locks[connection_id]:
            outcome = self._under_lock(connection_id, force, rejected)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _under_lock(self, connection_id: str, force: bool, rejected: str | None) -> str | Exception:
        with self.database.transaction() as session:
            self.database.lock(session, f"oauth:{connection_id}")
            connection = session.get(Connection, connection_id, populate_existing=True)
            assert connection is not None
            credential = connection.credential
            if credential is None:
                return PermanentError(
                    f"connection {connection.name!r} has no credential",
                    next_action="set the connection's credential",
                )
            payload = self.keyring.decrypt(credential.key_id, credential.ciphertext, credential.id)
            token = payload.get("access_token")
            fresh = _fresh(credential)
            if token and fresh and not force and token != rejected:
                return str(token)
            if token and rejected and token != rejected:
                return str(token)  # someone refreshed while we waited for the lock
            try:
                grant = self._request_token(connection, payload)
            except ReauthRequired as exc:
                from grantflow.connections.service import set_status

                set_status(
                    session,
                    connection,
                    ConnectionStatus.REAUTH_REQUIRED,
                    exc.message,
                    by="token refresh",
                )
                return exc  # committed first, raised after
            except ConnectorError as exc:  # transient, permanent (4xx) or an unusable answer
                return exc
            self._store(credential, payload, grant)
            if connection.status == ConnectionStatus.REAUTH_REQUIRED:
                from grantflow.connections.service import set_status

                set_status(
                    session, connection, ConnectionStatus.CONNECTED, None, by="token refresh"
                )
            log.info(
                "connection.token.refreshed",
                connection_id=connection.id,
                rotated="refresh_token" in grant,
            )
            return str(grant["access_token"])

    def _store(
        self, credential: Credential, payload: dict[str, Any], grant: dict[str, Any]
    ) -> None:
        payload["access_token"] = grant["access_token"]
        if grant.get("refresh_token"):
            payload["refresh_token"] = grant["refresh_token"]  # rotation: saved before use
        expires_in = grant.get("expires_in")
        credential.token_expires_at = (
            utcnow() + dt.timedelta(seconds=float(expires_in)) if expires_in else None
        )
        credential.refreshed_at = utcnow()
        credential.key_id, credential.ciphertext = self.keyring.encrypt(payload, credential.id)

    def _request_token(self, connection: Connection, payload: dict[str, Any]) -> dict[str, Any]:
        settings = connection.auth_settings or {}
        form: dict[str, str] = {}
        if connection.auth_kind == AuthKind.OAUTH_CLIENT_CREDENTIALS:
            form["grant_type"] = "client_credentials"
        else:
            form["grant_type"] = "refresh_token"
            form["refresh_token"] = str(payload["refresh_token"])
        if settings.get("scope"):
            form["scope"] = str(settings["scope"])
        if settings.get("audience"):
            form["audience"] = str(settings["audience"])
        auth = (str(payload["client_id"]), str(payload.get("client_secret") or ""))
        url = str(settings["token_url"])
        try:
            response = capped_request(
                self.http, "POST", url, data=form, auth=auth, timeout=connection.timeout_seconds
            )
        except httpx.TimeoutException as exc:
            raise TransientError(f"the token endpoint {url} did not answer in time") from exc
        except httpx.DecodingError as exc:  # an oversized answer
            raise PermanentError(
                f"the token endpoint {url}: {exc}",
                next_action="check the connection's token_url",
            ) from exc
        except httpx.TransportError as exc:
            raise TransientError(
                f"could not reach the token endpoint {url}: {type(exc).__name__}"
            ) from exc
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
            body = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            pass
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TransientError(
                f"the token endpoint answered HTTP {response.status_code}",
                status_code=response.status_code,
            )
        # (what the server says may echo what we sent it: the refresh token, the client
        # secret in the Basic header; it ends up in messages, notifications and logs) —
        # scrubbed whole, then cut: a cut could leave part of a secret unrecognisable
        hide = _redactor(payload)
        error = hide.text(str(body["error"]))[:100] if body.get("error") else None
        if response.status_code >= 400 or error:
            description = hide.text(str(body.get("error_description") or ""))[:300]
            if error in _PERMANENT_OAUTH_ERRORS:
                raise ReauthRequired(
                    f"the token endpoint refused the credential of connection "
                    f"{connection.name!r}: {error}{': ' + description if description else ''}",
                    connection_id=connection.id,
                    next_action="replace the connection's credential (reauthorise); runs "
                    "waiting on it resume by themselves",
                )
            raise PermanentError(
                f"the token endpoint answered HTTP {response.status_code}"
                f"{' ' + str(error) if error else ''}",
                status_code=response.status_code,
                next_action="check the connection's token URL, client id and scopes",
            )
        if "access_token" not in body:
            raise ConnectorError(
                "the token endpoint's answer has no access_token",
                code="token_response_invalid",
                next_action="check the connection's token URL",
            )
        return body
