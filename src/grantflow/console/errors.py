"""Errors on console pages: an HTML page in words (the message and the next action, as the API
says them), never a stack trace; not signed in: a redirect to /login?next=<page>.

`grantflow.api.errors` hands every error raised under a console path to `handle`.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import structlog
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from grantflow.console import cookies
from grantflow.console.templating import render, safe_next
from grantflow.errors import GrantflowError, Unauthenticated

log = structlog.get_logger("grantflow.console")

# paths that are not console pages (the API, SCIM, inbound webhooks, probes): their errors stay JSON
_NOT_CONSOLE = ("/api/", "/scim/", "/hooks/", "/healthz", "/readyz", "/metrics")


def is_console(request: Request) -> bool:
    return not request.url.path.startswith(_NOT_CONSOLE)


def _sign_in(request: Request) -> Response:
    """To the login page, then back: GET to this page; a POST to the page it was sent from."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        referer = urlsplit(request.headers.get("referer", ""))
        back = safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))
    url = "/login" if back == "/" else f"/login?next={quote(back, safe='/')}"
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=401, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    if request.cookies.get(cookies.SESSION):
        cookies.clear_cookie(request, response, cookies.SESSION)
    return response


_API_LINK = "/api/v1/links/"


def browser_link(request: Request, exc: Exception) -> Response | None:
    """An e-mail's link of the API (`/api/v1/links/<token>`, sent before links led to the
    console) opened in a browser — a GET wanting HTML, without an API token — goes to its
    console page (`/links/<token>`), which signs in first. API clients are left alone."""
    path = request.url.path
    if not isinstance(exc, Unauthenticated) or request.method != "GET":
        return None
    if not path.startswith(_API_LINK) or "authorization" in request.headers:
        return None
    token = path.removeprefix(_API_LINK)
    if not token or "/" in token or "text/html" not in request.headers.get("accept", ""):
        return None
    return RedirectResponse(f"/links/{quote(token, safe='')}", status_code=303)


def _page(
    request: Request,
    status: int,
    title: str,
    message: str,
    next_action: str | None = None,
    details: list[dict[str, object]] | None = None,
) -> Response:
    context = {
        "status": status,
        "title": title,
        "message": message,
        "next_action": next_action,
        "details": details or [],
        "request_id": getattr(request.state, "request_id", None),
    }
    template = {403: "403.html", 404: "404.html"}.get(status, "error.html")
    return render(request, template, context, status_code=status)


_TITLES = {
    400: "The request is not valid",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "That cannot be done now",
    410: "No longer available",
    422: "Some input is not valid",
    429: "Too many attempts",
    503: "Unavailable",
}


async def handle(request: Request, exc: Exception) -> Response:
    """The console's answer to any error under a console path."""
    if isinstance(exc, Unauthenticated):
        return _sign_in(request)
    if isinstance(exc, GrantflowError):
        status = exc.http_status
        if status >= 500:
            log.error("console.error", code=exc.code, message=exc.message)
        title = _TITLES.get(status, "Something went wrong")
        return _page(request, status, title, exc.message, exc.next_action, exc.details)
    if isinstance(exc, RequestValidationError):
        details: list[dict[str, object]] = [
            {
                "field": ".".join(str(p) for p in err["loc"][1:]) or "request",
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        return _page(
            request, 422, _TITLES[422], "some fields are missing or not valid", None, details
        )
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        if status == 404:
            message = f"there is no page at {request.url.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _page(request, status, _TITLES.get(status, "Error"), message)
    log.exception("console.unhandled", error_type=type(exc).__name__)
    return _page(
        request,
        500,
        "Something went wrong",
        "an unexpected error occurred; nothing more is shown here",
        "report this with the request id below; it is a fault in Grantflow",
    )
