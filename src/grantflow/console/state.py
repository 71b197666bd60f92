"""What the console keeps on the app: settings, its keys, the templates."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi.templating import Jinja2Templates
from starlette.requests import Request

from grantflow.config import Settings
from grantflow.console.keys import ConsoleKeys
from grantflow.store.database import Database


@dataclass
class ConsoleState:
    settings: Settings
    database: Database
    keys: ConsoleKeys
    templates: Jinja2Templates
    page_paths: set[str] = field(default_factory=set)  # GET routes of the console (the nav)


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state
