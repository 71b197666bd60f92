"""A stand-in for Microsoft Graph v1.0 (users, group members, licences, sessions). Request
shapes as documented: POST /users needs accountEnabled, displayName, mailNickname,
userPrincipalName and passwordProfile.password; members/$ref takes {"@odata.id": ...};
assignLicense needs both addLicenses and removeLicenses. Errors as
{"error": {"code", "message", "innerError"}}."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.support.idp.server import Provider, Request, Response, json_body

_REQUIRED = ("accountEnabled", "displayName", "mailNickname", "userPrincipalName")
_REF = re.compile(r"^https?://[^/]+/v1\.0/directoryObjects/([^/]+)$")
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    inner = {"date": "2026-01-05T09:00:00", "request-id": str(uuid.uuid4())}
    return Response(
        status, {"error": {"code": code, "message": message, "innerError": inner, **extra}}
    )


class Graph(Provider):
    prefix = "/v1.0"

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.users: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, set[str]] = {}
        self.seats: dict[str, int] = {}  # skuId -> licences left
        self.revoked: list[str] = []
        self.throttle = 0  # answer this many requests with 429
        self.read_only = False  # the app lacks write permissions: 403
        self.conflicting: set[str] = set()  # skuIds whose plans clash with one the user has
        self.route("POST", "/users", self.create_user)
        self.route("PATCH", "/users/([^/]+)", self.update_user)
        self.route("POST", "/users/([^/]+)/assignLicense", self.assign_license)
        self.route("POST", "/users/([^/]+)/revokeSignInSessions", self.revoke)
        self.route("POST", r"/groups/([^/]+)/members/\$ref", self.add_member)

    # --- state --------------------------------------------------------------------------------
    def add_group(self) -> str:
        group_id = str(uuid.uuid4())
        self.groups[group_id] = set()
        return group_id

    def user(self, key: str) -> dict[str, Any] | None:
        """By object id or userPrincipalName, as Graph resolves /users/{id | upn}."""
        return self.users.get(key) or next(
            (u for u in self.users.values() if u["userPrincipalName"].lower() == key.lower()),
            None,
        )

    def _missing(self, key: str) -> Response:
        return error(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )

    # --- protocol -----------------------------------------------------------------------------
    def refuse(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        if self.throttle > 0:
            self.throttle -= 1
            response = error(429, "TooManyRequests", "Too many requests.")
            response.headers["Retry-After"] = "0"
            return response
        if self.read_only and request.method != "GET":
            return error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        if request.method in ("POST", "PATCH") and request.raw and not json_body(request):
            return error(400, "BadRequest", "Unable to read JSON request payload.")
        return None

    def no_route(self, request: Request) -> Response:
        return error(400, "BadRequest", f"Resource not found for the segment '{request.path}'.")

    def create_user(self, request: Request, _match: re.Match[str]) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        for name in _REQUIRED:
            if name not in body:
                return error(
                    400,
                    "Request_BadRequest",
                    f"Property '{name}' is required when creating the resource.",
                )
        password = (body.get("passwordProfile") or {}).get("password")
        if not password:
            return error(
                400,
                "Request_BadRequest",
                "Invalid value specified for property 'passwordProfile' of resource 'User'.",
            )
        if self.user(body["userPrincipalName"]) is not None:
            return error(
                400,
                "Request_BadRequest",
                "Another object with the same value for property userPrincipalName already exists.",
                details=[
                    {
                        "code": "ObjectConflict",
                        "message": "Another object with the same value for property "
                        "userPrincipalName already exists.",
                        "target": "userPrincipalName",
                    }
                ],
            )
        user = {k: v for k, v in body.items() if k != "passwordProfile"}
        user["id"] = str(uuid.uuid4())
        user["assignedLicenses"] = []
        self.users[user["id"]] = user
        return Response(201, {"@odata.context": "$metadata#users/$entity", **user})

    def update_user(self, request: Request, match: re.Match[str]) -> Response:
        user = self.user(match[1])
        if user is None:
            return self._missing(match[1])
        user.update(request.body or {})
        return Response(204)

    def assign_license(self, request: Request, match: re.Match[str]) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        missing = [k for k in ("addLicenses", "removeLicenses") if k not in body]
        if missing:
            return error(
                400,
                "Request_BadRequest",
                "One or more parameters of the operation 'assignLicense' are missing from the "
                f"request payload. The missing parameters are: {', '.join(missing)}.",
            )
        user = self.user(match[1])
        if user is None:
            return self._missing(match[1])
        for added in body["addLicenses"]:
            sku = str(added.get("skuId", ""))
            if not _GUID.match(sku) or sku not in self.seats:
                return error(
                    400,
                    "Request_BadRequest",
                    f"License {sku} does not correspond to a valid company License.",
                )
            if not user.get("usageLocation"):
                return error(
                    400,
                    "Request_BadRequest",
                    "License assignment cannot be done for user with invalid usage location.",
                )
            if sku in self.conflicting:
                return error(
                    400,
                    "Request_BadRequest",
                    f"License assignment failed because service plans of SKU {sku} are "
                    "mutually exclusive with a licence the user already has.",
                )
            if self.seats[sku] <= 0:
                return error(
                    400,
                    "Request_BadRequest",
                    f"License assignment failed because service plans of SKU {sku} have no "
                    f"seats left. There are no available licenses.",
                )
        for added in body["addLicenses"]:
            self.seats[added["skuId"]] -= 1
            user["assignedLicenses"].append(added)
        return Response(200, {"@odata.context": "$metadata#users/$entity", **user})

    def revoke(self, _request: Request, match: re.Match[str]) -> Response:
        user = self.user(match[1])
        if user is None:
            return self._missing(match[1])
        self.revoked.append(user["id"])
        return Response(200, {"@odata.context": "$metadata#Edm.Boolean", "value": True})

    def add_member(self, request: Request, match: re.Match[str]) -> Response:
        members = self.groups.get(match[1])
        if members is None:
            return self._missing(match[1])
        body = request.body if isinstance(request.body, dict) else {}
        ref = _REF.match(str(body.get("@odata.id", "")))
        if ref is None or set(body) != {"@odata.id"}:
            return error(
                400,
                "Request_BadRequest",
                "Invalid URL format specified in @odata.bind for members.",
            )
        if self.user(ref[1]) is None:
            return self._missing(ref[1])
        if ref[1] in members:
            return error(
                400,
                "Request_BadRequest",
                "One or more added object references already exist for the following modified "
                "properties: 'members'.",
            )
        members.add(ref[1])
        return Response(204)
