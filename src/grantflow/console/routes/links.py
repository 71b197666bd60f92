"""Pages behind single-use links: /password/forgot (asks for a reset link, never saying
whether the account exists), /password/set/<token> (an invitation or reset: choose a password,
then signed in) and /login/link/<token> (a one-time sign-in link: confirm, then signed in).

Opening a link changes nothing (mail scanners follow links); the form on its page uses it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from grantflow import audit
from grantflow.auth import sessions, signin, signin_links
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.auth.signin_links import Purpose
from grantflow.auth.users import check_password_rules, find_user_by_email, set_password
from grantflow.console.guard import PublicPage, Viewer
from grantflow.console.routes.signin import client_of, signed_in
from grantflow.console.state import console_state
from grantflow.console.templating import render
from grantflow.errors import GrantflowError, ValidationError
from grantflow.people import account_email
from grantflow.store.base import utcnow

router = APIRouter(include_in_schema=False)

PASSWORD_PURPOSES = {Purpose.INVITE, Purpose.RESET}
SENT = (
    "If an account exists for that address, an e-mail with a link to choose a new password "
    "is on its way. The link works once."
)


@router.get("/password/forgot")
def forgot_form(request: Request, _viewer: Viewer | None = Depends(PublicPage())) -> Response:
    return render(request, "password_forgot.html", {"sent": False, "email": ""})


@router.post("/password/forgot")
def forgot(
    request: Request,
    email: str = Form("", max_length=320),
    _viewer: Viewer | None = Depends(PublicPage()),
) -> Response:
    """Queue a reset e-mail when the account exists and is active; the page says the same
    either way. Audited (auth.password_reset.requested)."""
    state = console_state(request)
    client = client_of(request)
    with state.database.transaction() as session:
        user = find_user_by_email(session, email) if email.strip() else None
        queued = None
        if user is not None and user.active:
            queued = account_email.queue_reset(session, state.settings, user, utcnow())
        audit.record(
            session,
            Actor(label="anonymous", request_id=client.request_id),
            "auth.password_reset.requested",
            "user",
            user.id if user else None,
            {"email": email.strip().lower(), "address": client.address, "sent": bool(queued)},
        )
    return render(request, "password_forgot.html", {"sent": True, "email": ""})


def _link_page(request: Request, token: str, purposes: set[Purpose]) -> dict[str, object]:
    state = console_state(request)
    with state.database.transaction() as session:
        link = signin_links.resolve(session, state.settings, token, purposes, lock=False)
        return {"email": link.user.email, "purpose": str(link.purpose), "token": token}


@router.get("/password/set/{token}")
def set_form(
    token: str, request: Request, _viewer: Viewer | None = Depends(PublicPage())
) -> Response:
    """Choose a password (an invitation or a reset link); used or expired: a page says so."""
    context = _link_page(request, token, PASSWORD_PURPOSES)
    return render(request, "password_set.html", {**context, "error": None})


@router.post("/password/set/{token}")
async def set_with_link(
    token: str,
    request: Request,
    password: str = Form("", max_length=2000),
    confirm: str = Form("", max_length=2000),
    _viewer: Viewer | None = Depends(PublicPage()),
) -> Response:
    """Set the password, use the link up, and sign in — all in one transaction."""
    state = console_state(request)
    policy = sessions.SessionPolicy.of(state.settings)
    client = client_of(request)

    def apply() -> str | GrantflowError:
        with state.database.transaction() as session:
            link = signin_links.resolve(
                session, state.settings, token, PASSWORD_PURPOSES, lock=True
            )
            try:
                if password != confirm:
                    raise ValidationError(
                        "the two passwords are not the same",
                        details=[{"field": "confirm", "message": "must repeat the password"}],
                        next_action="type the same password twice",
                    )
                check_password_rules(password)
            except ValidationError as error:
                return error
            actor = Actor(
                label=link.user.email,
                user_id=link.user_id,
                permissions=frozenset({Permission.SELF}),
                request_id=client.request_id,
            )
            set_password(session, actor, link.user_id, password)
            signin_links.use(link)
            _row, raw = signin.begin(session, link.user, policy, client, method=str(link.purpose))
            return raw

    outcome = await run_in_threadpool(apply)
    if isinstance(outcome, GrantflowError):
        context = await run_in_threadpool(_link_page, request, token, PASSWORD_PURPOSES)
        return render(request, "password_set.html", {**context, "error": outcome}, status_code=422)
    max_age = int(policy.absolute.total_seconds())
    response = signed_in(request, outcome, max_age, "/")
    return response


@router.get("/login/link/{token}")
def link_form(
    token: str, request: Request, _viewer: Viewer | None = Depends(PublicPage())
) -> Response:
    """A one-time sign-in link: who it signs in, and the button that does."""
    context = _link_page(request, token, {Purpose.SIGN_IN})
    return render(request, "login_link.html", context)


@router.post("/login/link/{token}")
def sign_in_with_link(
    token: str, request: Request, _viewer: Viewer | None = Depends(PublicPage())
) -> Response:
    """Use the link (once) and sign in."""
    state = console_state(request)
    policy = sessions.SessionPolicy.of(state.settings)
    with state.database.transaction() as session:
        link = signin_links.resolve(session, state.settings, token, {Purpose.SIGN_IN}, lock=True)
        signin_links.use(link)
        _row, raw = signin.begin(session, link.user, policy, client_of(request), method="link")
    return signed_in(request, raw, int(policy.absolute.total_seconds()), "/")
