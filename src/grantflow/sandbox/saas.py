"""The sandbox's SaaS-like HTTP API: what the example workflows' http and identity-provider steps
call, answered from memory.

- `GET /` (the connections' health check), and `GET /state`: what the sandbox holds (the one
  request that needs no credential, so a newcomer can look with a bare `curl`).
- a mailer: `POST /send` records the message (nothing is delivered) and answers 202.
- a wiki: `GET /members`, `PUT /members/{email}`, `DELETE /members/{email}` (404 if not one).
- one directory of accounts, seen through the few provider calls the examples make, with the
  request and error shapes those providers document:
  Microsoft Graph `POST /v1.0/users`, `PATCH /v1.0/users/{id|upn}`,
  `POST /v1.0/users/{id|upn}/assignLicense` and `/revokeSignInSessions`;
  Okta `POST /api/v1/users/{id|login}/lifecycle/deactivate`;
  Google `PUT|PATCH /admin/directory/v1/users/{id|email}`.
  An account made through Graph is the one Okta and Google calls find by email, so an
  onboarded person can be offboarded. Anything else is a 404: this is not an emulator.

Every other request needs the sandbox credential, as `Authorization: Bearer`, `Authorization: SSWS`
(Okta's scheme) or `X-Api-Key`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

JSON = dict[str, Any]


@dataclass
class Reply:
    status: int
    body: Any = None


@dataclass
class Holdings:
    """Everything the API holds; one lock, since the server answers on many threads."""

    accounts: dict[str, JSON] = field(default_factory=dict)  # by id
    mails: list[JSON] = field(default_factory=list)
    wiki_members: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def account(self, key: str) -> JSON | None:
        """By id or email (Graph's id or userPrincipalName, Okta's login, Google's key)."""
        return self.accounts.get(key) or next(
            (a for a in self.accounts.values() if a["email"].lower() == key.lower()), None
        )

    def state(self) -> JSON:
        return {
            "accounts": list(self.accounts.values()),
            "mails": list(self.mails),
            "wiki_members": sorted(self.wiki_members),
        }


def _graph_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})


def _missing(key: str) -> Reply:
    return _graph_error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")


Route = Callable[[Holdings, re.Match[str], Any], Reply]
ROUTES: list[tuple[str, re.Pattern[str], Route]] = []


def route(method: str, pattern: str) -> Callable[[Route], Route]:
    def register(handler: Route) -> Route:
        ROUTES.append((method, re.compile(f"^{pattern}$"), handler))
        return handler

    return register


@route("GET", "/")
def _health(held: Holdings, _m: re.Match[str], _body: Any) -> Reply:
    return Reply(200, {"name": "Grantflow sandbox", "accounts": len(held.accounts)})


@route("POST", "/send")
def _send(held: Holdings, _m: re.Match[str], body: Any) -> Reply:
    if not isinstance(body, dict) or not body.get("to"):
        return Reply(400, {"error": "a JSON object with `to` is required"})
    message = {"id": str(uuid.uuid4()), **body}
    held.mails.append(message)
    return Reply(202, {"queued": True, "id": message["id"]})


@route("GET", "/members")
def _members(held: Holdings, _m: re.Match[str], _body: Any) -> Reply:
    return Reply(200, {"members": sorted(held.wiki_members)})


@route("PUT", "/members/([^/]+)")
def _add_member(held: Holdings, m: re.Match[str], _body: Any) -> Reply:
    new = m[1].lower() not in held.wiki_members
    held.wiki_members.add(m[1].lower())
    return Reply(201 if new else 200, {"member": m[1].lower()})


@route("DELETE", "/members/([^/]+)")
def _remove_member(held: Holdings, m: re.Match[str], _body: Any) -> Reply:
    if m[1].lower() not in held.wiki_members:
        return Reply(404, {"error": f"{m[1]} is not a member"})
    held.wiki_members.discard(m[1].lower())
    return Reply(204)


