"""The engine's pure rules: the run and step state machine, backoff, failure classification."""

from __future__ import annotations

import datetime as dt
import email.utils
import random

import pytest

from grantflow.definitions.document import Jitter, RetryPolicy
from grantflow.engine import failures
from grantflow.engine.retry import backoff_seconds
from grantflow.engine.states import (
    TERMINAL,
    InvalidTransition,
    RunStatus,
    StepStatus,
    check_run_transition,
    check_step_transition,
)
from grantflow.errors import PermanentError, StepTimeout, TransientError
from grantflow.steps.transport import retry_after_seconds


def policy(**fields: object) -> RetryPolicy:
    return RetryPolicy.model_validate({"max_attempts": 5, **fields})


# --- the state machine ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (RunStatus.SUCCEEDED, RunStatus.RUNNING),
        (RunStatus.SUCCEEDED, RunStatus.QUEUED),
        (RunStatus.CANCELLED, RunStatus.QUEUED),
        (RunStatus.CANCELLED, RunStatus.RUNNING),
        (RunStatus.FAILED, RunStatus.RUNNING),
        (RunStatus.FAILED, RunStatus.SUCCEEDED),
        (RunStatus.TIMED_OUT, RunStatus.SUCCEEDED),
        (RunStatus.QUEUED, RunStatus.SUCCEEDED),
        (RunStatus.PAUSED, RunStatus.SUCCEEDED),
    ],
)
def test_run_transition_refused(current: RunStatus, new: RunStatus) -> None:
    """An impossible run transition raises InvalidTransition, a 409 naming both statuses."""
    with pytest.raises(InvalidTransition) as caught:
        check_run_transition(current, new)
    assert caught.value.http_status == 409
    assert caught.value.code == "invalid_transition"
    assert str(current) in caught.value.message
    assert str(new) in caught.value.message


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (RunStatus.FAILED, RunStatus.QUEUED),  # retry
        (RunStatus.TIMED_OUT, RunStatus.QUEUED),  # retry
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.WAITING),
        (RunStatus.WAITING, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.PAUSED),
        (RunStatus.PAUSED, RunStatus.QUEUED),  # resume
        (RunStatus.WAITING, RunStatus.CANCELLED),
        (RunStatus.RUNNING, RunStatus.TIMED_OUT),
    ],
)
def test_run_transition_allowed(current: RunStatus, new: RunStatus) -> None:
    """The transitions the engine and the run operations rely on are allowed."""
    check_run_transition(current, new)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_runs_only_leave_by_retry(terminal: RunStatus) -> None:
    """A terminal run can only go back to queued (retry), and only if it failed or timed out."""
    for new in RunStatus:
        retryable = terminal in (RunStatus.FAILED, RunStatus.TIMED_OUT) and new == RunStatus.QUEUED
        if retryable:
            check_run_transition(terminal, new)
        else:
            with pytest.raises(InvalidTransition):
                check_run_transition(terminal, new)


def test_step_transitions() -> None:
    """A succeeded or cancelled step never runs again; a retrying one may run or fail."""
    for done in (StepStatus.SUCCEEDED, StepStatus.CANCELLED, StepStatus.SKIPPED):
        with pytest.raises(InvalidTransition):
            check_step_transition(done, StepStatus.RUNNING)
    with pytest.raises(InvalidTransition):
        check_step_transition(StepStatus.PENDING, StepStatus.SUCCEEDED)
    check_step_transition(StepStatus.RETRYING, StepStatus.RUNNING)
    check_step_transition(StepStatus.RETRYING, StepStatus.FAILED)
    check_step_transition(StepStatus.FAILED, StepStatus.RUNNING)  # an operator's retry


# --- backoff -------------------------------------------------------------------------------


def test_backoff_is_exponential_then_capped() -> None:
    """Without jitter the waits double from the initial backoff up to the cap."""
    retry = policy(initial_backoff="1s", multiplier=2, max_backoff="5s", jitter="none")
    waits = [backoff_seconds(retry, n) for n in range(1, 7)]
    assert waits == [1, 2, 4, 5, 5, 5]


