"""/api/v1/docs: Swagger UI from assets vendored in the package (no CDN: it works offline),
and an OpenAPI document that declares the bearer scheme on every route that takes a token, so
"Authorize" and "Try it out" work in the page."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from grantflow.api.routes import API_PREFIX
from grantflow.api.security import Require, api_routes, route_guard

DOCS_PATH = f"{API_PREFIX}/docs"
SCHEME = "bearerAuth"
_ASSETS = "/static/swagger"


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schema.setdefault("components", {})["securitySchemes"] = {
        SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`gft_…`): `grantflow tokens create --user EMAIL`; "
            "/scim/v2 takes a token created with `--scope scim`.",
        }
    }
    for route in api_routes(app):
        if not route.include_in_schema or not isinstance(route_guard(route), Require):
            continue
        operations = schema["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                operation["security"] = [{SCHEME: []}]
    app.openapi_schema = schema
    return schema


def install_docs(app: FastAPI, *, page: bool = True) -> None:
    """Publish the OpenAPI document with its security scheme, and serve the docs page."""
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if not page:
        return

    async def docs(_request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or f"{API_PREFIX}/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_ASSETS}/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
            # 22 tags: a filter box and links to one operation (#/runs/list_runs…), since the
            # UI renders operations as they scroll into view
            swagger_ui_parameters={
                "validatorUrl": None,
                "persistAuthorization": False,
                "filter": True,
                "deepLinking": True,
            },
        )

    app.router.routes.append(Route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False))
