"""The cookies the console sets, all with one set of flags: HttpOnly, SameSite=Lax, path /,
and Secure when the console is served over https (the request, or GRANTFLOW_PUBLIC_URL)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from grantflow.console.keys import seal, unseal
from grantflow.console.state import console_state

SESSION = "grantflow_session"  # the opaque session token
ANONYMOUS = "grantflow_anon"  # random: binds the CSRF token of forms shown before sign-in
FLASH = "grantflow_flash"  # messages for the next page (sealed)
SSO = "grantflow_sso"  # state, nonce and PKCE verifier of an SSO round trip (sealed)


def is_secure(request: Request) -> bool:
    public = console_state(request).settings.public_url
    return request.url.scheme == "https" or public.startswith("https://")


def set_cookie(
    request: Request, response: Response, name: str, value: str, *, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_secure(request),
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=is_secure(request))


# --- flash messages: shown once, on the next page ---------------------------------------------
def flash(request: Request, level: str, text: str) -> None:
    """Queue a message ("success", "error", "info") for the next page this browser renders."""
    pending: list[list[str]] = request.state.__dict__.setdefault("flash_out", [])
    pending.append([level, text])


def take_flashes(request: Request) -> list[dict[str, str]]:
    """The messages the previous response left, once (render() clears the cookie)."""
    key = console_state(request).keys.cookies
    found = unseal(key, "flash", request.cookies.get(FLASH)) or []
    request.state.flash_taken = bool(found)
    shown: list[dict[str, str]] = []
    for item in found:
        if isinstance(item, list) and len(item) == 2:
            shown.append({"level": str(item[0]), "text": str(item[1])})
    return shown


def write_cookies(request: Request, response: Response) -> None:
    """Store queued messages in the flash cookie; clear the one this request showed; set the
    anonymous cookie a `PublicPage` chose for this browser."""
    anonymous = getattr(request.state, "anonymous_id", None)
    if anonymous and not request.cookies.get(SESSION):
        set_cookie(request, response, ANONYMOUS, anonymous)
    pending: list[Any] = getattr(request.state, "flash_out", [])
    if pending:
        key = console_state(request).keys.cookies
        set_cookie(request, response, FLASH, seal(key, "flash", pending[-5:]), max_age=300)
    elif getattr(request.state, "flash_taken", False):
        clear_cookie(request, response, FLASH)
