"""/login and /logout: password sign-in (throttled, audited) and signing out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grantflow.auth import sessions, signin, throttle
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.console import cookies
from grantflow.console.guard import Page, PublicPage, Viewer
from grantflow.console.state import console_state
from grantflow.console.templating import redirect, render, safe_next
from grantflow.errors import GrantflowError, Unauthenticated

router = APIRouter(include_in_schema=False)


def client_of(request: Request) -> signin.Client:
    """Where this sign-in comes from, and the session this browser had (ended by the new one:
    one browser, one session)."""
    previous: Viewer | None = getattr(request.state, "viewer", None)
    return signin.Client(
        address=request.client.host if request.client else "unknown",
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
        replaces=previous.session_id if previous else None,
    )


def signed_in(request: Request, raw: str, row_expires_in: int, target: str) -> Response:
    """Set the session cookie (lasting as long as the session can) and go on."""
    response = redirect(request, safe_next(target))
    cookies.set_cookie(request, response, cookies.SESSION, raw, max_age=row_expires_in)
    cookies.clear_cookie(request, response, cookies.ANONYMOUS)
    return response


def login_page(
    request: Request,
    *,
    next_url: str = "/",
    email: str = "",
    error: GrantflowError | None = None,
) -> Response:
    status = error.http_status if error else 200
    context = {"next": safe_next(next_url), "email": email, "error": error}
    return render(request, "login.html", context, status_code=status)


@router.get("/login")
def login_form(
    request: Request, next: str = "/", viewer: Viewer | None = Depends(PublicPage())
) -> Response:
    """The sign-in page (signed in already: straight on)."""
    if viewer is not None:
        return redirect(request, safe_next(next))
    return login_page(request, next_url=next)


@router.post("/login")
async def login(
    request: Request,
    email: str = Form("", max_length=320),
    password: str = Form("", max_length=1000),
    next: str = Form("/", max_length=2000),
    _viewer: Viewer | None = Depends(PublicPage()),
) -> Response:
    """Check the password; on success a new session (never the old one: no fixation)."""
    if not email.strip() or not password:
        error = Unauthenticated(
            "enter your e-mail and password", code="sign_in_incomplete", next_action=None
        )
        return login_page(request, next_url=next, email=email, error=error)
    state = console_state(request)
    policy = sessions.SessionPolicy.of(state.settings)
    limits = throttle.ThrottlePolicy.of(state.settings)

    def attempt() -> tuple[str, int] | GrantflowError:
        with state.database.transaction() as session:
            outcome = signin.sign_in_with_password(
                session, email, password, client_of(request), policy=policy, limits=limits
            )
            if isinstance(outcome, GrantflowError):
                return outcome
            return outcome[1], int(policy.absolute.total_seconds())

    outcome = await run_in_threadpool(attempt)
    if isinstance(outcome, GrantflowError):
        return login_page(request, next_url=next, email=email, error=outcome)
    raw, max_age = outcome
    return signed_in(request, raw, max_age, next)


@router.post("/logout")
def logout(request: Request, actor: Actor = Depends(Page(Permission.SELF))) -> Response:
    """Sign this browser out."""
    viewer: Viewer = request.state.viewer
    with console_state(request).database.transaction() as session:
        sessions.end_session(session, actor, viewer.session_id)
    cookies.flash(request, "info", "You are signed out.")
    response = redirect(request, "/login")
    cookies.clear_cookie(request, response, cookies.SESSION)
    return response
