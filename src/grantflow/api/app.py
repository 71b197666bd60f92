"""The app factory: routers, middleware, error handler, and the deny-by-default check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from grantflow import __version__, console
from grantflow.api.docs import install_docs
from grantflow.api.errors import install_error_handlers
from grantflow.api.middleware import HttpMetrics, RequestMiddleware
from grantflow.api.openapi import document_errors
from grantflow.api.routes import (
    API_PREFIX,
    applications,
    audit,
    connections,
    controls,
    email,
    evidence,
    grants,
    health,
    hooks,
    identities,
    identity_import,
    identity_imports,
    inbox,
    incidents,
    jobs,
    notifications,
    reconciliation,
    reports,
    reviews,
    runs,
    safety,
    users,
    workflows,
)
from grantflow.api.security import api_routes, route_guard

__all__ = ["api_routes", "create_app", "route_guard"]
from grantflow.api.state import AppState
from grantflow.config import Settings, master_keys
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import guarded_client, outbound_policy
from grantflow.definitions import sandbox
from grantflow.people import email as people_email
from grantflow.queue.transports import open_queue
from grantflow.safety import config as safety_config
from grantflow.store.database import Database


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # the API's own outbound client (Test connection, reconciliation) is closed on shutdown
    app.state.grantflow.connections.http.close()


def create_app(settings: Settings, database: Database, *, api_only: bool = False) -> FastAPI:
    """The whole app; `api_only`: the /api/v1 routes and the probes alone — what the CLI's local
    mode calls — without the console, the SCIM service and the docs page, whose imports would
    cost every local command about half a second."""
    app = FastAPI(
        lifespan=_lifespan,
        title="Grantflow",
        version=__version__,
        description="Access automation and identity-lifecycle workflows.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served by install_docs, from vendored assets (works offline)
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    registry = CollectorRegistry()
    keyring = keyring_for(settings)
    database.use_master_keys(lambda: master_keys(settings))  # the audit chain's keys
    people_email.configure(settings)  # e-mail sent from this process uses these settings
    sandbox.configure(settings)  # template limits for dry-runs (and workers in this process)
    safety_config.configure(settings)  # breakers, spend caps (and workers in this process)
    # The API's own outbound calls (Test connection) go through the same guard as workers'.
    http = guarded_client(outbound_policy(settings), follow_redirects=True)
    app.state.grantflow = AppState(
        settings=settings,
        database=database,
        registry=registry,
        queue=open_queue(database, settings.queue_url, prefix=settings.queue_prefix),
        keyring=keyring,
        connections=ConnectionAccess(database, keyring, http),
    )
    # Routers are added route by route (not include_router): each route keeps its full path
    # and guard on the APIRoute itself, which the deny-by-default check below reads.
    for module in (
        health,
        applications,
        audit,
        users,
        workflows,
        runs,
        connections,
        notifications,
        identity_import,
        identity_imports,
        identities,
        grants,
        incidents,
        evidence,
        reconciliation,
        inbox,
        email,
        reviews,
        jobs,
        controls,
        reports,
        hooks,
        safety,
    ):
        app.router.routes.extend(module.router.routes)
    if not api_only:
        from grantflow.api.routes import scim  # (scim2-models: the heaviest import of all)

        app.router.routes.extend(scim.router.routes)
        console.install(app, settings, database)  # the web console at /, with its static files
    install_docs(app, page=not api_only)  # the bearer scheme in the OpenAPI document (+ page)
    install_error_handlers(app, scim=not api_only)
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.evidence_max_bytes,
        metrics=HttpMetrics(registry),
    )
    unguarded = [route for route in api_routes(app) if route_guard(route) is None]
    if unguarded:
        names = ", ".join(f"{sorted(r.methods or ())} {r.path}" for r in unguarded)
        raise RuntimeError(f"routes without a declared permission (deny by default): {names}")
    document_errors(app, route_guard)
    return app
