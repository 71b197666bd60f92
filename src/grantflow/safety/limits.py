"""Abuse limits: each one named, with its value and the setting that raises it, in every error
it causes (class `safety`, code `limit_exceeded`). Limits on templates live with the sandbox
(definitions/sandbox.py: `template_limit_exceeded`), request and document sizes with the API;
here: executed steps per run, the size of a response read from a target, concurrent runs of
one workflow, and the batches one event's runs are started in (fan-out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grantflow.errors import SafetyStop


class LimitExceeded(SafetyStop):
    """A run or a step went over an abuse limit: never retried (the same work would go over
    again); the message names the limit, its value and the setting that raises it."""

    code = "limit_exceeded"

    def __init__(self, what: str, limit: str, value: int, setting: str, **kwargs: Any) -> None:
        super().__init__(
            f"{what}: over the {limit.replace('_', ' ')} limit of {value:,} (setting {setting})",
            next_action=kwargs.pop("next_action", None)
            or f"do less in one run (fix the workflow and Replay with latest), or raise {setting}",
            limit=limit,
            limit_value=value,
            setting=setting,
            **kwargs,
        )


@dataclass(frozen=True)
class Limits:
    max_steps_per_run: int = 10_000
    response_max_bytes: int = 1024 * 1024
    max_concurrent_runs_per_workflow: int = 1000
    fanout_batch: int = 100
    fanout_interval_seconds: float = 1.0


_limits = Limits()


def configure(settings: Any) -> None:
    global _limits
    _limits = Limits(
        max_steps_per_run=settings.max_steps_per_run,
        response_max_bytes=settings.response_max_bytes,
        max_concurrent_runs_per_workflow=settings.max_concurrent_runs_per_workflow,
        fanout_batch=settings.fanout_batch,
        fanout_interval_seconds=settings.fanout_interval_seconds,
    )


def limits() -> Limits:
    return _limits


def check_steps_per_run(sequence: int, step_id: str) -> None:
    """The run's `sequence`th step (loop passes included) may start, or LimitExceeded."""
    limit = _limits.max_steps_per_run
    if sequence > limit:
        raise LimitExceeded(
            f"step {step_id!r} would be the run's {sequence:,}th executed step",
            "steps_per_run",
            limit,
            "GRANTFLOW_MAX_STEPS_PER_RUN",
        )


def response_too_large(host: str, status: int) -> LimitExceeded:
    limit = _limits.response_max_bytes
    return LimitExceeded(
        f"the response from {host} is larger than {limit} bytes",
        "response_size",
        limit,
        "GRANTFLOW_RESPONSE_MAX_BYTES",
        next_action="ask the target for less (filters, paging), or raise "
        "GRANTFLOW_RESPONSE_MAX_BYTES",
        status_code=status,
    )
