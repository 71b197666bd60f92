"""The advice table itself: consistent words and operations, every code the engine and the steps
raise covered, context-dependent choices, and the one page that documents it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grantflow import advice
from grantflow.advice.markdown import markdown

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "grantflow"
# where failures of runs and steps are raised (API refusals elsewhere are not run failures)
RAISE_SITES = [
    *sorted((SRC / "steps").rglob("*.py")),
    SRC / "connections" / "access.py",
    SRC / "connections" / "outbound.py",
    SRC / "connections" / "oauth.py",
    SRC / "connections" / "limits.py",
    SRC / "people" / "human_tasks.py",
    SRC / "definitions" / "plan.py",
    SRC / "engine" / "plans.py",
    SRC / "errors.py",
    SRC / "definitions" / "expressions.py",
]
ENGINE_CODES = {"loop_bound_exceeded", "execution_timeout", "cancelled", "failed_by_person"}
NOT_RUN_FAILURES = {
    # API errors and refusals that never end up on a run or step
    "error", "validation_error", "bad_request", "payload_too_large", "unsupported_media_type",
    "conflict", "unauthenticated", "service_unavailable",
}  # fmt: skip


def _raised_codes() -> set[str]:
    codes: set[str] = set()
    for path in RAISE_SITES:
        text = path.read_text()
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', text))
        codes |= set(re.findall(r'^\s+code = "([a-z_]+)"', text, re.MULTILINE))
    return codes


def test_every_code_a_run_or_step_can_carry_is_in_the_table() -> None:
    """A failure code raised by a step, a connection, a person's task or the engine has an entry
    (so its words and action come from the table, not from nowhere)."""
    codes = (_raised_codes() | ENGINE_CODES) - NOT_RUN_FAILURES
    assert sorted(c for c in codes if c not in advice.TABLE) == []


def test_the_table_is_consistent() -> None:
    """Every operation exists and its label appears in the entry's words (button = words)."""
    assert advice.check_table() == []


def test_every_waiting_reason_has_advice() -> None:
    """approval, task, escalated, reauth, retry and delay waits, and an operator's pause."""
    from grantflow.engine.states import WaitingReason

    for reason in WaitingReason:
        assert f"waiting.{reason}" in advice.TABLE
    assert advice.TABLE["paused.operator"].operation == "run.resume"


@pytest.mark.parametrize(
    ("status", "acted", "grant", "expected", "operation"),
    [
        (404, (), None, "http_404", "run.replay_latest"),
        (404, ("create",), "g-1", "http_404/after_irreversible", "run.retry"),
        (400, (), None, "http_4xx", "run.replay_latest"),
        (422, ("create",), "g-1", "replay_refused", "grant.dispatch"),
        (422, ("create",), None, "replay_refused/no_grant", None),
        (409, ("create",), None, "http_409", "run.retry"),
    ],
)
def test_which_action_works_is_decided_by_the_situation(
    status: int, acted: tuple[str, ...], grant: str | None, expected: str, operation: str | None
) -> None:
    """After a non-reversible step acted, Replay with latest is never offered (it is refused)."""
    situation = advice.Situation(irreversible_done=acted, grant_id=grant)
    advised = advice.advise("permanent_error", status_code=status, situation=situation)
    assert (advised["advice"], advised["operation"]) == (expected, operation)


def test_an_action_is_rendered_for_one_object_or_not_at_all() -> None:
    """The concrete action names the object's ids; without them there is no action."""
    action = advice.render("run.replay_latest", run_id="r-1")
    assert action == {
        "operation": "run.replay_latest",
        "label": "Replay with latest",
        "method": "POST",
        "path": "/api/v1/runs/r-1/replay?latest=true",
        "cli": "grantflow runs replay r-1 --latest",
        "permission": "run:operate",
    }
    assert advice.render("grant.dispatch", grant_id=None) is None
    assert advice.render(None) is None
    credential = advice.render("connection.set_credential", connection_id="c-1")
    assert credential is not None
    # by the connection's id alone, so the command renders wherever the connection is known
    assert credential["cli"] == "grantflow connections replace-credential c-1 --from-file FILE"
    assert credential["needs"]


def test_the_table_is_documented_in_one_place() -> None:
    """The generated reference page carries the table (its freshness is checked with the other
    reference pages); no hand-written page or the README keeps a copy that could go stale."""
    assert markdown() in (ROOT / "docs" / "reference" / "errors.md").read_text()
    first_row = markdown().splitlines()[2]  # (the `run.retry` operation's row)
    written = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    copies = [
        str(p.relative_to(ROOT))
        for p in written
        if "reference" not in p.parts and first_row in p.read_text()
    ]
    assert copies == []
