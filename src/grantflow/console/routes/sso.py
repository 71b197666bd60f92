"""/login/sso and its callback: single sign-on with an OpenID Connect provider
(`grantflow.auth.oidc`). The round trip's state, nonce and PKCE verifier ride in a sealed,
short-lived cookie; the callback checks the state before anything else."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from grantflow.auth import oidc, sessions, signin
from grantflow.console import cookies
from grantflow.console.guard import PublicPage, Viewer
from grantflow.console.keys import seal, unseal
from grantflow.console.routes.signin import client_of, login_page, signed_in
from grantflow.console.state import console_state
from grantflow.console.templating import safe_next
from grantflow.errors import GrantflowError, NotFound

router = APIRouter(include_in_schema=False)

_TRIP_SECONDS = 600  # time to sign in at the provider


def _provider(request: Request) -> oidc.Provider:
    state = console_state(request)
    config = oidc.OidcConfig.of(state.settings)
    if config is None:
        raise NotFound(
            "single sign-on is not configured here",
            next_action="sign in with your password (an admin sets GRANTFLOW_OIDC_ISSUER)",
        )
    provider: oidc.Provider | None = getattr(request.app.state, "console_sso", None)
    if provider is None or provider.config != config:
        provider = oidc.Provider(config)
        request.app.state.console_sso = provider
    return provider


@router.get("/login/sso")
def start(
    request: Request, next: str = "/", _viewer: Viewer | None = Depends(PublicPage())
) -> Response:
    """Off to the provider's sign-in page."""
    url, trip = oidc.authorization_url(_provider(request))
    sealed = seal(
        console_state(request).keys.cookies,
        "sso",
        {"state": trip.state, "nonce": trip.nonce, "verifier": trip.verifier, "next": next},
    )
    response = RedirectResponse(url, status_code=303)
    cookies.set_cookie(request, response, cookies.SSO, sealed, max_age=_TRIP_SECONDS)
    return response


@router.get("/login/sso/callback")
def callback(
    request: Request,
    state: str = "",
    code: str = "",
    error: str = "",
    error_description: str = "",
    _viewer: Viewer | None = Depends(PublicPage()),
) -> Response:
    """Back from the provider: check the state, trade the code, verify the ID token, match
    the user, sign in. Any refusal: the login page says why, and it is audited."""
    console = console_state(request)
    provider = _provider(request)
    saved = unseal(console.keys.cookies, "sso", request.cookies.get(cookies.SSO))
    next_url = safe_next(saved.get("next") if isinstance(saved, dict) else "/")
    client = client_of(request)
    email = None
    try:
        if not isinstance(saved, dict) or not hmac.compare_digest(
            str(saved.get("state", "")), state
        ):
            raise oidc.SsoRefused(
                "this sign-in did not start here, or took too long",
                next_action="click the single sign-on button again",
            )
        if error:
            raise oidc.SsoRefused(f"the provider refused the sign-in: {error_description or error}")
        trip = oidc.RoundTrip(
            state=str(saved["state"]), nonce=str(saved["nonce"]), verifier=str(saved["verifier"])
        )
        claims = oidc.exchange(provider, code, trip)
        email = claims.get("email")
        policy = sessions.SessionPolicy.of(console.settings)
        with console.database.transaction() as session:
            user = oidc.user_for(session, provider.config, claims)
            _row, raw = signin.begin(session, user, policy, client, method="sso")
    except GrantflowError as refused:
        with console.database.transaction() as session:
            signin.refuse(session, client, str(email or ""), f"sso: {refused.message}")
        response = login_page(request, next_url=next_url, error=refused)
        cookies.clear_cookie(request, response, cookies.SSO)
        return response
    response = signed_in(request, raw, int(policy.absolute.total_seconds()), next_url)
    cookies.clear_cookie(request, response, cookies.SSO)
    return response
