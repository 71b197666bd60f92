"""`grantflow reviews show` says when a closed campaign's revocations are still going on."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.cli.reviews import _print_review


def view(status: str, revocations_pending: int) -> dict[str, Any]:
    progress = {
        "total": 120, "decided": 120, "keep": 0, "revoke": 120, "pending": 0, "defaulted": 120,
        "fallback": 0, "unassigned": 0, "percent": 100.0,
        "revocations_pending": revocations_pending,
    }  # fmt: skip
    return {
        "id": "r1", "name": "Q3", "status": status, "starts_at": "2026-12-01T10:00:00Z",
        "ends_at": "2026-12-07T10:00:00Z", "default_decision": "revoke",
        "require_justification_for_keep": False, "closed_at": "2026-12-07T10:00:00Z",
        "closed_by": "admin@example.com", "progress": progress,
    }  # fmt: skip


def test_a_closing_campaign_shows_the_grants_left_to_revoke(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_review(view("closing", 70))
    shown = capsys.readouterr().out
    assert "closing" in shown.splitlines()[0]
    assert "the workers are revoking 70 grant(s) that defaulted to revoke" in shown


def test_a_closed_campaign_shows_no_revocations_left(capsys: pytest.CaptureFixture[str]) -> None:
    _print_review(view("closed", 0))
    assert "revoking" not in capsys.readouterr().out


def test_a_failed_batch_shows_why_and_when_the_workers_try_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = view("closing", 70)
    shown["revocations_error"] = "RuntimeError: connection to the directory lost"
    shown["revocations_retry_at"] = "2026-12-07T10:05:00Z"
    _print_review(shown)
    assert (
        "  revoking failed: RuntimeError: connection to the directory lost (the workers try "
        "again at "
        "2026-12-07 10:05Z)"
    ) in capsys.readouterr().out.splitlines()
