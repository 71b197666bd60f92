"""Engine metrics, in one registry shared by the worker and the API of a process."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

STEP_DURATION = Histogram(
    "grantflow_step_duration_seconds",
    "Duration of one step attempt",
    ["type", "outcome"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STEP_OUTCOMES = Counter(
    "grantflow_step_outcomes",
    "Step attempts by outcome and failure class",
    ["type", "outcome", "failure_class"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "grantflow_run_duration_seconds",
    "Time from run creation to its end",
    ["status"],
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)


@functools.lru_cache(maxsize=256)
def step_succeeded(step_type: str) -> tuple[Histogram, Counter]:
    """The duration and outcome series a success of a step of `step_type` adds to: looked up
    once (`labels` checks and joins its values at every call: about 4 % of a worker's Python
    time on its hot path)."""
    return (
        STEP_DURATION.labels(step_type, "succeeded"),
        STEP_OUTCOMES.labels(step_type, "succeeded", ""),
    )
