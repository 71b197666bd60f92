"""A real OpenID Connect provider for tests, on 127.0.0.1: Authlib's AuthorizationServer with
the authorization-code grant, PKCE (S256 required) and the OpenID Connect extension signing ID
tokens with an RSA key published at its JWKS URL; discovery at
`/.well-known/openid-configuration`.

Its sign-in page (`/authorize`) is a plain form: the e-mail of one of `users`, and "Sign in".
Tests can make it misbehave (`tamper`): sign ID tokens with a key it does not publish, name
another audience or issuer, or echo a different nonce.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from joserfc.jwk import RSAKey

CLIENT_ID = "grantflow-console"


@dataclass
class Person:
    email: str
    name: str
    email_verified: bool = True
    sub: str = field(default_factory=lambda: "sub-" + secrets.token_hex(6))


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, data: dict[str, str]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._data.items():
            values[key].append(value)
        return values


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(
        self,
        method: str,
        uri: str,
        headers: dict[str, str],
        args: dict[str, str],
        form: dict[str, str],
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = args
        self._form = form
        self.payload = _Payload({**args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def save_authorization_code(self, code: str, request: _Request) -> None:
        data = request.payload.data
        self.server.provider.codes[code] = Code(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data.get("redirect_uri", ""),
            scope=data.get("scope", ""),
            person=request.user,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
        )

    def query_authorization_code(self, code: str, client: Client) -> Code | None:
        found = self.server.provider.codes.get(code)
        return found if found is not None and found.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.provider.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Person:
        return authorization_code.person


class _OpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(require_nonce=True)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: _Request) -> bool:
        return any(code.nonce == nonce for code in self.provider.codes.values())

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        tamper = self.provider.tamper
        return self.provider.rogue_key if tamper == "unpublished_key" else self.provider.key

    def get_client_algorithm(self, client: Client) -> str:
        return "RS256"

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.provider.key.kid or ""}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        tamper = self.provider.tamper
        issuer = "https://elsewhere.example" if tamper == "issuer" else self.provider.url
        audience = "another-client" if tamper == "audience" else client.client_id
        return {"iss": issuer, "aud": [audience]}

    def get_authorization_code_claims(self, authorization_code: Code) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        if self.provider.tamper == "nonce":
            claims["nonce"] = "not-the-nonce-you-sent"
        return claims

    def generate_user_info(self, user: Person, scope: str) -> UserInfo:
        return UserInfo(
            sub=user.sub, name=user.name, email=user.email, email_verified=user.email_verified
        )


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider
        self.register_grant(_CodeGrant, [CodeChallenge(required=True), _OpenIDCode(provider)])
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
        return {
            "token_type": "Bearer",
            "access_token": "at-" + secrets.token_urlsafe(16),
            "expires_in": 3600,
            "scope": scope or "",
        }

    def query_client(self, client_id: str) -> Client | None:
        return self.provider.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        self.provider.issued.append(dict(token))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: _Request) -> _Request:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers


@dataclass
class OidcProvider:
    """The provider's state; see `running_oidc_provider`."""

    users: dict[str, Person] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    issued: list[dict[str, Any]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    tamper: str | None = None  # unpublished_key, issuer, audience, nonce
    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, auto_kid=True))
    rogue_key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, auto_kid=True))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, email: str, name: str = "", *, email_verified: bool = True) -> Person:
        person = Person(
            email=email, name=name or email.split("@")[0], email_verified=email_verified
        )
        self.users[email] = person
        return person

    def register_client(self, redirect_uri: str, secret: str | None = None) -> Client:
        client = Client(CLIENT_ID, secret or "cs-" + secrets.token_urlsafe(12), [redirect_uri])
        self.clients[client.client_id] = client
        return client

    @property
    def authorization(self) -> _Server:
        if "_server" not in self.__dict__:
            self.__dict__["_server"] = _Server(self)
        server: _Server = self.__dict__["_server"]
        return server

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test IdP</title>
<link rel="icon" href="data:,"></head><body><h1>Test identity provider</h1>{error}
<form method="post" action="/authorize"><input type="hidden" name="query" value="{query}">
<label>Provider e-mail <input name="email" type="email"></label>
<button type="submit">Sign in at the provider</button></form></body></html>"""


def _handler(provider: OidcProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            return

        def _send(
            self,
            status: int,
            body: str | bytes,
            content_type: str,
            headers: list[tuple[str, str]] = (),
        ) -> None:  # type: ignore[assignment]
            payload = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _json(self, status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
            self._send(status, json.dumps(body), "application/json", headers)

        def _page(self, query: str, error: str = "") -> None:
            shown = f"<p role='alert'>{html.escape(error)}</p>" if error else ""
            self._send(200, _PAGE.format(query=html.escape(query), error=shown), "text/html")

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json(200, provider.discovery())
            elif url.path == "/jwks":
                self._json(200, provider.jwks())
            elif url.path == "/authorize":
                self._page(url.query)
            else:
                self._json(404, {"error": "not_found"})

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("content-length") or 0)
            return dict(parse_qsl(self.rfile.read(length).decode() if length else ""))

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            form = self._form()
            headers = dict(self.headers.items())
            if url.path == "/token":
                with provider.lock:
                    provider.token_requests.append(form)
                    request = _Request("POST", provider.url + "/token", headers, {}, form)
                    status, body, extra = provider.authorization.create_token_response(request)
                self._json(status, body, extra)
                return
            if url.path != "/authorize":
                self._json(404, {"error": "not_found"})
                return
            query = form.get("query", "")
            person = provider.users.get(form.get("email", "").strip().lower())
            if person is None:
                self._page(query, "no such account at this provider")
                return
            args = dict(parse_qsl(query))
            request = _Request("GET", f"{provider.url}/authorize?{query}", headers, args, {})
            server = provider.authorization
            with provider.lock:
                try:
                    grant = server.get_consent_grant(request, end_user=person)
                    status, body, extra = server.create_authorization_response(
                        request, grant_user=person, grant=grant
                    )
                except OAuth2Error as error:
                    self._page(query, f"{error.error}: {error.description}")
                    return
            if status == 302:
                self._send(302, "", "text/plain", extra)
            else:
                self._json(status, body, extra)

    return Handler


@contextmanager
def running_oidc_provider(**options: Any) -> Iterator[OidcProvider]:
    """The provider on a free port of 127.0.0.1; `options` set `OidcProvider` fields."""
    provider = OidcProvider(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    provider.url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
