"""Jobs and incidents in the console (Chromium): Run now records an occurrence on the job's
page; evidence uploaded on an incident (a multipart form) downloads byte for byte, a refused
upload says why, and the evidence lets the incident be resolved."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.access.models import Incident
from grantflow.schedules.models import Occurrence
from tests.browser.conftest import Console
from tests.support.admin_objects import seed
from tests.support.browser import screenshot

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(300)


def test_run_now_creates_an_occurrence(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """The job page says its schedule in words with the next times in its own time zone;
    Run now adds an occurrence marked Run now, by the operator, with its outcome."""
    seeded = seed(console.database, console.settings)
    page = signed_in_page("operator")
    page.goto("/jobs")
    page.get_by_role("link", name="Nightly controls").click()
    expect(page.locator(".facts")).to_contain_text("Europe/Berlin")
    expect(page.locator("ol.upcoming li")).to_have_count(5)
    expect(page.locator("ol.upcoming li").first).to_contain_text(" 02:30+0")  # CET or CEST
    occurrences = page.locator("#occurrences tbody tr")
    expect(occurrences).to_have_text(["No occurrences yet."])
    page.get_by_role("button", name="Run now").click()
    expect(page.locator(".flash-success")).to_contain_text("Run now")
    expect(occurrences).to_have_count(1)
    expect(occurrences.first).to_contain_text("Run now")
    expect(occurrences.first).to_contain_text("operator@example.com")
    screenshot(page, "job")
    with console.database.transaction() as session:
        found = session.execute(
            select(Occurrence).where(Occurrence.job_id == seeded.job_id)
        ).scalar_one()
        assert (found.manual, found.created_by) == (True, "operator@example.com")


def test_evidence_upload_and_download_round_trip(
    console: Console, signed_in_page: Callable[..., Page], tmp_path: Path
) -> None:
    """On an open incident an operator uploads a PNG with a note: it is listed with its
    SHA-256, downloads byte for byte, and the incident can then be resolved; a file whose
    bytes are not what it claims is refused in words and nothing is kept."""
    seeded = seed(console.database, console.settings)
    page = signed_in_page("operator")
    page.goto("/incidents")
    page.get_by_role("link", name="revoking").first.click()
    expect(page.locator(".banner.bad")).to_contain_text("Revoke")
    form = page.locator("form", has_text="Attach evidence")

    form.get_by_label("File").set_input_files(
        files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"MZ not a picture"}]
    )
    form.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash-error")).to_contain_text("the content is not image/png")
    expect(page.locator("table.evidence tbody tr")).to_have_text(["No evidence yet."])

    form.get_by_label("File").set_input_files(
        files=[{"name": "proof.png", "mimeType": "image/png", "buffer": PNG}]
    )
    form.get_by_label("Note").fill("ticket IT-4711: account removed by hand")
    form.get_by_role("button", name="Upload").click()
    digest = hashlib.sha256(PNG).hexdigest()
    expect(page.locator(".flash-success")).to_contain_text(digest)
    row = page.locator("table.evidence tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("ticket IT-4711")
    expect(row.locator("code.hash")).to_have_text(digest)
    with page.expect_download() as download:
        row.get_by_role("link", name="proof.png").click()
    saved = tmp_path / "downloaded.png"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "proof.png"
    assert saved.read_bytes() == PNG

    large = PNG + bytes(1536 * 1024)  # larger than a request body, within an evidence file's
    form.get_by_label("File").set_input_files(
        files=[{"name": "large.png", "mimeType": "image/png", "buffer": large}]
    )
    form.get_by_role("button", name="Upload").click()
    expect(page.locator(".flash-success")).to_contain_text(hashlib.sha256(large).hexdigest())
    expect(row).to_have_count(2)

    page.get_by_role("button", name="Resolve").click()
    expect(page.locator(".flash-success")).to_have_text("The incident is resolved (evidence).")
    screenshot(page, "incident")
    with console.database.transaction() as session:
        incident = session.get(Incident, seeded.incident_id)
        assert incident is not None
        assert (incident.status, incident.resolution, incident.resolved_by) == (
            "resolved",
            "evidence",
            "operator@example.com",
        )
