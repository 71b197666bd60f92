"""Route guards: every route depends on exactly one guard — `Require(...)` or `Public()` here,
`Page(...)` or `PublicPage()` on console pages (`grantflow.console.guard`).

The CLI without a server URL runs the app in its own process and acts through it; it sets the
actor in the ASGI scope under `ACTOR_SCOPE_KEY` (see `grantflow.cli.local`). Only code inside
the process can set a scope key: nothing a network client sends (a header, a cookie) reaches it,
so served requests always authenticate with a token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.auth.tokens import authenticate_user
from grantflow.errors import PermissionDenied, Unauthenticated

ACTOR_SCOPE_KEY = "grantflow.actor"


class Guard:
    """The base of every route guard; `create_app` refuses a route without exactly one."""

    permission: Permission | None


class Require(Guard):
    """Authenticate the bearer token and check one permission; the route gets the `Actor`."""

    permission: Permission

    def __init__(self, permission: Permission, *, scope: str = "api") -> None:
        self.permission = permission
        self.scope = scope

    def __call__(self, request: Request) -> Actor:
        actor = self._actor(request)
        if actor.scope != self.scope:
            raise PermissionDenied(
                f"this token has scope {actor.scope!r}; this endpoint needs a token with scope "
                f"{self.scope!r}",
                next_action=(
                    "use a SCIM token (grantflow tokens create --scope scim) for /scim/v2 only"
                    if self.scope == "scim"
                    else "use an API token: SCIM tokens work on /scim/v2 only"
                ),
                code="wrong_token_scope",
            )
        actor.require(self.permission)
        return actor

    def _actor(self, request: Request) -> Actor:
        """The actor the process set for an in-process request, else the bearer token's."""
        injected = request.scope.get(ACTOR_SCOPE_KEY)
        if isinstance(injected, Actor):
            return dataclasses.replace(injected, request_id=request.state.request_id)
        header = request.headers.get("authorization", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise Unauthenticated("this endpoint needs an API token")
        state = request.app.state.grantflow
        with state.database.reads() as session:  # (one read; a rare last-use write alone)
            actor, user = authenticate_user(session, raw.strip(), request.state.request_id)
        request.state.token_user = user  # (GET /me answers from it: no second read)
        return actor

    def __repr__(self) -> str:
        return f"Require({self.permission})"


class Public(Guard):
    """Declares, on purpose, that a route needs no token (health probes, metrics)."""

    permission = None

    async def __call__(self) -> None:  # async: a probe never waits for a worker thread
        return None


def api_routes(app: FastAPI) -> list[APIRoute]:
    return [route for route in app.routes if isinstance(route, APIRoute)]


def route_guard(route: APIRoute) -> Guard | None:
    """The one guard a route declares, or None when it declares none (or several)."""
    guards: list[Any] = []

    def walk(dependant: Dependant) -> None:
        for dep in dependant.dependencies:
            if isinstance(dep.call, Guard):
                guards.append(dep.call)
            walk(dep)

    walk(route.dependant)
    return guards[0] if len(guards) == 1 else None