def test_backoff_multiplier() -> None:
    """The multiplier sets the growth: 0.5s x 3 gives 0.5, 1.5, 4.5."""
    retry = policy(initial_backoff="500ms", multiplier=3, max_backoff="1m", jitter="none")
    assert [backoff_seconds(retry, n) for n in (1, 2, 3)] == pytest.approx([0.5, 1.5, 4.5])


def test_full_jitter_stays_within_zero_and_the_cap() -> None:
    """Full jitter draws from [0, capped backoff] and actually spreads the waits."""
    retry = policy(initial_backoff="1s", multiplier=2, max_backoff="3s", jitter=Jitter.FULL)
    rng = random.Random(7)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 3.0), (8, 3.0)):
        draws = [backoff_seconds(retry, attempt, rng=rng) for _ in range(300)]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8
        assert min(draws) < cap * 0.2


def test_retry_after_is_a_floor() -> None:
    """A server's Retry-After raises a shorter backoff but never lowers a longer one."""
    retry = policy(initial_backoff="1s", multiplier=2, max_backoff="1m", jitter="none")
    assert backoff_seconds(retry, 1, retry_after=10) == 10
    assert backoff_seconds(retry, 3, retry_after=1) == 4
    jittered = policy(initial_backoff="1s", max_backoff="2s", jitter="full")
    rng = random.Random(1)
    assert all(backoff_seconds(jittered, 2, retry_after=3, rng=rng) >= 3 for _ in range(100))


def test_retry_after_header_forms() -> None:
    """Retry-After is read as seconds or as an HTTP date; garbage is ignored."""
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    parsed = retry_after_seconds(email.utils.format_datetime(later, usegmt=True))
    assert parsed is not None
    assert 25 <= parsed <= 31
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert retry_after_seconds(email.utils.format_datetime(past, usegmt=True)) == 0


# --- failure classification ----------------------------------------------------------------


def test_failure_from_transient_error() -> None:
    """A 503 is transient, keeps its status code and step, and is retryable."""
    exc = TransientError("HTTP 503 from api", status_code=503, next_action="wait")
    reason = failures.from_error(exc, "create", exhausted=False)
    assert reason["class"] == "transient"
    assert reason["status_code"] == 503
    assert reason["step_id"] == "create"
    assert reason["next_action"] == "wait"
    assert failures.retryable(exc)


def test_exhausted_transient_tells_to_retry() -> None:
    """When a transient step used all its attempts the next action says to Retry the run."""
    exc = TransientError("HTTP 503 from api", status_code=503, next_action="wait for it")
    reason = failures.from_error(exc, "create", exhausted=True)
    assert reason["next_action"].startswith("wait for it")
    assert "Retry the run" in reason["next_action"]


def test_failure_from_permanent_error() -> None:
    """A 403 is permanent, not retryable; its next action keeps the raise site's words and
    names the table's action (Retry)."""
    exc = PermanentError("HTTP 403", status_code=403, next_action="replace the credential")
    reason = failures.from_error(exc, "grant", exhausted=True)
    assert reason["class"] == "permanent"
    assert reason["code"] == "permanent_error"
    assert reason["status_code"] == 403
    assert reason["next_action"] == "replace the credential; then Retry"
    assert reason["operation"] == "run.retry"
    assert not failures.retryable(exc)


def test_failure_from_step_timeout() -> None:
    """A step timeout has class timeout and is retried like a transient fault."""
    exc = StepTimeout("api did not answer within 0.3s")
    reason = failures.from_error(exc, "slow", exhausted=False)
    assert reason["class"] == "timeout"
    assert reason["code"] == "step_timeout"
    assert "status_code" not in reason
    assert failures.retryable(exc)


def test_failure_from_unexpected_exception_is_internal() -> None:
    """An exception that is not ours is an internal fault, never retried."""
    exc = KeyError("boom")
    reason = failures.from_error(exc, "x", exhausted=False)
    assert reason["class"] == "internal"
    assert reason["code"] == "internal_error"
    assert "KeyError" in reason["message"]
    assert reason["next_action"]
    assert not failures.retryable(exc)
