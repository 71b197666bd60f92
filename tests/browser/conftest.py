"""Browser fixtures: Debian's Chromium (Playwright), a served Grantflow on 127.0.0.1, and
pages signed in through the login form. Every test here is marked `browser`; each browser
context is watched (tests/support/browser.py): a console error or a request leaving 127.0.0.1
fails the test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from grantflow.api import create_app
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.conftest import BACKENDS
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DEADLINE_MS, PageWatch, sign_in
from tests.support.server import serve_in_thread
from tests.support.services import free_port, service_missing

PASSWORD = "correct horse battery staple"
expect.set_options(timeout=DEADLINE_MS)  # assertions wait for states, generously


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test here `browser`, and run each on one database: the first of
    GRANTFLOW_TEST_DATABASES (SQLite by default). What the console does on each database is
    tested over HTTP in tests/integration on both; here it is the browser's side, and a second
    Chromium pass on the other database doubled the suite's browser time for nothing."""
    here = os.path.dirname(__file__)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if not str(item.fspath).startswith(here):
            kept.append(item)
            continue
        item.add_marker(pytest.mark.browser)
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database") if callspec else None
        (dropped if backend not in (None, BACKENDS[0]) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def _playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def chromium(_playwright: Playwright) -> Iterator[Browser]:
    """Chromium at /usr/bin/chromium (`make test` installs it); missing: skipped locally,
    a failure with CI=true."""
    if not os.access(CHROMIUM, os.X_OK):
        service_missing("Chromium", f"{CHROMIUM} is not installed (apt-get install chromium)")
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Console:
    """The served Grantflow: its URL, database and settings, and a way to make users."""

    url: str
    database: Database
    settings: Settings

    def user(
        self, role: Role | str | None, email: str | None = None, password: str | None = PASSWORD
    ) -> str:
        """Create a user with this role (None: no role) and password; returns the e-mail."""
        email = email or f"{role or 'norole'}@example.com"
        with self.database.transaction() as session:
            create_user(
                session,
                Actor.system("test"),
                email=email,
                roles=[Role(role)] if role else [],
                password=password,
            )
        return email


@pytest.fixture
def console_overrides() -> dict[str, Any]:
    """Settings a test module changes for its server (override this fixture)."""
    return {}


@pytest.fixture
def console(
    settings: Settings, database: Database, console_overrides: dict[str, Any]
) -> Iterator[Console]:
    """Grantflow (API and console) served on a free port of 127.0.0.1, its public URL set."""
    port = free_port()
    served = Settings(
        **{**settings.model_dump(), "public_url": f"http://127.0.0.1:{port}", **console_overrides}
    )
    app = create_app(served, database)
    try:
        with serve_in_thread(app, port=port) as url:
            yield Console(url=url, database=database, settings=served)
    finally:  # Test connection leaves keep-alive sockets to the tests' servers in its client
        app.state.grantflow.connections.http.close()


@pytest.fixture
def page_watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def new_context(
    chromium: Browser, console: Console, page_watch: PageWatch
) -> Iterator[Callable[[], BrowserContext]]:
    """Make a fresh browser context (its own cookies) on the console; each is watched and
    closed at the end, and any console error or request leaving 127.0.0.1 fails the test."""
    made: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = chromium.new_context(base_url=console.url)
        context.set_default_timeout(DEADLINE_MS)
        page_watch.attach(context)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()
    assert not page_watch.problems(), page_watch.problems()


@pytest.fixture
def page(new_context: Callable[[], BrowserContext]) -> Page:
    """A page of a fresh browser context, not signed in."""
    return new_context().new_page()


@pytest.fixture
def signed_in_page(
    console: Console, new_context: Callable[[], BrowserContext]
) -> Callable[..., Page]:
    """`signed_in_page(role, email=None)`: a user with that role and a password, signed in
    through the login form in a browser context of its own."""

    def make(role: Role | str | None, email: str | None = None) -> Page:
        email = console.user(role, email)
        page = new_context().new_page()
        sign_in(page, console.url, email, PASSWORD)
        return page

    return make
