"""The web console: server-rendered pages (Jinja2 with autoescape, htmx for partial updates),
served by Grantflow itself at `/` beside the API, with every static asset vendored in
`static/` (no CDN, no build step).

- `guard.py`: `Page(permission)` / `PublicPage()` — the session cookie, CSRF, permissions;
- `templating.py`: `render`, `redirect`, and what every template gets (`can`, `csrf_field`);
- `errors.py`: errors as pages in words; `cookies.py`, `keys.py`: cookies and their keys;
- `views.py`: what area modules share (perform an action in one transaction, its refusal in
  words; filters, pages, form values); `tables.py`: tables defined once, with per-row actions;
  `yaml_view.py`: a workflow document as highlighted YAML with the gate's problems on its lines;
- `routes/`: one module per area, thin callers of the same service functions as the API.

May import `grantflow.auth`, `grantflow.audit`, the service packages (`engine`, `people`,
`access`, `connections`, `definitions`, `schedules`, `governance`), `grantflow.api.security`
(the `Guard` base) and `grantflow.api.state`; never the API's route modules. Only
`grantflow.api.app` imports this package (to mount it), and `grantflow.api.errors` (to render
errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from grantflow.config import Settings
    from grantflow.store.database import Database

__all__ = ["install"]


def install(app: FastAPI, settings: Settings, database: Database) -> None:
    """Mount the console on `app`. Its pages are imported here, not with the package, so the
    error pages (`console.errors`) do not bring in every page."""
    from grantflow.console.app import install as mount

    mount(app, settings, database)
