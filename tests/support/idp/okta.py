"""A stand-in for Okta's management API (users, group membership, lifecycle). Request shapes
as documented: `Authorization: SSWS <token>`, POST /api/v1/users?activate=true with a profile
holding firstName, lastName, email and login. Errors as {"errorCode", "errorSummary",
"errorLink", "errorId", "errorCauses"}."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.support.idp.server import Provider, Request, Response, json_body

_PROFILE = ("firstName", "lastName", "email", "login")


def error(status: int, code: str, summary: str, *causes: str) -> Response:
    return Response(
        status,
        {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": f"oae{uuid.uuid4().hex[:19]}",
            "errorCauses": [{"errorSummary": c} for c in causes],
        },
    )


class Okta(Provider):
    prefix = "/api/v1"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, set[str]] = {}
        self.rate_limited = 0  # answer this many requests with E0000047
        self.route("POST", "/users", self.create_user)
        self.route("PUT", "/groups/([^/]+)/users/([^/]+)", self.add_member)
        self.route("POST", "/users/([^/]+)/lifecycle/deactivate", self.deactivate)

    def add_group(self) -> str:
        group_id = f"00g{uuid.uuid4().hex[:17]}"
        self.groups[group_id] = set()
        return group_id

    def user(self, key: str) -> dict[str, Any] | None:
        """By id or login, as Okta resolves /users/{id}."""
        return self.users.get(key) or next(
            (u for u in self.users.values() if u["profile"]["login"].lower() == key.lower()),
            None,
        )

    def refuse(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"SSWS {self.token}":
            return error(401, "E0000011", "Invalid token provided")
        if self.rate_limited > 0:
            self.rate_limited -= 1
            response = error(
                429, "E0000047", "API call exceeded rate limit due to too many requests."
            )
            response.headers["X-Rate-Limit-Reset"] = "0"
            return response
        if request.method == "POST" and request.raw and not json_body(request):
            return error(400, "E0000003", "The request body was not well-formed.")
        return None

    def no_route(self, request: Request) -> Response:
        return error(404, "E0000022", "The endpoint does not support the provided HTTP method")

    def _missing(self, key: str, kind: str) -> Response:
        return error(404, "E0000007", f"Not found: Resource not found: {key} ({kind})")

    def create_user(self, request: Request, _match: re.Match[str]) -> Response:
        profile = (request.body or {}).get("profile") if isinstance(request.body, dict) else None
        if not isinstance(profile, dict):
            return error(400, "E0000003", "The request body was not well-formed.")
        blank = [name for name in _PROFILE if not profile.get(name)]
        if blank:
            causes = [f"{name}: The field cannot be left blank" for name in blank]
            return error(400, "E0000001", f"Api validation failed: {blank[0]}", *causes)
        if self.user(profile["login"]) is not None:
            return error(
                400,
                "E0000001",
                "Api validation failed: login",
                "login: An object with this field already exists in the current organization",
            )
        activate = request.param("activate") != "false"
        user = {
            "id": f"00u{uuid.uuid4().hex[:17]}",
            "status": "ACTIVE" if activate else "STAGED",
            "profile": dict(profile),
        }
        self.users[user["id"]] = user
        for group_id in (request.body or {}).get("groupIds") or []:
            self.groups.setdefault(group_id, set()).add(user["id"])
        return Response(200, user)

    def add_member(self, _request: Request, match: re.Match[str]) -> Response:
        members = self.groups.get(match[1])
        if members is None:
            return self._missing(match[1], "UserGroup")
        user = self.users.get(match[2])
        if user is None:
            return self._missing(match[2], "User")
        members.add(user["id"])
        return Response(204)

    def deactivate(self, _request: Request, match: re.Match[str]) -> Response:
        user = self.user(match[1])
        if user is None:
            return self._missing(match[1], "User")
        user["status"] = "DEPROVISIONED"
        return Response(200, {})
