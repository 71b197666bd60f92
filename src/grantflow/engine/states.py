"""Run and step-run statuses, and the one table of allowed transitions."""

from __future__ import annotations

import enum

from grantflow.errors import Conflict


class RunStatus(enum.StrEnum):
    QUEUED = "queued"  # created, waiting for a worker
    RUNNING = "running"  # a worker holds it and is advancing it
    WAITING = "waiting"  # parked on a timer or a person (see waiting_reason); holds no worker
    PAUSED = "paused"  # stopped at a step boundary by an operator or a safety breaker
    SUCCEEDED = "succeeded"  # every step on its path finished
    FAILED = "failed"  # a step failed and the run stopped (see failure)
    CANCELLED = "cancelled"  # stopped by an operator
    TIMED_OUT = "timed_out"  # the execution timeout passed

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)


class WaitingReason(enum.StrEnum):
    DELAY = "delay"  # a delay step's durable timer
    RETRY = "retry"  # a step's retry backoff
    ESCALATED = "escalated"  # a step exhausted its retries and waits for a person
    APPROVAL = "approval"  # an approval step waits for approvers
    TASK = "task"  # a human task waits for its assignee
    REAUTH = "reauth"  # a connection needs to be reauthorised
    # held (status queued) while its workflow is paused for safety: the workflow's resume
    # releases it
    SAFETY = "safety"
    # a spend cap is reached: waits for the period to roll over or the cap to be raised
    SPEND_CAP = "spend_cap"


class StepStatus(enum.StrEnum):
    PENDING = "pending"  # recorded, not yet started
    RUNNING = "running"  # an attempt is in flight
    WAITING = "waiting"  # waiting on a timer or a person
    RETRYING = "retrying"  # an attempt failed transiently; the next one is scheduled
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # skipped by a person (escalation) or by on_failure: continue
    CANCELLED = "cancelled"


_RUN: dict[RunStatus, set[RunStatus]] = {
    RunStatus.QUEUED: {
        RunStatus.RUNNING,
        RunStatus.CANCELLED,
        RunStatus.PAUSED,
        RunStatus.TIMED_OUT,
        RunStatus.FAILED,
    },
    RunStatus.RUNNING: {
        RunStatus.QUEUED,
        RunStatus.WAITING,
        RunStatus.PAUSED,
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.TIMED_OUT,
    },
    RunStatus.WAITING: {
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.PAUSED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.TIMED_OUT,
        RunStatus.SUCCEEDED,
    },
    RunStatus.PAUSED: {
        RunStatus.QUEUED,
        RunStatus.WAITING,
        RunStatus.CANCELLED,
        RunStatus.TIMED_OUT,
        RunStatus.FAILED,
    },
    # Retry resumes a failed or timed-out run in place.
    RunStatus.FAILED: {RunStatus.QUEUED},
    RunStatus.TIMED_OUT: {RunStatus.QUEUED},
    RunStatus.SUCCEEDED: set(),
    RunStatus.CANCELLED: set(),
}

_STEP: dict[StepStatus, set[StepStatus]] = {
    StepStatus.PENDING: {StepStatus.RUNNING, StepStatus.CANCELLED, StepStatus.SKIPPED},
    StepStatus.RUNNING: {
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.RETRYING,
        StepStatus.WAITING,
        StepStatus.CANCELLED,
        StepStatus.RUNNING,
        StepStatus.SKIPPED,
    },
    StepStatus.RETRYING: {StepStatus.RUNNING, StepStatus.CANCELLED, StepStatus.FAILED},
    StepStatus.WAITING: {
        StepStatus.RUNNING,
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.CANCELLED,
    },
    StepStatus.FAILED: {StepStatus.RUNNING, StepStatus.SKIPPED},  # retry / skip after failure
    StepStatus.SUCCEEDED: set(),
    StepStatus.SKIPPED: set(),
    StepStatus.CANCELLED: set(),
}


class InvalidTransition(Conflict):
    code = "invalid_transition"


def check_run_transition(current: str, new: RunStatus) -> None:
    if new not in _RUN[RunStatus(current)]:
        raise InvalidTransition(f"a {current} run cannot become {new}")


def check_step_transition(current: str, new: StepStatus) -> None:
    if new not in _STEP[StepStatus(current)]:
        raise InvalidTransition(f"a {current} step cannot become {new}")


# A run waiting for one of these is resumed by a person's action, not by a timer.
PERSON_WAITS = frozenset(
    {WaitingReason.ESCALATED, WaitingReason.APPROVAL, WaitingReason.TASK, WaitingReason.REAUTH}
)
