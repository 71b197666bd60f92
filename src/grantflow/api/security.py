"""Route guards: every route depends on exactly one `Require(...)` or `Public()`.

The CLI without a server URL runs the app in its own process and acts through it; it sets the
actor in the ASGI scope under `ACTOR_SCOPE_KEY` (see `grantflow.cli.local`). Only code inside
the process can set a scope key: nothing a network client sends (a header, a cookie) reaches it,
so served requests always authenticate with a token.
"""

from __future__ import annotations

import dataclasses

from fastapi import Request

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.auth.tokens import authenticate
from grantflow.errors import PermissionDenied, Unauthenticated

ACTOR_SCOPE_KEY = "grantflow.actor"


class Require:
    """Authenticate the bearer token and check one permission; the route gets the `Actor`."""

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
        with state.database.transaction() as session:
            return authenticate(session, raw.strip(), request_id=request.state.request_id)

    def __repr__(self) -> str:
        return f"Require({self.permission})"


class Public:
    """Declares, on purpose, that a route needs no token (health probes, metrics)."""

    async def __call__(self) -> None:  # async: a probe never waits for a worker thread
        return None
