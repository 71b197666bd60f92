"""One module per area of the console, each with `router = APIRouter(include_in_schema=False)`
and listed in `grantflow.console.app.AREAS`.

How a page is written (see `account.py`):
- every route depends on exactly one guard: `actor: Actor = Depends(Page(Permission.X))` — the
  same permission the API route for the same thing declares — or `PublicPage()`;
  `create_app` refuses a route without one. On POST the guard also checks the CSRF token.
- GET: `render(request, "area/page.html", {...})`; templates extend `base.html` (blocks title,
  breadcrumbs, buttons, content), put every POST form's `{{ csrf_field() }}` in it, and show a
  button only `{% if can("run:operate") %}`; htmx fragments live in `templates/htmx/`.
- POST: call the service function the API route calls, with `actor`, inside
  `console_state(request).database.transaction()`; then `redirect(request, url, message=...)`.
  A `GrantflowError` may be left to propagate (an error page in words) or caught and shown on
  the form with `partials/error_box.html` (`error` in the context).
- Add the area's entry to `grantflow.console.nav.NAV` if it is not there yet.
"""
