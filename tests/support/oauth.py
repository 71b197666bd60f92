"""A real OAuth 2.0 authorization server (Authlib's RFC 6749 AuthorizationServer with the
client-credentials and refresh-token grants) and a resource server that accepts only currently
valid access tokens, both on one HTTP server on 127.0.0.1.

Tokens live in memory. Tests can revoke access or refresh tokens, make the token endpoint fail
(e.g. one 503) or answer slowly, count token requests, and look at what the resource server saw.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant, RefreshTokenGrant

TOKEN_PATH = "/oauth/token"


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("client_credentials", "refresh_token")


@dataclass
class RefreshRecord(TokenMixin):  # type: ignore[misc]
    token: str
    client_id: str
    scope: str = ""
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 0

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.revoked


@dataclass
class AccessRecord:
    token: str
    client_id: str
    expires_at: float
    revoked: bool = False

    def valid(self) -> bool:
        return not self.revoked and time.time() < self.expires_at


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, form: dict[str, str]) -> None:
        self._form = form

    @property
    def data(self) -> dict[str, str]:
        return self._form

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._form.items():
            values[key].append(value)
        return values


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: dict[str, str], form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self._form = form
        self.payload = _Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class _Refresh(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:
        return bool(self.server.state.rotate)

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshRecord | None:
        record = self.server.state.refresh.get(refresh_token)
        return record if record is not None and not record.revoked else None

    def authenticate_user(self, refresh_token: RefreshRecord) -> str:
        return "user-1"

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        if self.server.state.rotate:
            refresh_token.revoked = True


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, state: OAuthServer) -> None:
        super().__init__()
        self.state = state
        self.register_grant(_ClientCredentials)
        self.register_grant(_Refresh)
        self.register_token_generator("default", self._generate)

    def _generate(
        self,
        grant_type: str,
        client: Client,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": "at-" + secrets.token_urlsafe(16),
            "expires_in": self.state.expires_in,
        }
        if include_refresh_token:
            token["refresh_token"] = "rt-" + secrets.token_urlsafe(16)
        if scope:
            token["scope"] = scope
        return token

    def query_client(self, client_id: str) -> Client | None:
        return self.state.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        state = self.state
        client_id = request.client.client_id
        state.access[token["access_token"]] = AccessRecord(
            token["access_token"], client_id, time.time() + token["expires_in"]
        )
        if token.get("refresh_token"):
            state.refresh[token["refresh_token"]] = RefreshRecord(
                token["refresh_token"], client_id, token.get("scope", "")
            )
        state.issued.append(dict(token))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers


@dataclass
class OAuthServer:
    """State of the authorization and resource server; see `running_oauth_server`."""

    expires_in: int = 3600
    rotate: bool = True
    token_delay: float = 0.0  # seconds the token endpoint takes (to make callers overlap)
    clients: dict[str, Client] = field(default_factory=dict)
    access: dict[str, AccessRecord] = field(default_factory=dict)
    refresh: dict[str, RefreshRecord] = field(default_factory=dict)
    issued: list[dict[str, Any]] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)  # form and status
    resource_requests: list[tuple[str, int]] = field(default_factory=list)  # token, status
    fail_token: list[int] = field(default_factory=list)  # statuses to answer first, in order
    accept_tokens: bool = True  # False: the resource server refuses every token
    on_valid_token: Callable[[str], None] | None = None  # called before a valid call answers
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register_client(self, client_id: str = "grantflow", secret: str | None = None) -> Client:
        client = Client(client_id, secret or "cs-" + secrets.token_urlsafe(12))
        self.clients[client_id] = client
        return client

    def issue_refresh_token(self, client_id: str = "grantflow", scope: str = "") -> str:
        """A refresh token as if a person had just authorised the client."""
        token = "rt-" + secrets.token_urlsafe(16)
        self.refresh[token] = RefreshRecord(token, client_id, scope)
        return token

    def revoke_access(self, token: str | None = None) -> None:
        """Revoke one access token, or all of them."""
        for record in self.access.values():
            if token is None or record.token == token:
                record.revoked = True

    def revoke_refresh(self) -> None:
        for record in self.refresh.values():
            record.revoked = True

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def grants(self, status: int | None = 200) -> list[dict[str, Any]]:
        """Token requests (their form and answer status), optionally those with `status`."""
        with self.lock:
            return [r for r in self.token_requests if status is None or r["status"] == status]

    def _token(self, headers: dict[str, str], form: dict[str, str]) -> tuple[int, Any]:
        with self.lock:
            failing = self.fail_token.pop(0) if self.fail_token else None
        if self.token_delay:
            time.sleep(self.token_delay)  # a slow authorization server, not test timing
        if failing is not None:
            status, body = failing, {"error": "temporarily_unavailable"}
        else:
            request = _Request("POST", self.url + TOKEN_PATH, headers, form)
            with self.lock:
                status, body, _ = self.authorization.create_token_response(request)
        with self.lock:
            self.token_requests.append({"form": form, "status": status, "body": body})
        return status, body

    def _resource(self, headers: dict[str, str]) -> tuple[int, Any]:
        auth = headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self.lock:
            record = self.access.get(token)
            ok = self.accept_tokens and record is not None and record.valid()
        if ok and self.on_valid_token is not None:
            self.on_valid_token(token)
        with self.lock:
            self.resource_requests.append((token, 200 if ok else 401))
        if not ok:
            return 401, {"error": "invalid_token"}
        return 200, {"ok": True, "client": record.client_id if record else None}

    @property
    def authorization(self) -> _Server:
        if "_authorization" not in self.__dict__:
            self.__dict__["_authorization"] = _Server(self)
        server: _Server = self.__dict__["_authorization"]
        return server


def _handler(state: OAuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            return

        def _answer(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            headers = dict(self.headers.items())
            if self.path.split("?")[0] == TOKEN_PATH:
                self._answer(*state._token(headers, dict(parse_qsl(raw))))
            else:
                self._answer(*state._resource(headers))

        def do_GET(self) -> None:
            self._answer(*state._resource(dict(self.headers.items())))

    return Handler


@contextmanager
def running_oauth_server(**options: Any) -> Iterator[OAuthServer]:
    """The server on a free port of 127.0.0.1; `options` set `OAuthServer` fields."""
    state = OAuthServer(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    state.url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
