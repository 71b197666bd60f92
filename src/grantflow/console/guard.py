"""Page guards: every console route depends on exactly one `Page(permission)` or `PublicPage()`,
as API routes do on `Require` / `Public`.

`Page` reads the session cookie (never a bearer token), builds the same `Actor` a token would
(the user's roles -> permissions), and checks the permission; on a state-changing request it
first checks the CSRF token (form field `csrf_token` or header `X-CSRF-Token`). Not signed in:
`SignInRequired` (the error pages redirect to /login?next=...). A refused CSRF token or a missing
permission on a state-changing request is audited.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from grantflow import audit
from grantflow.api.security import Guard
from grantflow.auth import sessions
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console import cookies
from grantflow.console.keys import mac
from grantflow.console.state import console_state
from grantflow.errors import PermissionDenied, Unauthenticated

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SignInRequired(Unauthenticated):
    """No live console session: the page redirects to /login?next=<this page>."""

    code = "sign_in_required"
    default_next_action = "sign in"


class CsrfRefused(PermissionDenied):
    code = "csrf_refused"
    default_next_action = "reload the page and submit the form again"


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of this request, for templates and views."""

    actor: Actor
    email: str
    display_name: str
    session_id: str

    def can(self, permission: Permission | str) -> bool:
        return Permission(permission) in self.actor.permissions


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser: bound to its session, or before sign-in to its
    anonymous cookie (set on the response by `PublicPage`)."""
    key = console_state(request).keys.csrf
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    if viewer is not None:
        return mac(key, f"session|{viewer.session_id}")
    anonymous = getattr(request.state, "anonymous_id", None) or request.cookies.get(
        cookies.ANONYMOUS, ""
    )
    return mac(key, f"anonymous|{anonymous}") if anonymous else ""


async def _submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def _refuse_audited(request: Request, actor: Actor, action: str, error: PermissionDenied) -> None:
    with console_state(request).database.transaction() as session:
        audit.record(
            session,
            actor,
            action,
            "console_page",
            request.url.path,
            {"method": request.method, "reason": error.message},
        )
    raise error


async def check_csrf(request: Request, actor: Actor) -> None:
    """Refuse (403, audited) a state-changing request without this browser's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    expected = csrf_token(request)
    submitted = await _submitted_token(request)
    if not expected or not hmac.compare_digest(expected, submitted):
        error = CsrfRefused(
            "this form was not sent from a page of this console (its security token is "
            "missing or out of date), so nothing was changed"
        )
        await run_in_threadpool(_refuse_audited, request, actor, "console.csrf_refused", error)


def _signed_in(request: Request) -> Viewer | None:
    raw = request.cookies.get(cookies.SESSION, "")
    if not raw:
        return None
    with console_state(request).database.transaction() as session:
        row = sessions.find_session(session, raw)
        if row is None:
            return None
        actor = sessions.actor_of(row, request_id=getattr(request.state, "request_id", None))
        return Viewer(
            actor=actor,
            email=row.user.email,
            display_name=row.user.display_name,
            session_id=row.id,
        )


async def current_viewer(request: Request) -> Viewer | None:
    """The signed-in user (looked up once per request), or None."""
    if "viewer" not in request.state.__dict__:
        request.state.viewer = await run_in_threadpool(_signed_in, request)
    viewer: Viewer | None = request.state.viewer
    return viewer


class Page(Guard):
    """A console page or action that needs a signed-in user holding `permission`."""

    permission: Permission

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Actor:
        viewer = await current_viewer(request)
        if viewer is None:
            raise SignInRequired("sign in to see this page")
        await check_csrf(request, viewer.actor)
        try:
            viewer.actor.require(self.permission)
        except PermissionDenied as error:
            if request.method not in SAFE_METHODS:
                await run_in_threadpool(
                    _refuse_audited, request, viewer.actor, "console.forbidden", error
                )
            raise
        return viewer.actor

    def __repr__(self) -> str:
        return f"Page({self.permission})"


class PublicPage(Guard):
    """A page anyone may open (sign-in, forgotten password). Its forms still carry a CSRF
    token, bound to an anonymous cookie set here (so a login form cannot be forged either)."""

    permission = None

    async def __call__(self, request: Request) -> Viewer | None:
        viewer = await current_viewer(request)
        if viewer is None and not request.cookies.get(cookies.ANONYMOUS):
            # set on the response by `render` (the page's forms carry a token bound to it)
            request.state.anonymous_id = secrets.token_urlsafe(24)
        actor = viewer.actor if viewer else Actor(label="anonymous", request_id=_rid(request))
        await check_csrf(request, actor)
        return viewer

    def __repr__(self) -> str:
        return "PublicPage()"


def _rid(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)
