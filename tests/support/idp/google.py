"""A stand-in for Google's Admin SDK Directory API (users, group members). Request shapes as
documented: POST users needs primaryEmail, name.givenName, name.familyName and password;
POST groups/{groupKey}/members needs email (or id); PUT/PATCH users/{userKey}. Errors as
{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.support.idp.server import Provider, Request, Response, json_body


def error(status: int, message: str, reason: str) -> Response:
    return Response(
        status,
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
            }
        },
    )


class Google(Provider):
    prefix = "/admin/directory/v1"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, str]] = {}  # group email -> member email -> role
        self.rate_limited = 0  # answer this many requests with 403 userRateLimitExceeded
        self.route("POST", "/users", self.insert_user)
        self.route("PUT", "/users/([^/]+)", self.update_user)
        self.route("PATCH", "/users/([^/]+)", self.update_user)
        self.route("POST", "/groups/([^/]+)/members", self.add_member)

    def user(self, key: str) -> dict[str, Any] | None:
        """By id or primary email, as the Directory API resolves userKey."""
        return self.users.get(key) or next(
            (u for u in self.users.values() if u["primaryEmail"].lower() == key.lower()), None
        )

    def refuse(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                "authError",
            )
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return error(403, "User Rate Limit Exceeded", "userRateLimitExceeded")
        if request.method in ("POST", "PUT", "PATCH") and not json_body(request):
            return error(400, "Invalid Input", "invalid")
        return None

    def no_route(self, request: Request) -> Response:
        return error(404, f"Not Found: {request.path}", "notFound")

    def insert_user(self, request: Request, _match: re.Match[str]) -> Response:
        body = request.body
        name = body.get("name") or {}
        needed = {
            "primaryEmail": body.get("primaryEmail"),
            "name.givenName": name.get("givenName"),
            "name.familyName": name.get("familyName"),
            "password": body.get("password"),
        }
        for field, value in needed.items():
            if not value:
                return error(400, f"Invalid Input: {field}", "invalid")
        if self.user(body["primaryEmail"]) is not None:
            return error(409, "Entity already exists.", "duplicate")
        user = {k: v for k, v in body.items() if k != "password"}
        user.update(kind="admin#directory#user", id=str(uuid.uuid4().int)[:21], suspended=False)
        self.users[user["id"]] = user
        return Response(200, user)

    def update_user(self, request: Request, match: re.Match[str]) -> Response:
        user = self.user(match[1])
        if user is None:
            return error(404, "Resource Not Found: userKey", "notFound")
        user.update(request.body)
        return Response(200, user)

    def add_member(self, request: Request, match: re.Match[str]) -> Response:
        members = self.groups.get(match[1])
        if members is None:
            return error(404, "Resource Not Found: groupKey", "notFound")
        email = request.body.get("email")
        if not email and not request.body.get("id"):
            return error(400, "Missing required field: member", "required")
        if email in members:
            return error(409, "Member already exists.", "duplicate")
        role = request.body.get("role", "MEMBER")
        members[email] = role
        member = {
            "kind": "admin#directory#member",
            "email": email,
            "role": role,
            "type": "USER",
            "status": "ACTIVE",
        }
        return Response(200, member)
