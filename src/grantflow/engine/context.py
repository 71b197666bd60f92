"""The template context of a run: input, subject snapshots, and earlier steps' outputs."""

from __future__ import annotations

import json
from typing import Any

from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import StepStatus


def step_entry(step_run: StepRun) -> dict[str, Any]:
    return {"output": step_run.output, "status": step_run.status, "error": step_run.error}


def json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


class StepEntries(dict[str, Any]):
    """The context's `steps`, counting the JSON size of each output as it is added, so
    rendering holds the run context to its limit without measuring it at every step."""

    def __init__(self, base_bytes: int = 0) -> None:
        super().__init__()
        self.base_bytes = base_bytes  # input and subject
        self._sizes: dict[str, int] = {}

    @property
    def total_bytes(self) -> int:
        return self.base_bytes + sum(self._sizes.values())

    def __setitem__(self, step_id: str, entry: Any) -> None:
        output = entry.get("output") if isinstance(entry, dict) else entry
        self._sizes[step_id] = json_bytes(output) if output is not None else 0
        super().__setitem__(step_id, entry)


def build_context(run: Run, step_runs: list[StepRun]) -> dict[str, Any]:
    steps = StepEntries(json_bytes(run.input or {}) + json_bytes(run.subject or {}))
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
