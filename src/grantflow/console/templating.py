"""Rendering: Jinja2 with autoescape, and what every template gets.

Every template sees `viewer` (the signed-in user, or None), `can(permission)` (so a button the
user may not use is never shown), `csrf_field()` (the hidden input every POST form carries),
`csrf_token` (for htmx, sent as a header from `<body hx-headers>`), `flashes` and `settings`-derived
flags. Views call `render(...)` for pages and `redirect(...)` after a successful POST.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from grantflow import timestamps
from grantflow.auth.permissions import Permission
from grantflow.console import cookies, nav, tables
from grantflow.console.guard import CSRF_FIELD, Viewer, csrf_token
from grantflow.console.state import console_state

TEMPLATES = Path(__file__).parent / "templates"
# Pages load nothing but this site's own files: no inline script or style, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _context(request: Request) -> dict[str, Any]:
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    token = csrf_token(request)
    settings = console_state(request).settings

    def can(permission: Permission | str) -> bool:
        return viewer is not None and viewer.can(permission)

    def csrf_field() -> Markup:
        return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token)

    return {
        "viewer": viewer,
        "can": can,
        "csrf_field": csrf_field,
        "csrf_token": token,
        "flashes": cookies.take_flashes(request),
        "sso_enabled": bool(settings.oidc_issuer and settings.oidc_client_id),
        "sso_label": settings.oidc_label,
        "nav": nav.visible(_page_paths(request), can) if viewer else [],
        # a link to a page only once that page exists (the console grows area by area)
        "page_exists": lambda path: path in _page_paths(request),
        "Permission": Permission,
    }


def _page_paths(request: Request) -> set[str]:
    state = console_state(request)
    if not state.page_paths:
        state.page_paths = {
            route.path
            for route in request.app.routes
            if isinstance(route, APIRoute) and "GET" in (route.methods or ())
        }
    return state.page_paths


def _when(value: Any) -> str:
    """A timestamp as RFC 3339 UTC to the second (the one format everywhere), '—' for none."""
    if isinstance(value, str):  # a time already written as text (e.g. read from JSON)
        text: str = value
        if "T" not in text:
            return text  # a date, or words
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if isinstance(value, dt.datetime):
        return timestamps.rfc3339(value.replace(microsecond=0))
    return "—" if value is None else str(timestamps.plain(value))


def _sentence(text: Any) -> str:
    """An API message as a sentence: capitalised, ending with a full stop."""
    words = str(text).strip()
    if not words:
        return ""
    words = words[0].upper() + words[1:]
    return words if words.endswith((".", "!", "?")) else words + "."


def _pretty(value: Any) -> str:
    """A value as indented JSON (times in RFC 3339), for a <pre>."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=timestamps.json_default)


def make_templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["sentence"] = _sentence
    env.filters["tone"] = tables.tone
    env.filters["pretty"] = _pretty
    return Jinja2Templates(env=env, context_processors=[_context])


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> Response:
    """A page (or an htmx fragment) rendered with the console's context."""
    templates = console_state(request).templates
    response = templates.TemplateResponse(request, template, context or {}, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    cookies.write_cookies(request, response)
    return response


def redirect(request: Request, url: str, *, message: str | None = None) -> Response:
    """303 to `url` (after a POST), with an optional success message for the next page. An
    htmx request gets `HX-Redirect` instead, so the whole page changes."""
    if message:
        cookies.flash(request, "success", message)
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    cookies.write_cookies(request, response)
    return response


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after signing in: a path on this site only (never //host or a URL)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ch in target for ch in "\r\n\\") or len(target) > 2000:
        return default
    return target


def plain(text: object) -> Markup:
    """Escape text for use in a Markup-built string."""
    return escape(str(text))
