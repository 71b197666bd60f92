"""Mounting the console on the app: its routes, its static files, its state."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from grantflow.config import Settings, master_key
from grantflow.console.keys import ConsoleKeys
from grantflow.console.routes import (
    account,
    action_links,
    audit,
    connections,
    controls,
    grants,
    home,
    identities,
    identity_imports,
    inbox,
    incidents,
    jobs,
    links,
    reviews,
    runs,
    safety,
    signin,
    sso,
    users,
    versions,
    workflows,
)
from grantflow.console.state import ConsoleState
from grantflow.console.templating import make_templates
from grantflow.store.database import Database

STATIC = Path(__file__).parent / "static"
STATIC_PATH = "/static"

# each module's router is `APIRouter(include_in_schema=False)`: pages are not API operations
AREAS = (
    home,
    signin,
    links,
    sso,
    account,
    # operators and approvers
    inbox,
    action_links,
    runs,
    safety,
    # administration
    workflows,
    versions,
    identities,
    identity_imports,
    grants,
    connections,
    jobs,
    reviews,
    controls,
    incidents,
    audit,
    users,
)


def install(app: FastAPI, settings: Settings, database: Database) -> None:
    """Add the console's routes (each keeps its guard, checked by `create_app`), mount the
    static files, and keep the console's state on `app.state.console`."""
    app.state.console = ConsoleState(
        settings=settings,
        database=database,
        keys=ConsoleKeys.derive(master_key(settings)),
        templates=make_templates(),
    )
    # route by route, as the API's (include_router would hide them from the guard check)
    for module in AREAS:
        app.router.routes.extend(module.router.routes)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="static")