@route("POST", "/v1.0/users")
def _graph_create(held: Holdings, _m: re.Match[str], body: Any) -> Reply:
    body = body if isinstance(body, dict) else {}
    for name in ("accountEnabled", "displayName", "mailNickname", "userPrincipalName"):
        if name not in body:
            return _graph_error(
                400, "Request_BadRequest", f"Property '{name}' is required when creating it."
            )
    if held.account(str(body["userPrincipalName"])) is not None:
        return _graph_error(
            400,
            "Request_BadRequest",
            "Another object with the same value for property userPrincipalName already exists.",
        )
    account = {k: v for k, v in body.items() if k != "passwordProfile"}  # never kept
    account |= {"id": str(uuid.uuid4()), "email": body["userPrincipalName"]}
    account |= {"assignedLicenses": [], "sessionsRevoked": 0}
    held.accounts[account["id"]] = account
    return Reply(201, account)


@route("PATCH", "/v1.0/users/([^/]+)")
def _graph_update(held: Holdings, m: re.Match[str], body: Any) -> Reply:
    account = held.account(m[1])
    if account is None:
        return _missing(m[1])
    account.update(body if isinstance(body, dict) else {})
    return Reply(204)


@route("POST", "/v1.0/users/([^/]+)/assignLicense")
def _graph_license(held: Holdings, m: re.Match[str], body: Any) -> Reply:
    body = body if isinstance(body, dict) else {}
    if "addLicenses" not in body or "removeLicenses" not in body:
        return _graph_error(400, "Request_BadRequest", "addLicenses and removeLicenses are needed")
    account = held.account(m[1])
    if account is None:
        return _missing(m[1])
    if body["addLicenses"] and not account.get("usageLocation"):
        return _graph_error(
            400,
            "Request_BadRequest",
            "License assignment cannot be done for user with invalid usage location.",
        )
    removed = set(body["removeLicenses"])
    kept = [x for x in account["assignedLicenses"] if x.get("skuId") not in removed]
    account["assignedLicenses"] = kept + list(body["addLicenses"])
    return Reply(200, account)


@route("POST", "/v1.0/users/([^/]+)/revokeSignInSessions")
def _graph_revoke(held: Holdings, m: re.Match[str], _body: Any) -> Reply:
    account = held.account(m[1])
    if account is None:
        return _missing(m[1])
    account["sessionsRevoked"] += 1
    return Reply(200, {"value": True})


@route("POST", "/api/v1/users/([^/]+)/lifecycle/deactivate")
def _okta_deactivate(held: Holdings, m: re.Match[str], _body: Any) -> Reply:
    account = held.account(m[1])
    if account is None:
        return Reply(404, {"errorCode": "E0000007", "errorSummary": f"Not found: {m[1]}"})
    account["oktaStatus"] = "DEPROVISIONED"
    return Reply(200, {})


def _google_update(held: Holdings, m: re.Match[str], body: Any) -> Reply:
    account = held.account(m[1])
    if account is None:
        return Reply(404, {"error": {"code": 404, "message": "Resource Not Found: userKey"}})
    if isinstance(body, dict) and "suspended" in body:
        account["suspended"] = bool(body["suspended"])
    return Reply(200, {"id": account["id"], "primaryEmail": account["email"], **body})


route("PUT", "/admin/directory/v1/users/([^/]+)")(_google_update)
route("PATCH", "/admin/directory/v1/users/([^/]+)")(_google_update)


def answer(held: Holdings, token: str, method: str, path: str, headers: Any, body: Any) -> Reply:
    """The reply to one request (auth first, then the first route that matches)."""
    scheme, _, given = (headers.get("Authorization") or "").partition(" ")
    if (method, path) == ("GET", "/state"):
        with held.lock:
            return Reply(200, held.state())
    if not (
        (scheme.lower() in ("bearer", "ssws") and given == token)
        or headers.get("X-Api-Key") == token
    ):
        return Reply(401, {"error": "the sandbox credential is missing or wrong"})
    for verb, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match and verb == method:
            with held.lock:
                return handler(held, match, body)
    return Reply(404, {"error": f"the sandbox has no {method} {path}"})


def make_server(host: str, port: int, token: str, held: Holdings) -> ThreadingHTTPServer:
    """The API's server, bound (not yet serving)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            return  # (the steps' attempts are Grantflow's record of these calls)

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = unquote(urlsplit(self.path).path)
            reply = answer(held, token, self.command, path, self.headers, body)
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
