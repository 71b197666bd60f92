"""The docs site: generated reference pages match the code, and the site builds offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "docs_reference.py"


def _generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )


def test_reference_pages_match_the_code() -> None:
    """docs/reference is what the code says (run `scripts/docs_reference.py --write` after
    changing a setting, step type, command, route, error code or metric)."""
    result = _generator("--check")
    assert result.returncode == 0, result.stderr


def test_a_stale_reference_page_is_named(tmp_path: Path) -> None:
    """The check fails on a page that differs from the code, naming it."""
    copy = tmp_path / "reference"
    shutil.copytree(ROOT / "docs" / "reference", copy)
    page = copy / "configuration.md"
    page.write_text(page.read_text().replace("GRANTFLOW_DATABASE_URL", "GRANTFLOW_DB"))
    (copy / "cli.md").unlink()
    result = _generator("--check", "--out", str(copy))
    assert result.returncode == 1
    assert "configuration.md" in result.stderr
    assert "cli.md" in result.stderr
    assert "steps.md" not in result.stderr


def test_the_site_builds_strict_and_fetches_nothing(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds (no broken link, no page left out of the nav), and no
    page loads a script, style sheet or font from another host (the site works offline)."""
    site = tmp_path / "site"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(site)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    pages = list(site.rglob("*.html"))
    assert len(pages) > 10
    remote = re.compile(r"""(?:src|href)=["']https?://[^"']+\.(?:js|css|woff2?)["']""")
    offenders = {str(p.relative_to(site)) for p in pages if remote.search(p.read_text())}
    assert not offenders
    assert "fonts.googleapis" not in "".join(p.read_text() for p in pages)
