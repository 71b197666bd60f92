"""The template context of a run: input, subject snapshots, and earlier steps' outputs."""

from __future__ import annotations

from typing import Any

from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import StepStatus


def step_entry(step_run: StepRun) -> dict[str, Any]:
    return {"output": step_run.output, "status": step_run.status, "error": step_run.error}


def build_context(run: Run, step_runs: list[StepRun]) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for step_run in step_runs:  # in sequence order: a later iteration replaces an earlier one
        if step_run.status in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED):
            steps[step_run.step_id] = step_entry(step_run)
    subject = run.subject or {}
    return {
        "input": run.input or {},
        "identity": subject.get("identity", {}),
        "grant": subject.get("grant", {}),
        "application": subject.get("application", {}),
        "steps": steps,
        "run": {
            "id": run.id,
            "workflow_id": run.workflow_id,
            "version": run.version,
            "trigger": run.trigger,
        },
    }
