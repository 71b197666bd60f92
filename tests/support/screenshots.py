"""Screenshots of the console's main pages, kept under docs/screenshots/ by the browser tests
that open them (deterministic names; `make test` overwrites them; never compared)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}


def keep(page: Page, name: str) -> Path:
    """Save the whole page as docs/screenshots/<name>.png (written atomically: the same test
    may run on both databases at once)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.set_viewport_size(VIEWPORT)
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=SCREENSHOTS)
    os.close(handle)
    page.screenshot(path=temporary, full_page=True, animations="disabled")
    os.chmod(temporary, 0o644)  # (mkstemp makes it private)
    os.replace(temporary, target)
    return target
