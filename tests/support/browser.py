"""Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright for Python (never
`playwright install`, whose download site is not reachable), and a watch on every page of a
browser context: console errors and requests leaving 127.0.0.1 fail the test."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request

CHROMIUM = os.environ.get("GRANTFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1"}
LOCAL_SCHEMES = {"data", "blob", "about"}
DEADLINE_MS = 60_000  # generous: a loaded machine answers late, not wrongly


@dataclass
class PageWatch:
    """What the pages of one browser context did wrong: console errors, uncaught exceptions,
    requests to anywhere but 127.0.0.1. `allow` names console errors a test expects (e.g. the
    browser's 'status of 403' line for a page that must answer 403)."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("console", self._on_console)
        context.on("request", self._on_request)
        context.on("weberror", lambda error: self.errors.append(f"uncaught: {error.error}"))

    def allow(self, fragment: str) -> None:
        self.allowed.append(fragment)

    def _on_console(self, message: ConsoleMessage) -> None:
        csp = message.type == "warning" and "Content Security Policy" in message.text
        if message.type in ("error", "assert") or csp:
            self.errors.append(message.text)

    def _on_request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme not in LOCAL_SCHEMES and url.hostname not in LOCAL_HOSTS:
            self.foreign.append(request.url)

    def problems(self) -> list[str]:
        errors = [e for e in self.errors if not any(a in e for a in self.allowed)]
        return [f"console: {e}" for e in errors] + [f"left 127.0.0.1: {u}" for u in self.foreign]


def sign_in(page: Page, base_url: str, email: str, password: str, next_path: str = "/") -> None:
    """Sign in through the login form, as a person would; wait until the next page shows."""
    target = "/login" if next_path == "/" else f"/login?next={next_path}"
    page.goto(base_url + target)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(lambda url: urlsplit(url).path == next_path.split("?")[0])


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot(page: Page, name: str) -> Path:
    """Keep a picture of the page for the documentation (docs/screenshots/<name>.png); taken
    by the tests that show the page, never compared: pixels may differ from run to run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
